#!/usr/bin/env node
// A Node `ws` client against roomcast's guards: node guard_client.js WS_URL TOKEN
// (TOKEN is alice's, for `lobby` only; the server has auth.jwt_secret set and no
// server.allowed_origins). Prints "all scenarios passed" on success.
'use strict';
const WebSocket = require('ws');

const [url, token] = process.argv.slice(2);

function open(options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

function request(ws, req) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(req)}`)), 10000);
    const onMessage = (data) => {
      const m = JSON.parse(data.toString());
      if (m.ref === req.ref) {
        clearTimeout(timer);
        ws.off('message', onMessage);
        resolve(m);
      }
    };
    ws.on('message', onMessage);
    ws.send(JSON.stringify(req));
  });
}

function closed(ws) {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve([code, reason.toString()])));
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

(async () => {
  // No token: unauthorized, then 4001.
  let ws = await open();
  const end = closed(ws);
  let r = await request(ws, { type: 'hello', client: 'alice', ref: 1 });
  assert(r.type === 'error' && r.code === 'unauthorized', JSON.stringify(r));
  const [code] = await end;
  assert(code === 4001, `close code ${code}`);

  // A token: the room it lists, not another.
  ws = await open();
  r = await request(ws, { type: 'hello', token, ref: 1 });
  assert(r.type === 'welcome' && r.client === 'alice', JSON.stringify(r));
  r = await request(ws, { type: 'join', room: 'lobby', ref: 2 });
  assert(r.type === 'joined', JSON.stringify(r));
  r = await request(ws, { type: 'join', room: 'elsewhere', ref: 3 });
  assert(r.type === 'error' && r.code === 'forbidden' && r.ref === 3, JSON.stringify(r));
  ws.close();

  // A page of another origin: 403 at the handshake.
  let refused = null;
  try {
    await open({ origin: 'https://evil.example' });
  } catch (e) {
    refused = e.message;
  }
  assert(refused === 'status 403', `another origin: ${refused}`);
  console.log('all scenarios passed');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

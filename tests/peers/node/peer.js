#!/usr/bin/env node
// A Node `ws` peer for roomcast's interop tests.
//
//   node peer.js client WS_URL [deflate]   run every scenario against a server that
//                                          follows the script
//   node peer.js server [deflate]          serve the script on a free port; print
//                                          "PORT n" first
//
// With `deflate`, permessage-deflate is offered or taken (every message compressed, none
// below a threshold), and a client checks that it was agreed.
//
// The script (see crates/roomcast-ws/tests/common/mod.rs): messages come back unchanged,
// except the commands cmd:close:CODE:REASON, cmd:fragments:N:TEXT and cmd:ping:PAYLOAD.
'use strict';
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const BIG = 16 * 1024 * 1024;
const deflate = process.argv.includes('deflate');
const options = {
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: deflate ? { threshold: 0 } : false,
};

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function next(ws, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within 30 s`)), 30000);
    ws.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

async function expect(ws, sent, want = sent) {
  const reply = next(ws, 'message');
  ws.send(sent);
  const [data, isBinary] = await reply;
  if (typeof want === 'string') {
    assert.equal(isBinary, false, 'expected text');
    assert.ok(data.toString('utf8') === want, `text differs: ${data.toString('utf8').slice(0, 60)}`);
  } else {
    assert.equal(isBinary, true, 'expected binary');
    assert.ok(Buffer.compare(data, want) === 0, 'binary differs');
  }
}

async function client(url) {
  let ws = await open(url);
  if (deflate) assert.match(ws.extensions, /permessage-deflate/, `not agreed: ${ws.extensions}`);
  await expect(ws, 'hello');
  await expect(ws, 'κόσμε €𝄞');
  await expect(ws, Buffer.from([...Array(256).keys()]));
  await expect(ws, '');
  await expect(ws, Buffer.alloc(0));
  await expect(ws, pattern(BIG));
  await expect(ws, 'a€'.repeat(BIG / 4));

  // one message in three fragments
  const reply = next(ws, 'message');
  ws.send('frag', { fin: false });
  ws.send('men', { fin: false });
  ws.send('ted κόσμε', { fin: true });
  const [data] = await reply;
  assert.equal(data.toString('utf8'), 'fragmented κόσμε');

  await expect(ws, 'cmd:fragments:5:sent in fragments: κόσμε', 'sent in fragments: κόσμε');

  const pong = next(ws, 'pong');
  ws.ping(Buffer.from('node-ping'));
  const [payload] = await pong;
  assert.equal(payload.toString(), 'node-ping');

  await expect(ws, 'cmd:ping:from-server', 'pong:from-server');

  let closed = next(ws, 'close');
  ws.close(4000, 'bye');
  let [code] = await closed;
  assert.equal(code, 4000);

  ws = await open(url);
  closed = next(ws, 'close');
  ws.send('cmd:close:4001:server says bye');
  let reason;
  [code, reason] = await closed;
  assert.equal(code, 4001);
  assert.equal(reason.toString(), 'server says bye');
  console.log(`node client${deflate ? ' (permessage-deflate)' : ''}: all scenarios passed`);
}

function server() {
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, ...options });
  wss.on('listening', () => console.log(`PORT ${wss.address().port}`));
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString('utf8');
      if (text === null || !text.startsWith('cmd:')) {
        ws.send(data, { binary: isBinary });
        return;
      }
      const [, cmd, ...rest] = text.split(':');
      const arg = rest.join(':');
      if (cmd === 'close') {
        const [code, ...reason] = arg.split(':');
        ws.close(Number(code), reason.join(':'));
      } else if (cmd === 'fragments') {
        const [n, ...parts] = arg.split(':');
        const msg = Buffer.from(parts.join(':'));
        const count = Number(n);
        const step = Math.max(1, Math.ceil(msg.length / count));
        for (let i = 0; i < count; i++) {
          // ws cuts by bytes here, inside code points too
          ws.send(msg.subarray(i * step, (i + 1) * step), { binary: false, fin: i === count - 1 });
        }
      } else if (cmd === 'ping') {
        ws.once('pong', (payload) => ws.send(`pong:${payload.toString()}`));
        ws.ping(Buffer.from(arg));
      }
    });
  });
}

if (process.argv[2] === 'server') {
  server();
} else if (process.argv[2] === 'client' && process.argv[3]) {
  client(process.argv[3]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error('usage: node peer.js client WS_URL | server');
  process.exit(2);
}

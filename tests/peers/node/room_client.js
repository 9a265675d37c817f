#!/usr/bin/env node
// A Node `ws` client of roomcast's rooms with permessage-deflate: node room_client.js WS_URL
//
// Three members (offering permessage-deflate, as `ws` does by default) and one without it
// join a room; one member publishes 200 chat-like messages; every member gets all 200, in
// order, each exactly as published; a member that drops and rejoins with `since` gets
// the ones it missed. Prints "all scenarios passed" on success.
'use strict';
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const url = process.argv[2];
const N = 200;

function chat(i) {
  return { i, user: `user-${i % 7}`, text: `message ${i} about the weather and the match, `.repeat(12) };
}

class Member {
  static open(name, deflate) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: deflate });
      ws.once('error', reject);
      ws.once('open', async () => {
        const m = new Member(ws);
        const agreed = ws.extensions.includes('permessage-deflate');
        try {
          assert.equal(agreed, deflate, `extensions: ${ws.extensions}`);
          const welcome = await m.request({ type: 'hello', client: name });
          assert.equal(welcome.type, 'welcome');
          resolve(m);
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.ref = 0;
    this.queue = [];
    this.pending = [];
    this.waiting = null;
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false);
      this.queue.push(JSON.parse(data.toString()));
      if (this.waiting) this.waiting();
    });
  }

  async recv() {
    const until = Date.now() + 10000;
    while (this.queue.length === 0) {
      assert.ok(Date.now() < until, 'nothing received within 10 s');
      await new Promise((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 100);
      });
      this.waiting = null;
    }
    return this.queue.shift();
  }

  async request(req) {
    this.ref += 1;
    const ref = this.ref;
    this.ws.send(JSON.stringify({ ...req, ref }));
    for (;;) {
      const m = await this.recv();
      if (m.ref === ref) return m;
      assert.equal(m.ref, undefined, `a reply to another request: ${JSON.stringify(m)}`);
      // A push that came before our reply: kept, in order, for `messages`.
      this.pending.push(m);
    }
  }

  async messages(n) {
    const got = this.pending.filter((m) => m.type === 'message');
    this.pending = [];
    while (got.length < n) {
      const m = await this.recv();
      if (m.type === 'message') got.push(m);
    }
    return got;
  }
}

async function main() {
  const members = [];
  for (const [name, deflate] of [['a', true], ['b', true], ['c', true], ['plain', false]]) {
    members.push(await Member.open(name, deflate));
  }
  let epoch;
  for (const m of members) {
    const joined = await m.request({ type: 'join', room: 'node-zip' });
    assert.equal(joined.type, 'joined');
    epoch = joined.epoch;
  }
  const [publisher] = members;
  for (let i = 0; i < N; i++) {
    const ack = await publisher.request({ type: 'publish', room: 'node-zip', data: chat(i) });
    assert.equal(ack.offset, i + 1, JSON.stringify(ack));
  }
  for (const m of members) {
    const got = await m.messages(N);
    assert.deepEqual(got.map((x) => x.offset), Array.from({ length: N }, (_, i) => i + 1));
    got.forEach((x, i) => assert.deepEqual(x.data, chat(i)));
  }
  // c drops; 50 more go by; c comes back with `since` and gets exactly those.
  members[2].ws.close();
  for (let i = N; i < N + 50; i++) {
    await publisher.request({ type: 'publish', room: 'node-zip', data: chat(i) });
  }
  const back = await Member.open('c', true);
  const rejoined = await back.request({ type: 'join', room: 'node-zip', since: { epoch, offset: N } });
  assert.equal(rejoined.recovered, true, JSON.stringify(rejoined));
  const missed = await back.messages(50);
  missed.forEach((x, i) => {
    assert.equal(x.offset, N + i + 1);
    assert.deepEqual(x.data, chat(N + i));
  });
  for (const m of [...members, back]) m.ws.close();
  console.log('node room client (permessage-deflate): all scenarios passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

#!/usr/bin/env node
// The load generator of the Socket.IO cluster fan-out benchmark: what `roomcast bench
// fanout` does to roomcast, done to Socket.IO servers (server.js) that share rooms
// through Redis.
//
//   node bench.js --urls http://127.0.0.1:A,http://127.0.0.1:B,http://127.0.0.1:C \
//       [--publisher-url URL] [-n 1000] [-m 2000] [--size 64] [--rate 1000] [--window 16] \
//       [--room bench-fanout] [--concurrency 100] [--timeout 20] [--json] [--sync]
//
// N subscribers connect round-robin over --urls (at most --concurrency handshakes and
// joins in flight), each joins the room (acked); then one publisher on --publisher-url
// (default: the first URL; it does not join the room) emits M `publish` events whose data
// is {seq, t, p}: seq 1..M, t the send time (performance.now(), ms, in this process, so
// the one clock that every receipt is read with) and p padding so that the data's JSON
// is --size bytes. --rate R publishes at R messages/s (open loop; a late publisher
// catches up, and t is the time each was really sent, as `roomcast bench fanout --rate`
// does); --rate 0 publishes as fast as acks allow, with at most --window unacked. The
// run ends when every subscriber has every message, or --timeout seconds after the last
// publish. Every client uses the WebSocket transport only (no long-polling start), with
// its own connection (forceNew) and no reconnection, so that a dropped client counts as
// lost messages instead of being hidden.
//
// Output: one JSON object (--json) or a few lines: subscribers, messages, size, rate,
// deliveries (distinct (subscriber, seq) pairs received), lost (subscribers x messages
// minus those), duplicates, out_of_order (a seq below one the subscriber already had),
// seconds (first publish to last delivery), deliveries_per_s, latency_us {p50, p99,
// p999, max} (receipt minus t, over every delivery), and, to tell whether this process
// was the bottleneck, load_generator_cpu_per_wall (its own CPU time over wall time, first
// publish to end; near 1.0 means this single Node thread was saturated, so the latency
// it reports includes its own queueing and the delivery rate is at most what it could
// read) and publish_seconds (how long publishing took; longer than M/R means the
// publisher fell behind the rate).
//
// lost counts what had not arrived when the run ended, so after a timeout it holds the
// messages still queued somewhere as well as any really dropped: a run must end with
// every message delivered for lost = 0 to mean anything.
//
// Node runs all of this on one thread: the publisher and every subscriber's parsing share
// it. Measured here it spends 5-7 µs of CPU per delivery (socket.io-client's WebSocket,
// Engine.IO and Socket.IO decoding) when it is behind and reads many messages per TCP
// read, and about 17 µs at 50 messages/s to 1000 subscribers, where each read brings one:
// one core reads at most some 60-200 k deliveries/s. Keep N x R modest, and read
// load_generator_cpu_per_wall before reading the other figures as the servers'.
//
// --sync (for bench/socketio-cluster.sh, which reads the servers' CPU time from /proc
// around the publish phase): after every subscriber joined, prints `publishing` on stderr
// and waits for a line on stdin before publishing; at the end prints `done` on stderr and
// waits for a line on stdin before printing the result and closing the connections.
'use strict';
const { io } = require('socket.io-client');
const { performance } = require('node:perf_hooks');
const readline = require('node:readline');

function parseArgs(argv) {
  const a = {
    urls: null, publisherUrl: null, n: 1000, m: 2000, size: 64, rate: 1000, window: 16,
    room: 'bench-fanout', concurrency: 100, timeout: 20, json: false, sync: false,
  };
  const num = (v, name) => {
    const x = Number(v);
    if (!Number.isFinite(x) || x < 0) usage(`${name} wants a number >= 0, got ${v}`);
    return x;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`${k} wants a value`);
      return argv[++i];
    };
    switch (k) {
      case '--urls': a.urls = v().split(',').filter(Boolean); break;
      case '--publisher-url': a.publisherUrl = v(); break;
      case '-n': case '--subscribers': a.n = num(v(), k); break;
      case '-m': case '--messages': a.m = num(v(), k); break;
      case '--size': a.size = num(v(), k); break;
      case '--rate': a.rate = num(v(), k); break;
      case '--window': a.window = Math.max(1, num(v(), k)); break;
      case '--room': a.room = v(); break;
      case '--concurrency': a.concurrency = Math.max(1, num(v(), k)); break;
      case '--timeout': a.timeout = num(v(), k); break;
      case '--json': a.json = true; break;
      case '--sync': a.sync = true; break;
      default: usage(`unknown argument ${k}`);
    }
  }
  if (!a.urls || a.urls.length === 0) usage('--urls is required');
  if (!a.publisherUrl) a.publisherUrl = a.urls[0];
  if (a.n < 1 || a.m < 1) usage('-n and -m must be at least 1');
  if (a.n * a.m > 50e6) usage('n x m above 50 million: every latency is kept for exact percentiles');
  return a;
}

function usage(msg) {
  console.error(`bench.js: ${msg}`);
  console.error('usage: node bench.js --urls U1,U2,U3 [--publisher-url U] [-n N] [-m M] [--size S] [--rate R|0] [--window W] [--json] [--sync]');
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const { n, m } = args;

// Lines from stdin, for --sync.
let stdinLines = null;
function nextStdinLine() {
  if (!stdinLines) {
    const queue = [];
    const waiters = [];
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
    rl.on('close', () => { while (waiters.length) waiters.shift()(null); });
    stdinLines = () => new Promise((res) => (queue.length ? res(queue.shift()) : waiters.push(res)));
  }
  return stdinLines();
}

const clientOpts = {
  transports: ['websocket'], // WebSocket only, as the servers offer (see server.js)
  forceNew: true, // one connection per client, not one Manager shared per URL
  reconnection: false,
  timeout: 20000,
};

// What the subscribers count, all together.
const lat = new Float32Array(n * m); // µs
let latCount = 0;
let distinct = 0;
let duplicates = 0;
let outOfOrder = 0;
let disconnectedEarly = 0;
let lastDelivery = 0;
let publishing = false;
let onAllDelivered = null;
const expectedTotal = n * m;

function subscriber(i) {
  const seen = new Uint8Array(m + 1);
  let highest = 0;
  return new Promise((resolve) => {
    const url = args.urls[i % args.urls.length];
    const s = io(url, clientOpts);
    let settled = false;
    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      resolve({ socket: s, ok, why });
    };
    s.on('message', (d) => {
      const now = performance.now();
      const seq = d.seq;
      if (seen[seq]) {
        duplicates++;
        return;
      }
      seen[seq] = 1;
      if (seq < highest) outOfOrder++;
      else highest = seq;
      lat[latCount++] = (now - d.t) * 1000;
      distinct++;
      lastDelivery = now;
      if (distinct === expectedTotal && onAllDelivered) onAllDelivered();
    });
    s.on('connect', () => {
      s.timeout(20000).emit('join', args.room, (err) => (err ? settle(false, `join: ${err.message}`) : settle(true)));
    });
    s.on('connect_error', (e) => settle(false, `connect: ${e.message}`));
    s.on('disconnect', (reason) => {
      if (publishing) disconnectedEarly++;
      settle(false, `disconnected: ${reason}`);
    });
  });
}

async function connectAll() {
  const sockets = [];
  const failures = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const r = await subscriber(i);
      if (r.ok) sockets.push(r.socket);
      else {
        failures.push(r.why);
        r.socket.close();
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(args.concurrency, n) }, worker));
  return { sockets, failures };
}

function connectPublisher() {
  return new Promise((resolve, reject) => {
    const s = io(args.publisherUrl, clientOpts);
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => reject(new Error(`publisher: ${e.message}`)));
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return Math.round(sorted[idx] * 10) / 10;
}

async function main() {
  const { sockets, failures } = await connectAll();
  if (failures.length > 0) {
    console.error(`bench.js: ${failures.length} of ${n} subscribers failed; the first: ${failures[0]}`);
  }
  if (sockets.length === 0) {
    console.error('bench.js: no subscriber joined');
    process.exit(1);
  }
  const pub = await connectPublisher();
  const ready = sockets.length;
  const expected = ready * m;

  if (args.sync) {
    console.error('publishing');
    await nextStdinLine();
  }

  const maxPad = 'x'.repeat(Math.max(0, args.size));
  const pad = (seq, t) => {
    const over = JSON.stringify({ seq, t, p: '' }).length;
    return maxPad.slice(0, Math.max(0, args.size - over));
  };
  let sent = 0;
  let acked = 0;
  let ackErrors = 0;
  let publishEnd = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  publishing = true;

  const finished = new Promise((resolve) => {
    let timer = null;
    const end = (why) => {
      if (timer) clearTimeout(timer);
      resolve(why);
    };
    onAllDelivered = () => end('all delivered');
    if (distinct >= expected) end('all delivered');
    // After the last publish, at most --timeout seconds for the rest to arrive.
    const armTimeout = () => {
      timer = setTimeout(() => end('timeout'), args.timeout * 1000);
    };
    const send = () => {
      const seq = ++sent;
      const t = performance.now();
      pub.emit('publish', { room: args.room, data: { seq, t, p: pad(seq, t) } }, (r) => {
        acked++;
        if (!r || !r.ok) ackErrors++;
        if (args.rate === 0) pump();
      });
      if (sent === m) {
        publishEnd = performance.now();
        armTimeout();
      }
    };
    // Closed loop: at most --window published and not yet acked.
    const pump = () => {
      while (sent < m && sent - acked < args.window) send();
    };
    // Open loop: message i (from 0) is due at start + i / rate; every due one goes out
    // at once when the timer fires late.
    const tick = () => {
      const now = performance.now();
      while (sent < m && start + (sent * 1000) / args.rate <= now) send();
      if (sent < m) setTimeout(tick, Math.max(0, start + (sent * 1000) / args.rate - performance.now()));
    };
    if (args.rate === 0) pump();
    else tick();
  });
  const why = await finished;
  const endAt = distinct >= expected ? lastDelivery : performance.now();
  publishing = false;
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - start;
  if (why === 'timeout') console.error(`bench.js: timeout, ${args.timeout} s after the last publish`);

  const seconds = (endAt - start) / 1000;
  const sorted = lat.subarray(0, latCount).sort();
  const result = {
    subscribers: ready,
    failed_subscribers: failures.length,
    messages: m,
    size: args.size,
    rate: args.rate,
    window: args.rate === 0 ? args.window : null,
    deliveries: distinct,
    lost: expected - distinct,
    duplicates,
    out_of_order: outOfOrder,
    disconnected: disconnectedEarly,
    acks: acked,
    ack_errors: ackErrors,
    seconds: Math.round(seconds * 1e4) / 1e4,
    deliveries_per_s: Math.round(distinct / seconds),
    latency_us: {
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      max: percentile(sorted, 1),
    },
    publish_seconds: Math.round(((publishEnd || performance.now()) - start) / 10) / 100,
    load_generator_cpu_per_wall: Math.round(((cpu.user + cpu.system) / 1000 / wall) * 100) / 100,
  };

  if (args.sync) {
    console.error('done');
    await nextStdinLine();
  }
  if (args.json) {
    console.log(JSON.stringify(result));
  } else {
    const l = result.latency_us;
    console.log(`subscribers       ${ready} joined, ${failures.length} failed`);
    console.log(`messages          ${m} of ${args.size} B, ${args.rate === 0 ? `closed loop, window ${args.window}` : `open loop at ${args.rate} msg/s`}`);
    console.log(`deliveries        ${distinct} in ${seconds.toFixed(2)} s: ${result.deliveries_per_s}/s`);
    console.log(`lost / dup / ooo  ${result.lost} / ${duplicates} / ${outOfOrder}`);
    console.log(`latency (µs)      p50 ${l.p50}  p99 ${l.p99}  p99.9 ${l.p999}  max ${l.max}`);
    console.log(`load generator    ${result.load_generator_cpu_per_wall} CPU/wall, published in ${result.publish_seconds} s`);
  }
  for (const s of sockets) s.close();
  pub.close();
  const bad = result.lost > 0 || duplicates > 0 || outOfOrder > 0 || failures.length > 0;
  // Exit without waiting for the closes to finish.
  process.exitCode = bad ? 1 : 0;
  setImmediate(() => process.exit());
}

main().catch((e) => {
  console.error(`bench.js: ${e.stack || e}`);
  process.exit(1);
});

// The client against a real `roomcast serve`: rooms, presence, history, and what it
// hides: reconnects with recovery, publishes retried once, close-code advice, tokens,
// and falling back to long-polling when WebSockets cannot get through.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, request } from "node:http";
import { connect, Client } from "../dist/roomcast.mjs";
import { serve, proxy, until, next, jwt, collect } from "./harness.mjs";

/** A POST on a connection of its own (Node's fetch would keep it for the client's next
 * WebSocket handshake, which roomcast takes only as a connection's first request). */
function post(url, body) {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

const servers = [];
after(async () => Promise.all(servers.map((s) => s.stop())));
async function node(args) {
  const s = await serve(args);
  servers.push(s);
  return s;
}
const opened = [];
after(() => opened.forEach((c) => c.close()));
function client(url, opts) {
  const c = connect(url, opts);
  opened.push(c);
  return c;
}

for (const transport of ["websocket", "poll"]) {
  test(`${transport}: join, publish, presence and history`, async () => {
    const s = await node([]);
    const a = client(s.url, { client: "alice", transports: [transport] });
    const b = client(s.url, { client: "bob", transports: [transport] });
    const gotB = collect(b);
    const joinedA = await a.join("lobby", { presence: { name: "Alice" } });
    assert.equal(joinedA.offset, 0);
    const seen = [];
    a.on("presence", (d) => seen.push(...d.joined));
    await b.join("lobby", { presence: { name: "Bob" } });
    await until(() => seen.some((m) => m.client === "bob"), 5000, "bob's presence");
    assert.deepEqual(seen.find((m) => m.client === "bob"), { client: "bob", info: { name: "Bob" } });
    assert.equal(a.transport, transport);
    const offsets = [];
    for (let i = 0; i < 20; i++) offsets.push(await a.publish("lobby", { i }));
    assert.deepEqual(offsets, Array.from({ length: 20 }, (_, i) => i + 1));
    await until(() => gotB.length === 20, 5000, "bob's messages");
    assert.deepEqual(gotB.map((m) => m.data.i), Array.from({ length: 20 }, (_, i) => i));
    assert.ok(gotB.every((m) => m.from === "alice" && m.room === "lobby"));
    const members = (await a.presence("lobby")).map((m) => m.client).sort();
    assert.deepEqual(members, ["alice", "bob"]);
    const h = await b.history("lobby", { limit: 5 });
    assert.equal(h.messages.length, 5);
    await assert.rejects(a.publish("elsewhere", 1), { code: "not_joined" });
    await b.leave("lobby");
    const left = await next(a, "presence");
    assert.deepEqual(left.left.map((m) => m.client), ["bob"]);
  });

  test(`${transport}: a cut connection comes back with every message once`, async () => {
    const s = await node([]);
    const p = await proxy(s.addr);
    const a = client(p.url, { client: "alice", transports: [transport], backoff: { min: 50, max: 200 } });
    const b = client(s.url, { client: "bob", transports: [transport] });
    const got = collect(a);
    await a.join("feed");
    await b.join("feed");
    for (let i = 0; i < 10; i++) await b.publish("feed", i);
    await until(() => got.length === 10, 5000, "the first ten");
    p.refuse(true);
    p.cut();
    await next(a, "reconnecting");
    for (let i = 10; i < 50; i++) await b.publish("feed", i);
    const recovered = next(a, "recovered");
    p.refuse(false);
    assert.equal((await recovered).room, "feed");
    for (let i = 50; i < 60; i++) await b.publish("feed", i);
    await until(() => got.length >= 60, 10000, "all sixty");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got.map((m) => m.data), Array.from({ length: 60 }, (_, i) => i));
    assert.deepEqual(got.map((m) => m.offset), Array.from({ length: 60 }, (_, i) => i + 1));
    p.close();
  });

  test(`${transport}: a publish whose ack was lost is sent again and stored once`, async () => {
    const s = await node([]);
    const p = await proxy(s.addr);
    const a = client(p.url, { client: "alice", transports: [transport], backoff: { min: 50, max: 200 } });
    const b = client(s.url, { client: "bob", transports: [transport] });
    const got = collect(b);
    await a.join("room");
    await b.join("room");
    p.mute(true); // the server gets the publish; its ack never comes back
    const acked = a.publish("room", "once");
    await until(() => got.length === 1, 5000, "the message at bob");
    p.cut();
    p.mute(false);
    assert.equal(await acked, 1);
    assert.equal(await a.publish("room", "twice"), 2);
    await until(() => got.length === 2, 5000, "the second message");
    assert.deepEqual(got.map((m) => m.data), ["once", "twice"]);
    p.close();
  });
}

for (const transport of ["websocket", "poll"]) test(`${transport}: close-code advice: 4003 stops, 4000 reconnects`, async () => {
  const s = await node([]);
  const a = client(s.url, { client: "carol", transports: [transport], backoff: { min: 50, max: 100 } });
  await a.join("x");
  const api = (code) => post(`${s.url}/api/disconnect`, { client: "carol", code });
  const back = next(a, "open");
  await api(4000);
  assert.equal((await back).reconnect, true);
  const closed = next(a, "close");
  await api(4003);
  assert.equal((await closed).code, 4003);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(a.transport, undefined);
  await assert.rejects(a.publish("x", 1), { code: "closed" });
});

for (const transport of ["websocket", "poll"]) {
  test(`${transport}: tokens refreshed before they expire; a 4009 reconnects with a new one; without one the client stops`, async () => {
    const secret = "a-test-secret-of-at-least-32-bytes!!";
    const s = await node(["--set", `auth.jwt_secret=${secret}`, "--set", "auth.expiry_warning_ms=1000", "--set", "auth.leeway_ms=0"]);
    const exp = (ttl) => Math.floor(Date.now() / 1000) + ttl;
    let made = 0;
    const token = () => {
      made++;
      return jwt(secret, { sub: "dave", exp: exp(2) });
    };
    const a = client(s.url, { token, transports: [transport] });
    const got = collect(a);
    await a.join("t");
    const b = client(s.url, { token: () => jwt(secret, { sub: "erin", exp: exp(60) }) });
    await b.join("t");
    let closes = 0;
    a.on("reconnecting", () => closes++);
    await new Promise((r) => setTimeout(r, 4500)); // past two expiries
    await b.publish("t", "still here");
    await until(() => got.length === 1, 3000, "the message after the expiry");
    assert.equal(closes, 0, "refreshed in place, never closed with 4009");
    assert.ok(made >= 3, `tokens made: ${made}`);
    assert.equal(a.client, "dave");
    // A token function that has nothing newer than its short token until that one has
    // expired (each refresh gets the same one): the server closes with 4009 at exp, and
    // the client comes back with the next token, in its rooms, missing nothing.
    const shortExp = exp(2);
    const short = jwt(secret, { sub: "gail", exp: shortExp });
    let calls = 0;
    const lapsing = client(s.url, {
      transports: [transport],
      backoff: { min: 50, max: 200 },
      token: () => {
        calls++;
        return Date.now() < shortExp * 1000 ? short : jwt(secret, { sub: "gail", exp: exp(60) });
      },
    });
    const lapsed = collect(lapsing);
    await lapsing.join("t");
    const why = await next(lapsing, "reconnecting");
    assert.equal(why.code, 4009, JSON.stringify(why));
    await b.publish("t", "while it was away");
    await next(lapsing, "recovered");
    await b.publish("t", "after");
    await until(() => lapsed.length === 2, 5000, "both messages after the 4009");
    assert.deepEqual(lapsed.map((m) => m.data), ["while it was away", "after"]);
    assert.ok(calls >= 3, `tokens asked for: ${calls}`);
    const anon = client(s.url, { token: "not-a-token", transports: [transport] });
    assert.equal((await next(anon, "close")).code, 4001);
  });
}

test("WebSockets refused on the way: the client falls back to long-polling by itself", async () => {
  const s = await node([]);
  // An HTTP proxy that passes requests but no upgrade, like some corporate proxies.
  const [host, port] = s.addr.split(":");
  const front = createServer((req, res) => {
    const up = request({ host, port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  front.on("upgrade", (_req, sock) => sock.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"));
  await new Promise((r) => front.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${front.address().port}`;
  const a = client(url, { client: "frank" });
  const b = client(s.url, { client: "gina" });
  const got = collect(a);
  const open = await next(a, "open");
  assert.equal(open.transport, "poll");
  await a.join("f");
  await b.join("f");
  for (let i = 0; i < 5; i++) await b.publish("f", i);
  assert.equal(await a.publish("f", "from poll"), 6);
  await until(() => got.length === 6, 5000, "six messages over poll");
  front.closeAllConnections();
  front.close();
});

test("a node that drains and comes back: the client recovers on the new node's epoch", async () => {
  const s = await node([]);
  const port = s.addr.split(":")[1];
  const a = new Client(s.url, { client: "hal", backoff: { min: 50, max: 200 } });
  opened.push(a);
  await a.join("d");
  await a.publish("d", 1);
  await s.drain();
  const lost = next(a, "continuity_lost", 15000);
  servers.push(await serve([], Number(port)));
  // A restarted node without a broker has lost the room: the client is told, not fooled.
  const j = await lost;
  assert.equal(j.recovered, false);
  assert.equal(await a.publish("d", 2), 1);
});

test("while the server is down the backoff grows, with jitter, up to its maximum", async () => {
  const s = await node([]);
  const a = client(s.url, { client: "ivy", transports: ["websocket"], backoff: { min: 40, max: 640 } });
  await a.join("b");
  const delays = [];
  a.on("reconnecting", (e) => delays.push(e.delay));
  // Up for longer than a connection that "lasted" (5 s): only that one resets the count.
  await new Promise((r) => setTimeout(r, 5200));
  await s.stop();
  await until(() => delays.length >= 7, 10000, "seven attempts");
  // 40, 80, 160... each between half its span and the span, then held at the maximum.
  for (const [i, d] of delays.entries()) {
    const span = Math.min(640, 40 * 2 ** i);
    assert.ok(d >= span / 2 && d <= span, `attempt ${i + 1}: ${d} ms, span ${span}: ${delays}`);
  }
});

// roomcast's pages and JS client in real Chromium: two tabs chat through the demo, a tab
// that goes offline comes back with every message once, the fallbacks to SSE and to
// long-polling, three tabs on one connection, a node drained and restarted under tabs on
// every transport, WebSockets over a page's HTTP/2 connection, and the admin page's counts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { X509Certificate, createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "../../clients/js/dist/roomcast.mjs";
import { launch, tab, redis, serve, proxy, until, collect } from "./harness.mjs";
import { jwt } from "../../clients/js/test/harness.mjs";

let browser;
const stops = [];
before(async () => {
  browser = await launch();
});
after(
  async () => {
    for (const s of stops.reverse()) await s();
    // Bounded: the servers are gone already, and the process ends after this anyway.
    await Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 5000))]);
  },
  { timeout: 20000 },
);
async function node(args = [], port = 0) {
  const s = await serve(args, port);
  stops.push(s.stop);
  return s;
}
const shots = process.env.ROOMCAST_SCREENSHOTS;

/** The texts of a demo page's messages. */
const texts = (page) => page.$$eval("#messages li[data-offset]", (lis) => lis.map((li) => li.textContent));

test("two tabs chat through the demo page, with presence and history", async () => {
  const s = await node();
  const api = connect(s.url, { client: "backend" });
  await api.join("lobby");
  await api.publish("lobby", { text: "before anyone came" });
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 560 } });
  const alice = await ctx.newPage();
  const bob = await ctx.newPage();
  await alice.goto(`${s.url}/?name=alice`);
  await bob.goto(`${s.url}/?name=bob`);
  for (const p of [alice, bob]) {
    await p.waitForSelector("#status.online");
    await until(async () => (await texts(p)).some((t) => t.includes("before anyone came")), 5000, "history on join");
  }
  await alice.fill("#text", "hello bob");
  await alice.click("#send");
  await bob.fill("#text", "hi alice");
  await bob.press("#text", "Enter");
  for (const p of [alice, bob]) {
    await until(async () => {
      const t = await texts(p);
      return t.some((x) => x.includes("hello bob")) && t.some((x) => x.includes("hi alice"));
    }, 5000, "both messages on both tabs");
    await until(async () => {
      const m = await p.$$eval("#members li", (lis) => lis.map((li) => li.textContent));
      return m.includes("alice") && m.includes("bob");
    }, 5000, "both in presence");
  }
  const offsets = await alice.$$eval("#messages li[data-offset]", (lis) => lis.map((li) => Number(li.dataset.offset)));
  assert.deepEqual(offsets, [1, 2, 3]);
  if (shots) await alice.screenshot({ path: `${shots}/demo.png` });
  api.close();
  await ctx.close();
});

test("a tab that goes offline comes back with every message exactly once", async () => {
  const s = await node();
  const p = await proxy(s.addr);
  const ctx = await browser.newContext();
  const page = await tab(ctx, p.url);
  await page.evaluate(async () => {
    window.got = [];
    window.events = [];
    const rc = Roomcast.connect(location.origin, { client: "offline-tab", shared: false, backoff: { min: 100, max: 400 } });
    rc.on("message", (m) => window.got.push(m.offset));
    for (const e of ["reconnecting", "recovered", "continuity_lost"]) rc.on(e, () => window.events.push(e));
    await rc.join("news");
  });
  const pub = connect(s.url, { client: "newsroom" });
  await pub.join("news");
  for (let i = 0; i < 20; i++) await pub.publish("news", i);
  await until(() => page.evaluate(() => window.got.length === 20), 5000, "the first twenty");
  await ctx.setOffline(true);
  p.refuse(true);
  p.cut();
  await until(() => page.evaluate(() => window.events.includes("reconnecting")), 5000, "the tab noticing");
  for (let i = 20; i < 120; i++) await pub.publish("news", i);
  await ctx.setOffline(false);
  p.refuse(false);
  await until(() => page.evaluate(() => window.got.length >= 120), 10000, "all 120 after coming back");
  for (let i = 120; i < 130; i++) await pub.publish("news", i);
  await until(() => page.evaluate(() => window.got.length >= 130), 5000, "the live ones after");
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got, Array.from({ length: 130 }, (_, i) => i + 1), "each message once, in order");
  const events = await page.evaluate(() => window.events);
  assert.ok(events.includes("recovered") && !events.includes("continuity_lost"), events.join());
  pub.close();
  p.close();
  await ctx.close();
});

test("WebSockets blocked: SSE; SSE blocked too: long-polling; every message either way", async () => {
  const s = await node();
  const pub = connect(s.url, { client: "feed" });
  await pub.join("f");
  for (const blocked of [["ws"], ["ws", "sse"]]) {
    const ctx = await browser.newContext();
    // Blocked on the way: the handshake fails, as behind a proxy that drops upgrades;
    // an SSE request fails at the network.
    await ctx.routeWebSocket(/\/ws$/, (ws) => ws.close({ code: 1011, reason: "blocked" }));
    if (blocked.includes("sse")) await ctx.route(/\/sse\?/, (route) => route.abort());
    const page = await tab(ctx, s.url);
    const transport = await page.evaluate(async () => {
      window.got = [];
      const rc = Roomcast.connect(location.origin, { client: "fallback", shared: false });
      window.rc = rc;
      rc.on("message", (m) => window.got.push(m.data));
      const open = new Promise((r) => rc.on("open", (e) => r(e.transport)));
      await rc.join("f");
      return open;
    });
    assert.equal(transport, blocked.length === 1 ? "sse" : "poll");
    for (let i = 0; i < 30; i++) await pub.publish("f", i);
    const mine = await page.evaluate(() => window.rc.publish("f", "from the tab"));
    assert.ok(mine > 0);
    await until(() => page.evaluate(() => window.got.length === 31), 10000, `31 messages over ${transport}`);
    const got = await page.evaluate(() => window.got);
    assert.deepEqual(got, [...Array.from({ length: 30 }, (_, i) => i), "from the tab"]);
    await ctx.close();
    await pub.publish("f", "between"); // the next tab starts after this
    await until(async () => (await (await fetch(`${s.url}/api/stats`)).json()).connections.sse === 0, 5000, "the stream gone");
  }
  pub.close();
});

test("three tabs share one connection; the server counts one", async () => {
  const s = await node();
  const ctx = await browser.newContext();
  const pages = [];
  for (let i = 0; i < 3; i++) pages.push(await tab(ctx, s.url));
  for (const [i, page] of pages.entries()) {
    await page.evaluate(async (i) => {
      window.got = [];
      window.rc = Roomcast.connect(location.origin, { client: "shared-user" });
      window.rc.on("message", (m) => window.got.push(m.data));
      await window.rc.join(i === 2 ? "other" : "common", { presence: { tab: i } });
      await window.rc.join("common", { presence: { tab: i } });
    }, i);
  }
  const kinds = await Promise.all(pages.map((p) => p.evaluate(() => window.rc.constructor.name)));
  const pub = connect(s.url, { client: "pub" });
  await pub.join("common");
  for (let i = 0; i < 10; i++) await pub.publish("common", i);
  for (const page of pages) await until(() => page.evaluate(() => window.got.length === 10), 5000, "ten on each tab");
  const stats = await (await fetch(`${s.url}/api/stats`)).json();
  assert.equal(stats.connections.websocket, 2, `the tabs' one and the publisher's: ${JSON.stringify(stats.connections)} (${kinds})`);
  // One presence per client id: one visible member for the three tabs' joins (the
  // publisher joined without presence).
  const members = await pub.presence("common");
  assert.deepEqual(members.map((m) => m.client), ["shared-user"], JSON.stringify(members));
  pub.close();
  await ctx.close();
});

test("tabs sharing one connection, and a tab on SSE, refresh their tokens: never closed with 4009", async () => {
  const secret = "a-test-secret-of-at-least-32-bytes!!";
  const s = await node(["--set", `auth.jwt_secret=${secret}`, "--set", "auth.expiry_warning_ms=1000", "--set", "auth.leeway_ms=0"]);
  const ctx = await browser.newContext();
  let made = 0;
  const pages = [];
  // Two tabs on the shared connection, and one on SSE by itself (its refresh goes over
  // POST /cmd).
  for (const sse of [false, false, true]) {
    const page = await tab(ctx, s.url);
    // The page's token function asks the test, which signs a token of two seconds.
    await page.exposeFunction("makeToken", () => {
      made++;
      return jwt(secret, { sub: sse ? "sse-user" : "shared-user", exp: Math.floor(Date.now() / 1000) + 2 });
    });
    await page.evaluate(async (sse) => {
      window.got = [];
      window.reconnects = 0;
      const opts = sse ? { transports: ["sse"], shared: false } : {};
      window.rc = Roomcast.connect(location.origin, { ...opts, token: () => window.makeToken() });
      window.rc.on("message", (m) => window.got.push(m.data));
      window.rc.on("reconnecting", () => window.reconnects++);
      await window.rc.join("tok");
    }, sse);
    pages.push(page);
  }
  const kinds = await Promise.all(pages.map((p) => p.evaluate(() => window.rc.constructor.name)));
  await new Promise((r) => setTimeout(r, 4500)); // past two expiries
  const pub = connect(s.url, { token: jwt(secret, { sub: "pub", exp: Math.floor(Date.now() / 1000) + 60 }) });
  await pub.join("tok");
  await pub.publish("tok", "after two expiries");
  for (const page of pages) {
    await until(() => page.evaluate(() => window.got.length === 1), 5000, "the message after the expiries");
    assert.equal(await page.evaluate(() => window.reconnects), 0, "the shared connection was closed and reconnected");
  }
  assert.ok(made >= 6, `tokens made: ${made}`);
  const stats = await (await fetch(`${s.url}/api/stats`)).json();
  assert.equal(stats.connections.websocket, 2, `the tabs' one and the publisher's (${kinds})`);
  assert.equal(stats.connections.sse, 1);
  assert.equal(stats.token_expiries, 0);
  pub.close();
  await ctx.close();
});

test("a node drains and restarts under tabs on WebSocket, SSE and polling: every one recovers", async () => {
  const r = await redis();
  stops.push(async () => r.stop());
  const first = await serve(["--broker", r.url]);
  const port = Number(first.addr.split(":")[1]);
  const ctx = await browser.newContext();
  const pages = [];
  for (const transports of [["websocket"], ["sse"], ["poll"]]) {
    const page = await tab(ctx, first.url);
    await page.evaluate(async (transports) => {
      window.got = [];
      window.recovered = 0;
      const rc = Roomcast.connect(location.origin, { client: "t-" + transports[0], transports, shared: false, backoff: { min: 100, max: 1000 } });
      rc.on("message", (m) => window.got.push(m.offset));
      rc.on("recovered", () => (window.recovered = performance.timeOrigin + performance.now()));
      rc.on("continuity_lost", () => (window.lost = true));
      await rc.join("d");
    }, transports);
    pages.push(page);
  }
  const pub = connect(`http://127.0.0.1:${port}`, { client: "pub", backoff: { min: 100, max: 1000 } });
  await pub.join("d");
  for (let i = 0; i < 10; i++) await pub.publish("d", i);
  for (const page of pages) await until(() => page.evaluate(() => window.got.length === 10), 5000, "ten before the drain");
  await first.drain();
  const pending = Array.from({ length: 10 }, (_, i) => pub.publish("d", 10 + i)); // retried until the node is back
  // The clock starts before the new process is spawned: its start-up counts.
  const restarted = Date.now();
  const second = await node(["--broker", r.url], port);
  const listening = Date.now() - restarted;
  await Promise.all(pending);
  for (const page of pages) {
    await until(() => page.evaluate(() => window.got.length >= 20), 15000, "twenty after the restart");
    const got = await page.evaluate(() => window.got);
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(await page.evaluate(() => window.lost), undefined);
  }
  const times = await Promise.all(pages.map((p) => p.evaluate(() => window.recovered)));
  const slowest = Math.max(...times) - restarted;
  console.log(`# from the restart to every tab recovered: ${slowest} ms (the node listening after ${listening} ms)`);
  assert.ok(times.every((t) => t > 0));
  assert.ok(slowest < 2000, `every tab recovered ${slowest} ms after the restart (target: under 2 s)`);
  pub.close();
  await ctx.close();
  await second.stop();
});

test("Chromium agrees to permessage-deflate with a node that has compression on", async () => {
  const s = await node(["--echo", "--set", "websocket.compression=true", "--set", "websocket.compression_threshold=64"]);
  const ctx = await browser.newContext();
  const page = await tab(ctx, s.url);
  const got = await page.evaluate(async () => {
    const ws = new WebSocket(location.origin.replace("http", "ws") + "/echo");
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    const long = JSON.stringify({ type: "message", text: "κόσμε ".repeat(2000) });
    const echoes = [];
    for (const m of [long, "short", long]) {
      const back = new Promise((r) => (ws.onmessage = (e) => r(e.data)));
      ws.send(m);
      echoes.push((await back) === m);
    }
    ws.close();
    return { extensions: ws.extensions, echoes };
  });
  assert.match(got.extensions, /^permessage-deflate/, JSON.stringify(got));
  assert.deepEqual(got.echoes, [true, true, true]);
  // The JS client over the same node: rooms work as ever with the extension agreed.
  const result = await page.evaluate(async () => {
    const rc = Roomcast.connect(location.origin, { client: "zip", shared: false });
    const got = [];
    rc.on("message", (m) => got.push(m.data));
    await rc.join("z");
    await rc.publish("z", { text: "compressible ".repeat(100) });
    const until = Date.now() + 5000;
    while (got.length < 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    rc.close();
    return got;
  });
  assert.equal(result.length, 1);
  assert.equal(result[0].text, "compressible ".repeat(100));
  // Three tabs in one room: 50 chat messages published over HTTP reach every tab as
  // published, and the node sent them compressed, one compression serving the tabs of
  // a worker (its counters say so).
  const before = await (await fetch(`${s.url}/api/stats`)).json();
  const tabs = [page, await tab(ctx, s.url), await tab(ctx, s.url)];
  const chat = (i) => ({ i, text: `message ${i} about the weather and the match, `.repeat(12) });
  const ready = tabs.map((p, n) =>
    p.evaluate(async (n) => {
      const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
      window.zipped = { ws, got: [] };
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      const replies = [];
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === "message") window.zipped.got.push(m.data);
        else replies.push(m);
      };
      ws.send(JSON.stringify({ type: "hello", client: `tab-${n}` }));
      ws.send(JSON.stringify({ type: "join", room: "zipped", ref: 1 }));
      const until = Date.now() + 5000;
      while (!replies.some((m) => m.type === "joined") && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      return ws.extensions;
    }, n),
  );
  for (const extensions of await Promise.all(ready)) assert.match(extensions, /^permessage-deflate/);
  for (let i = 0; i < 50; i++) {
    const r = await fetch(`${s.url}/api/publish`, { method: "POST", body: JSON.stringify({ room: "zipped", data: chat(i) }) });
    assert.equal(r.status, 200);
  }
  for (const p of tabs) {
    await until(async () => (await p.evaluate(() => window.zipped.got.length)) >= 50, 10000, "50 messages in a tab");
    const got = await p.evaluate(() => window.zipped.got);
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => chat(i)));
  }
  const after = await (await fetch(`${s.url}/api/stats`)).json();
  const frames = after.compressed_frames - before.compressed_frames;
  const runs = after.compressions - before.compressions;
  console.log(`# 3 Chromium tabs, 50 messages: ${frames} compressed frames from ${runs} compressions`);
  assert.equal(frames, 150);
  assert.ok(runs <= 100, `${runs} compressions: at most one per message and worker`);
  await ctx.close();
});

test("over https, Chromium carries several WebSockets on the page's one HTTP/2 connection", async () => {
  // A certificate of the test's own, trusted by this Chromium alone: by the SHA-256 of
  // its public key (--ignore-certificate-errors-spki-list), not by ignoring errors.
  const dir = mkdtempSync(join(tmpdir(), "roomcast-h2-browser-"));
  const [crt, key] = [join(dir, "h2.crt"), join(dir, "h2.key")];
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", key, "-out", crt], { stdio: "ignore" });
  const spki = new X509Certificate(readFileSync(crt)).publicKey.export({ type: "spki", format: "der" });
  const pin = createHash("sha256").update(spki).digest("base64");
  const s = await node(["--tls-cert", crt, "--tls-key", key]);
  const trusting = await launch([`--ignore-certificate-errors-spki-list=${pin}`]);
  try {
    const page = await (await trusting.newContext()).newPage();
    const origin = `https://${s.addr}`;
    await page.goto(`${origin}/healthz`);
    const got = await page.evaluate(async () => {
      const protocol = performance.getEntriesByType("navigation")[0].nextHopProtocol;
      const open = () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`wss://${location.host}/ws`);
          ws.got = [];
          ws.onmessage = (e) => ws.got.push(JSON.parse(e.data));
          ws.onopen = () => resolve(ws);
          ws.onerror = reject;
        });
      const socks = [await open(), await open(), await open()];
      const reply = async (ws, type) => {
        const until = Date.now() + 5000;
        while (Date.now() < until) {
          const m = ws.got.find((m) => m.type === type);
          if (m) return m;
          await new Promise((r) => setTimeout(r, 10));
        }
        throw new Error(`no ${type}`);
      };
      for (const [i, ws] of socks.entries()) {
        ws.send(JSON.stringify({ type: "hello", client: `h2-tab-${i}`, ref: 1 }));
        await reply(ws, "welcome");
        ws.send(JSON.stringify({ type: "join", room: "h2page", ref: 2 }));
        await reply(ws, "joined");
      }
      socks[0].send(JSON.stringify({ type: "publish", room: "h2page", data: { text: "over one connection" }, ref: 3 }));
      const texts = [];
      for (const ws of socks) texts.push((await reply(ws, "message")).data.text);
      const stats = await (await fetch("/api/stats")).json();
      for (const ws of socks) ws.close(1000);
      return { protocol, texts, stats };
    });
    assert.equal(got.protocol, "h2", "the page came over HTTP/2");
    assert.deepEqual(got.texts, ["over one connection", "over one connection", "over one connection"]);
    console.log(`# Chromium over https: ${got.stats.http2_websockets} WebSockets on ${got.stats.http2_connections} HTTP/2 connection(s)`);
    assert.equal(got.stats.http2_websockets, 3, "each WebSocket a stream (RFC 8441)");
    assert.equal(got.stats.http2_connections, 1, "the page, its WebSockets and its fetch on one connection");
  } finally {
    await trusting.close();
  }
});

test("the admin page shows the counts of a known scenario", async () => {
  const s = await node();
  const clients = [];
  for (const name of ["a", "b", "c"]) {
    const c = connect(s.url, { client: name });
    await c.join("room-1");
    clients.push(c);
  }
  for (let i = 0; i < 7; i++) await clients[0].publish("room-1", i);
  await clients[1].publish("nowhere", 1).catch(() => {});
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await ctx.newPage();
  await page.goto(`${s.url}/admin`);
  const cell = (key) => page.$eval(`td[data-key="${key}"]`, (td) => td.textContent).catch(() => null);
  await until(async () => (await cell("connections.websocket")) === "3", 5000, "3 WebSocket connections");
  assert.equal(await cell("published"), "7");
  assert.equal(await cell("deliveries"), "21");
  assert.equal(await cell("errors.not_joined"), "1");
  await until(async () => (await cell("room.room-1"))?.startsWith("3 members"), 5000, "the room and its members");
  if (shots) {
    // Some seconds of uneven traffic, so that the chart has a shape.
    for (let i = 0; i < 24; i++) {
      for (let j = 0; j <= (i * 7) % 5; j++) await clients[(i + j) % 3].publish("room-1", { n: i, j });
      await new Promise((r) => setTimeout(r, 400));
    }
    await page.screenshot({ path: `${shots}/admin.png` });
  }
  clients.forEach((c) => c.close());
  await ctx.close();
});

test("an API disconnect with 4003 stops a tab on SSE or polling as it stops a WebSocket", async () => {
  const s = await node();
  const ctx = await browser.newContext();
  for (const transport of ["websocket", "sse", "poll"]) {
    const page = await tab(ctx, s.url);
    const client = `banned-${transport}`;
    await page.evaluate(async ({ transport, client }) => {
      window.closes = [];
      window.reconnects = 0;
      const rc = Roomcast.connect(location.origin, { client, transports: [transport], shared: false, backoff: { min: 50, max: 100 } });
      rc.on("close", (e) => window.closes.push(e.code));
      rc.on("reconnecting", () => window.reconnects++);
      await rc.join("x");
    }, { transport, client });
    const resp = await fetch(`${s.url}/api/disconnect`, { method: "POST", body: JSON.stringify({ client, code: 4003, reason: "banned" }) });
    assert.deepEqual(await resp.json(), { disconnected: 1 });
    await until(() => page.evaluate(() => window.closes.length === 1), 5000, `the ${transport} tab closed`);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await page.evaluate(() => [window.closes, window.reconnects]), [[4003], 0], transport);
  }
  await ctx.close();
});

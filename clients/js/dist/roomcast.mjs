var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// src/emitter.ts
var Emitter = class {
  constructor() {
    __publicField(this, "listeners", {});
  }
  on(type, fn) {
    var _a;
    ((_a = this.listeners)[type] ?? (_a[type] = /* @__PURE__ */ new Set())).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) {
    this.listeners[type]?.delete(fn);
  }
  emit(type, event) {
    for (const fn of this.listeners[type] ?? []) {
      try {
        fn(event);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
};

// src/transport.ts
function codeOf(status) {
  switch (status) {
    case 401:
      return 4001;
    case 403:
      return 4003;
    case 404:
      return 1001;
    // the session is gone: open another at once
    case 429:
      return 4029;
    case 503:
      return 1013;
    default:
      return 1006;
  }
}

// src/http.ts
var HttpTransport = class {
  constructor(dial) {
    __publicField(this, "dial", dial);
    __publicField(this, "onmessage", () => {
    });
    __publicField(this, "onclose", () => {
    });
    __publicField(this, "session");
    __publicField(this, "done", false);
    __publicField(this, "abort", new AbortController());
    __publicField(this, "waiting", []);
    __publicField(this, "posting", false);
  }
  /** The query of the request that opens the session. */
  opening() {
    const q = new URLSearchParams();
    if (this.dial.client) q.set("client", this.dial.client);
    if (this.dial.token) q.set("token", this.dial.token);
    return q.toString();
  }
  /** Hands on an event of the session's stream. */
  event(msg) {
    if (this.done) return;
    if (msg.type === "closed") {
      return this.end({ code: msg.code, reason: msg.reason, opened: true });
    }
    if (msg.type === "welcome") {
      this.session = msg.session;
      this.flush();
    }
    this.onmessage(msg);
  }
  send(requests) {
    this.waiting.push(...requests);
    this.flush();
  }
  async flush() {
    if (this.posting || !this.session || this.done || this.waiting.length === 0) return;
    let size = 0;
    let n = 0;
    while (n < this.waiting.length && (n === 0 || size < 256 * 1024)) {
      size += JSON.stringify(this.waiting[n]).length;
      n++;
    }
    const batch = this.waiting.splice(0, n);
    this.posting = true;
    try {
      const resp = await fetch(
        `${this.dial.base}/cmd?session=${encodeURIComponent(this.session)}`,
        {
          method: "POST",
          body: JSON.stringify(batch),
          headers: { "content-type": "text/plain;charset=utf-8" },
          signal: this.abort.signal
        }
      );
      if (!resp.ok) return this.end({ code: codeOf(resp.status), reason: `/cmd ${resp.status}`, opened: true });
      const replies = await resp.json();
      for (const r of Array.isArray(replies) ? replies : [replies]) this.event(r);
    } catch (e) {
      return this.end({ code: 1006, reason: String(e), opened: true });
    } finally {
      this.posting = false;
    }
    this.flush();
  }
  close() {
    this.done = true;
    this.abort.abort();
  }
  end(ended) {
    if (this.done) return;
    this.close();
    this.onclose(ended);
  }
};

// src/poll.ts
var WAIT = 2e4;
var PollTransport = class extends HttpTransport {
  constructor(dial) {
    super(dial);
    __publicField(this, "name", "poll");
    this.loop();
  }
  async loop() {
    let query = `${this.opening()}&timeout_ms=0`;
    while (!this.done) {
      let answer;
      try {
        const resp = await fetch(`${this.dial.base}/poll?${query}`, { signal: this.abort.signal });
        if (!resp.ok) {
          return this.end({ code: codeOf(resp.status), reason: `/poll ${resp.status}`, opened: this.session !== void 0 });
        }
        answer = await resp.json();
      } catch (e) {
        return this.end({ code: 1006, reason: String(e), opened: this.session !== void 0 });
      }
      for (const event of answer.events ?? []) this.event(event);
      if (answer.closed) {
        return this.end({ code: answer.code ?? 1001, reason: answer.reason ?? "poll session closed", opened: true });
      }
      query = `cursor=${encodeURIComponent(answer.cursor)}&timeout_ms=${WAIT}`;
      if (this.dial.token) query += `&token=${encodeURIComponent(this.dial.token)}`;
    }
  }
};

// src/sse.ts
var EVENTS = ["welcome", "joined", "message", "presence_diff", "token_expiring", "left", "error", "closed"];
var SseTransport = class extends HttpTransport {
  constructor(dial) {
    super(dial);
    __publicField(this, "name", "sse");
    __publicField(this, "es");
    const Es = dial.EventSource ?? globalThis.EventSource;
    this.es = new Es(`${dial.base}/sse?${this.opening()}`);
    for (const type of EVENTS) {
      this.es.addEventListener(type, (e) => {
        if (typeof e.data !== "string") return;
        try {
          this.event(JSON.parse(e.data));
        } catch {
        }
      });
    }
    this.es.onerror = () => {
      this.end({ code: 1006, reason: "event stream ended", opened: this.session !== void 0 });
    };
  }
  close() {
    super.close();
    this.es.close();
  }
};

// src/types.ts
var RoomcastError = class extends Error {
  constructor(code, message) {
    super(message);
    __publicField(this, "code");
    this.code = code;
    this.name = "RoomcastError";
  }
};

// src/ws.ts
var WsTransport = class {
  constructor(dial) {
    __publicField(this, "name", "websocket");
    __publicField(this, "onmessage", () => {
    });
    __publicField(this, "onclose", () => {
    });
    __publicField(this, "ws");
    __publicField(this, "opened", false);
    __publicField(this, "socketOpen", false);
    __publicField(this, "done", false);
    const Ws = dial.WebSocket ?? globalThis.WebSocket;
    this.ws = new Ws(dial.base.replace(/^http/, "ws") + "/ws");
    this.ws.onopen = () => {
      this.socketOpen = true;
      this.ws.send(JSON.stringify({ type: "hello", client: dial.client, token: dial.token }));
    };
    this.ws.onmessage = (e) => {
      if (typeof e.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === "welcome") this.opened = true;
      this.onmessage(msg);
    };
    this.ws.onclose = (e) => this.end({ code: e.code, reason: e.reason, opened: this.opened });
    this.ws.onerror = () => {
      if (!this.socketOpen) this.end({ code: 1006, reason: "handshake failed", opened: false });
    };
  }
  send(requests) {
    if (this.done || this.ws.readyState !== 1) return;
    for (const r of requests) this.ws.send(JSON.stringify(r));
  }
  close() {
    this.done = true;
    try {
      this.ws.close(1e3);
    } catch {
    }
  }
  end(ended) {
    if (this.done) return;
    this.done = true;
    this.onclose(ended);
  }
};

// src/client.ts
function advice(code) {
  if ([1e3, 1002, 1003, 1007, 1008, 1009, 1010, 4003].includes(code)) return "stop";
  if (code === 4001 || code === 4009) return "token";
  if (code === 1001 || code === 4008) return "now";
  return "later";
}
var ALL = ["websocket", "sse", "poll"];
var makers = {
  websocket: WsTransport,
  sse: SseTransport,
  poll: PollTransport
};
function baseUrl(url) {
  const here = globalThis.location?.href;
  const u = new URL(url, here);
  u.protocol = u.protocol.replace(/^ws/, "http");
  return (u.origin + u.pathname).replace(/\/(ws)?$/, "").replace(/\/$/, "");
}
function hex(bytes) {
  const a = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}
var Client = class extends Emitter {
  constructor(url, opts = {}) {
    super();
    __publicField(this, "opts", opts);
    /** The server's HTTP base URL. */
    __publicField(this, "base");
    /** The client id: as given, or the one the server chose at the first connect. */
    __publicField(this, "client");
    /** The transport in use, while connected. */
    __publicField(this, "transport");
    __publicField(this, "t");
    __publicField(this, "open", false);
    __publicField(this, "everOpened", false);
    __publicField(this, "stopped", false);
    __publicField(this, "rooms", /* @__PURE__ */ new Map());
    __publicField(this, "queue", []);
    __publicField(this, "sent", /* @__PURE__ */ new Map());
    __publicField(this, "ref", 0);
    __publicField(this, "ids", 0);
    __publicField(this, "idPrefix", hex(6));
    __publicField(this, "attempt", 0);
    __publicField(this, "openedAt", 0);
    __publicField(this, "lastHeard", 0);
    __publicField(this, "heartbeatMs", 25e3);
    __publicField(this, "pingedAt", 0);
    __publicField(this, "blocked", /* @__PURE__ */ new Map());
    __publicField(this, "timer");
    __publicField(this, "beat");
    __publicField(this, "order");
    __publicField(this, "online", () => {
      if (!this.t && !this.stopped) this.connect();
    });
    this.base = baseUrl(url);
    this.client = opts.client;
    const g2 = globalThis;
    const have = {
      websocket: !!(opts.WebSocket ?? g2.WebSocket),
      sse: !!(opts.EventSource ?? g2.EventSource),
      poll: typeof fetch === "function"
    };
    this.order = (opts.transports ?? ALL).filter((n) => have[n]);
    if (typeof g2.addEventListener === "function") {
      g2.addEventListener("online", this.online);
    }
    queueMicrotask(() => this.connect());
  }
  // ---- what the app calls ----
  /** Joins `room`: resolves with where the room stands once the server answered. After
   * a reconnect the client rejoins it by itself, from the last message it delivered. */
  join(room, options = {}) {
    const known = this.rooms.get(room);
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new RoomcastError("closed", "the client is closed"));
      if (known) {
        if (known.joined && known.pos) resolve({ room, ...known.pos });
        else known.waiters.push([resolve, reject]);
        return;
      }
      const r = { presence: options.presence, pos: options.since, joined: false, waiters: [[resolve, reject]] };
      this.rooms.set(room, r);
      if (this.open) this.t?.send([this.joinRequest(room, r)]);
    });
  }
  /** Leaves `room`: no more messages, no rejoin. */
  async leave(room) {
    const r = this.rooms.get(room);
    if (!r) return;
    this.rooms.delete(room);
    for (const [, reject] of r.waiters) reject(new RoomcastError("not_joined", `left ${room}`));
    if (!this.open) return;
    await this.request({ type: "leave", room }).catch((e) => {
      if (e.code !== "not_joined") throw e;
    });
  }
  /** Publishes `data` to a joined room; resolves with its offset once the server stored
   * it. Retried with the same idempotency id across reconnects and `unavailable` or
   * `rate_limited` answers, so it is stored once. */
  async publish(room, data, options = {}) {
    const id = options.id ?? `${this.idPrefix}-${++this.ids}`;
    const ack = await this.request({ type: "publish", room, data, id });
    return ack.offset;
  }
  /** Who is visibly in `room`. */
  async presence(room) {
    return (await this.request({ type: "presence", room })).members;
  }
  /** The retained messages of `room` after `since` (from the oldest without it). */
  async history(room, options = {}) {
    const m = await this.request({ type: "history", room, since: options.since, limit: options.limit });
    return { room, epoch: m.epoch, messages: m.messages };
  }
  /** The position reached in `room` (the last message delivered, or where it was joined). */
  position(room) {
    return this.rooms.get(room)?.pos;
  }
  /** Closes the connection for good. */
  close() {
    this.stop(1e3, "closed by the client");
  }
  // ---- connecting ----
  pick() {
    const now = Date.now();
    const usable = this.order.filter((n) => (this.blocked.get(n) ?? 0) < now);
    return usable[0] ?? this.order[0] ?? "websocket";
  }
  async token() {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }
  async connect() {
    if (this.stopped || this.t) return;
    clearTimeout(this.timer);
    const name = this.pick();
    let token;
    try {
      token = await this.token();
    } catch (e) {
      return this.retry({ code: 4001, reason: `token: ${e}`, opened: false });
    }
    if (this.stopped || this.t) return;
    let t;
    try {
      t = new makers[name]({
        base: this.base,
        client: this.client,
        token,
        WebSocket: this.opts.WebSocket,
        EventSource: this.opts.EventSource
      });
    } catch (e) {
      if (this.order.length === 0) return this.stop(1006, `no transport: ${e}`);
      this.blocked.set(name, Date.now() + 6e4);
      return this.retry({ code: 1006, reason: String(e), opened: false });
    }
    this.t = t;
    t.onmessage = (m) => {
      if (this.t === t) this.receive(m);
    };
    t.onclose = (e) => {
      if (this.t === t) this.lost(e);
    };
    this.timer = setTimeout(() => {
      if (this.t === t && !this.open) {
        t.close();
        this.lost({ code: 1006, reason: "no welcome in time", opened: false });
      }
    }, this.opts.connectTimeout ?? 5e3);
  }
  lost(e) {
    const t = this.t;
    this.t = void 0;
    this.open = false;
    this.transport = void 0;
    clearTimeout(this.timer);
    clearInterval(this.beat);
    const unanswered = [...this.sent.values()].filter((r) => r.body.type !== "join");
    this.queue = [...unanswered.sort((a, b) => a.ref - b.ref), ...this.queue];
    this.sent.clear();
    for (const r of this.rooms.values()) r.joined = false;
    if (this.stopped) return;
    if (e.opened && Date.now() - this.openedAt > 5e3) this.attempt = 0;
    if (!e.opened && t && this.order.length > 1 && advice(e.code) === "later") {
      this.reachable().then((up) => {
        if (this.stopped || this.t) return;
        if (up) {
          this.blocked.set(t.name, Date.now() + 6e4);
          if (this.pick() !== t.name) return this.connect();
        }
        this.retry(e);
      });
      return;
    }
    this.retry(e);
  }
  retry(e) {
    const a = advice(e.code);
    if (a === "stop" || a === "token" && typeof this.opts.token !== "function") {
      return this.stop(e.code, e.reason);
    }
    const min = this.opts.backoff?.min ?? 250;
    const max = this.opts.backoff?.max ?? 1e4;
    const span = a === "now" && this.attempt === 0 ? min : Math.min(max, min * 2 ** this.attempt);
    const delay = Math.round(span / 2 + Math.random() * span / 2);
    this.attempt++;
    this.emit("reconnecting", { code: e.code, reason: e.reason, attempt: this.attempt, delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
  async reachable() {
    try {
      const resp = await fetch(`${this.base}/healthz`, { signal: AbortSignal.timeout(3e3) });
      return resp.ok;
    } catch {
      return false;
    }
  }
  stop(code, reason) {
    if (this.stopped) return;
    this.stopped = true;
    const g2 = globalThis;
    g2.removeEventListener?.("online", this.online);
    clearTimeout(this.timer);
    clearInterval(this.beat);
    this.t?.close();
    this.t = void 0;
    this.open = false;
    const err = new RoomcastError("closed", `closed: ${code} ${reason}`);
    for (const r of [...this.sent.values(), ...this.queue]) r.reject(err);
    for (const room of this.rooms.values()) for (const [, reject] of room.waiters) reject(err);
    this.sent.clear();
    this.queue = [];
    this.emit("close", { code, reason });
  }
  // ---- what the server sends ----
  receive(m) {
    this.lastHeard = Date.now();
    const ref = m.ref;
    switch (m.type) {
      case "welcome":
        return this.welcome(m);
      case "message":
        return this.message(m);
      case "presence_diff":
        return this.emit("presence", { room: m.room, joined: m.joined ?? [], left: m.left ?? [] });
      case "token_expiring":
        this.refresh();
        return;
      case "joined":
        if (ref === void 0) return this.reset(m);
        break;
      case "left":
        if (ref === void 0 && this.rooms.delete(m.room)) return this.emit("left", { room: m.room });
        break;
      case "error":
        if (ref === void 0) return this.emit("error", new RoomcastError(m.code, m.message));
    }
    const r = ref === void 0 ? void 0 : this.sent.get(ref);
    if (!r) return;
    this.sent.delete(r.ref);
    if (m.type !== "error") return r.resolve(m);
    const room = this.rooms.get(r.body.room);
    const again = m.code === "unavailable" || m.code === "rate_limited" || m.code === "not_joined" && r.body.type === "publish" && room !== void 0;
    if (again && (r.body.type !== "join" || room?.joined === false) && r.tries < 1e3) {
      r.tries++;
      setTimeout(() => this.submit(r), Math.min(5e3, 100 * 2 ** Math.min(r.tries, 6)));
      return;
    }
    r.reject(new RoomcastError(m.code, m.message));
  }
  welcome(m) {
    if (this.open) return;
    clearTimeout(this.timer);
    this.open = true;
    this.client = m.client;
    this.transport = this.t?.name;
    this.heartbeatMs = m.heartbeat_ms || 25e3;
    this.openedAt = this.lastHeard;
    const reconnect = this.everOpened;
    this.everOpened = true;
    this.emit("open", { transport: this.transport, client: m.client, session: m.session, node: m.node, reconnect });
    const out = [];
    for (const [name, room] of this.rooms) out.push(this.joinRequest(name, room));
    for (const r of this.queue) out.push(this.track(r));
    this.queue = [];
    this.t?.send(out);
    clearInterval(this.beat);
    this.beat = setInterval(() => this.liveness(), 2e3);
    this.beat.unref?.();
  }
  message(m) {
    const room = this.rooms.get(m.room);
    if (!room) return;
    const p = room.pos;
    if (p && p.epoch === m.epoch && m.offset <= p.offset) return;
    room.pos = { epoch: m.epoch, offset: m.offset };
    this.emit("message", { room: m.room, epoch: m.epoch, offset: m.offset, from: m.from, data: m.data, ts: m.ts });
  }
  /** A `joined` the server sent by itself: the room's history broke (`recovered:false`),
   * or a poll session was reopened from its cursor. */
  reset(m) {
    const room = this.rooms.get(m.room);
    if (!room) return;
    const j = { room: m.room, epoch: m.epoch, offset: m.offset, recovered: m.recovered };
    if (m.recovered === false || room.pos?.epoch !== m.epoch) room.pos = { epoch: m.epoch, offset: m.offset };
    this.emit(m.recovered === true ? "recovered" : "continuity_lost", j);
  }
  joinRequest(name, room, tries = 0) {
    const since = room.pos;
    const r = {
      ref: ++this.ref,
      body: { type: "join", room: name, presence: room.presence, since },
      tries,
      resolve: (m) => {
        if (this.rooms.get(name) !== room) return;
        room.joined = true;
        const j = { room: name, epoch: m.epoch, offset: m.offset, recovered: m.recovered };
        if (!(since && since.epoch === m.epoch && m.recovered !== false)) {
          room.pos = { epoch: m.epoch, offset: m.offset };
        }
        if (since) this.emit(m.recovered ? "recovered" : "continuity_lost", j);
        for (const [resolve] of room.waiters.splice(0)) resolve(j);
      },
      reject: (e) => {
        if (this.rooms.get(name) !== room) return;
        if (e.code === "closed") return;
        this.rooms.delete(name);
        for (const [, reject] of room.waiters.splice(0)) reject(e);
        if (since) this.emit("error", e);
      }
    };
    return this.track(r);
  }
  track(r) {
    this.sent.set(r.ref, r);
    return { ...r.body, ref: r.ref };
  }
  submit(r) {
    if (this.stopped) return r.reject(new RoomcastError("closed", "the client is closed"));
    if (r.body.type === "join") {
      const room = this.rooms.get(r.body.room);
      const asking = [...this.sent.values()].some((s) => s.body.type === "join" && s.body.room === r.body.room);
      if (this.open && room && !room.joined && !asking) this.t?.send([this.joinRequest(r.body.room, room, r.tries)]);
      return;
    }
    if (this.open) this.t?.send([this.track(r)]);
    else this.queue.push(r);
  }
  request(body) {
    return new Promise((resolve, reject) => {
      this.submit({ ref: ++this.ref, body, resolve, reject, tries: 0 });
    });
  }
  async refresh() {
    if (typeof this.opts.token !== "function") return;
    try {
      await this.request({ type: "refresh", token: await this.token() });
    } catch (e) {
      this.emit("error", e instanceof RoomcastError ? e : new RoomcastError("unauthorized", String(e)));
    }
  }
  /** Browsers cannot see the server's pings: a connection silent for longer than the
   * heartbeat is asked, and given up 10 s later. */
  liveness() {
    const now = Date.now();
    if (!this.open || now - this.lastHeard < this.heartbeatMs) return;
    if (this.pingedAt > this.lastHeard && now - this.pingedAt > 1e4) {
      this.t?.close();
      return this.lost({ code: 1006, reason: "no answer to ping", opened: true });
    }
    if (this.pingedAt <= this.lastHeard) {
      this.pingedAt = now;
      this.request({ type: "ping" }).catch(() => {
      });
    }
  }
};

// src/shared.ts
var EVENTS2 = [
  "open",
  "message",
  "presence",
  "reconnecting",
  "recovered",
  "continuity_lost",
  "left",
  "close",
  "error"
];
var ROOM_EVENTS = /* @__PURE__ */ new Set(["message", "presence", "recovered", "continuity_lost", "left"]);
function workerUrl(url, shared) {
  const g2 = globalThis;
  if (shared === false || typeof g2.SharedWorker !== "function" || !g2.location) return void 0;
  if (typeof shared === "string") return shared;
  const base = baseUrl(url);
  return new URL(base).origin === g2.location.origin ? `${base}/roomcast.js` : void 0;
}
var SharedClient = class extends Emitter {
  constructor(url, opts, script) {
    super();
    __publicField(this, "base");
    __publicField(this, "client");
    __publicField(this, "transport");
    __publicField(this, "port");
    __publicField(this, "calls", /* @__PURE__ */ new Map());
    __publicField(this, "n", 0);
    __publicField(this, "positions", /* @__PURE__ */ new Map());
    __publicField(this, "tokenFn");
    this.base = baseUrl(url);
    this.client = opts.client;
    const W = globalThis.SharedWorker;
    const worker = new W(script, { name: `roomcast ${this.base} ${opts.client ?? ""}` });
    this.port = worker.port;
    this.port.onmessage = (e) => this.receive(e.data);
    this.port.start();
    const { token, WebSocket: _w, EventSource: _e, ...rest } = opts;
    this.port.postMessage({
      op: "hello",
      url,
      opts: { ...rest, shared: false, token: typeof token === "function" ? void 0 : token },
      asks: typeof token === "function"
    });
    const tok = token;
    this.tokenFn = typeof tok === "function" ? tok : void 0;
    addEventListener("pagehide", (e) => {
      if (!e.persisted) this.port.postMessage({ op: "bye" });
    });
    setInterval(() => this.port.postMessage({ op: "alive" }), 5e3);
  }
  join(room, options = {}) {
    return this.call("join", room, options);
  }
  leave(room) {
    return this.call("leave", room);
  }
  publish(room, data, options = {}) {
    return this.call("publish", room, data, options);
  }
  presence(room) {
    return this.call("presence", room);
  }
  history(room, options = {}) {
    return this.call("history", room, options);
  }
  position(room) {
    return this.positions.get(room);
  }
  /** Leaves this tab's rooms; the connection stays while other tabs use it. */
  close() {
    this.port.postMessage({ op: "bye" });
    this.emit("close", { code: 1e3, reason: "closed by the client" });
  }
  call(op, ...args) {
    const id = ++this.n;
    return new Promise((resolve, reject) => {
      this.calls.set(id, [resolve, reject]);
      this.port.postMessage({ op, id, args });
    });
  }
  async receive(m) {
    if (m.op === "token") {
      let value;
      try {
        value = await this.tokenFn?.();
      } catch {
        value = void 0;
      }
      return this.port.postMessage({ op: "token", id: m.id, value });
    }
    if (m.event) {
      const p = m.payload;
      if (m.event === "open") {
        this.client = p.client;
        this.transport = p.transport;
      }
      if (["message", "recovered", "continuity_lost"].includes(m.event) && p.epoch !== void 0) {
        const known = this.positions.get(p.room);
        if (m.event !== "recovered" || known?.epoch !== p.epoch) {
          this.positions.set(p.room, { epoch: p.epoch, offset: p.offset });
        }
      }
      return this.emit(m.event, m.event === "error" ? new RoomcastError(p.code, p.message) : p);
    }
    const call = this.calls.get(m.id);
    if (!call) return;
    this.calls.delete(m.id);
    if (m.error) return call[1](new RoomcastError(m.error.code, m.error.message));
    const v = m.value;
    if (v && typeof v === "object" && "epoch" in v && "room" in v && !this.positions.has(v.room)) {
      this.positions.set(v.room, { epoch: v.epoch, offset: v.offset });
    }
    call[0](m.value);
  }
};
var SILENT = 18e4;
function host(scope) {
  let client;
  let opened;
  const tabs = /* @__PURE__ */ new Map();
  const tokens = /* @__PURE__ */ new Map();
  let asked = 0;
  const post = (port, m) => port.postMessage(m);
  const wanted = (room) => [...tabs.values()].some((t) => t.rooms.has(room));
  const drop = (port) => {
    const tab = tabs.get(port);
    if (!tab) return;
    tabs.delete(port);
    for (const [id, t] of tokens) {
      if (t.port === port) {
        tokens.delete(id);
        t.settle(void 0);
      }
    }
    for (const room of tab.rooms) if (!wanted(room)) client?.leave(room).catch(() => {
    });
    if (tabs.size === 0) {
      client?.close();
      client = void 0;
      opened = void 0;
    }
  };
  const askToken = () => new Promise((resolve, reject) => {
    const port = [...tabs].find(([, t]) => t.asks)?.[0];
    if (!port) return reject(new Error("no tab to ask for a token"));
    const id = ++asked;
    const settle = (v) => {
      clearTimeout(timer);
      tokens.delete(id);
      return v ? resolve(v) : reject(new Error("no token"));
    };
    const timer = setTimeout(() => settle(void 0), 1e4);
    tokens.set(id, { port, settle });
    post(port, { op: "token", id });
  });
  const start = (url, opts, asks) => {
    const c = new Client(url, { ...opts, token: asks ? askToken : opts.token });
    for (const type of EVENTS2) {
      c.on(type, (payload) => {
        const wire = payload instanceof RoomcastError ? { code: payload.code, message: payload.message } : payload;
        if (type === "open") opened = wire;
        if (type === "close" && client === c) {
          client = void 0;
          opened = void 0;
        }
        for (const [port, tab] of tabs) {
          if (!ROOM_EVENTS.has(type) || tab.rooms.has(payload.room)) post(port, { event: type, payload: wire });
        }
      });
    }
    return c;
  };
  setInterval(() => {
    const now = Date.now();
    for (const [port, tab] of tabs) if (now - tab.seen > SILENT) drop(port);
  }, 5e3);
  scope.onconnect = (e) => {
    const port = e.ports[0];
    const tab = { rooms: /* @__PURE__ */ new Set(), seen: Date.now(), asks: false };
    tabs.set(port, tab);
    port.onmessage = async (ev) => {
      const m = ev.data;
      tab.seen = Date.now();
      if (!tabs.has(port) && m.op !== "bye") {
        const kept = new Set([...tab.rooms].filter(wanted));
        tabs.set(port, tab);
        if (!client && tab.hello) client = start(tab.hello.url, tab.hello.opts, tab.hello.asks);
        for (const room2 of tab.rooms) {
          client?.join(room2).then(
            (j) => kept.has(room2) || post(port, { event: "continuity_lost", payload: j }),
            () => tab.rooms.delete(room2)
          );
        }
      }
      switch (m.op) {
        case "hello":
          tab.asks = m.asks;
          tab.hello = m;
          client ?? (client = start(m.url, m.opts, m.asks));
          if (opened) post(port, { event: "open", payload: opened });
          return;
        case "alive":
          return;
        case "bye":
          return drop(port);
        case "token":
          tokens.get(m.id)?.settle(m.value);
          return;
      }
      if (!client) return post(port, { id: m.id, error: { code: "closed", message: "not connected" } });
      const [room, ...rest] = m.args;
      try {
        let value;
        if (m.op === "join") {
          tab.rooms.add(room);
          value = await client.join(room, rest[0]);
        } else if (m.op === "leave") {
          tab.rooms.delete(room);
          if (!wanted(room)) await client.leave(room);
        } else if (m.op === "publish") value = await client.publish(room, rest[0], rest[1]);
        else if (m.op === "presence") value = await client.presence(room);
        else if (m.op === "history") value = await client.history(room, rest[0]);
        post(port, { id: m.id, value });
      } catch (err) {
        if (m.op === "join") tab.rooms.delete(room);
        const e2 = err;
        post(port, { id: m.id, error: { code: e2.code ?? "error", message: e2.message } });
      }
    };
    port.start();
  };
}

// src/index.ts
function connect(url, options = {}) {
  const script = workerUrl(url, options.shared);
  return script ? new SharedClient(url, options, script) : new Client(url, options);
}
var g = globalThis;
if (typeof g.SharedWorkerGlobalScope === "function" && globalThis instanceof g.SharedWorkerGlobalScope) {
  host(globalThis);
}
export {
  Client,
  RoomcastError,
  SharedClient,
  connect
};

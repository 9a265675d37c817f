// The client: one logical connection to a roomcast server that survives the real ones.
//
// It keeps what the app asked for (the rooms, with their presence info and the position
// each has reached, and the requests not yet answered), and replays it on every new
// transport: rejoin each room with `since` its position, then send again what had no
// answer (a publish keeps its idempotency id, so the server stores it once). Messages
// at or before a room's position are duplicates and dropped, so the app sees each once,
// in order, or is told with `continuity_lost` that it cannot.

import { Emitter } from "./emitter.js";
import { PollTransport } from "./poll.js";
import { SseTransport } from "./sse.js";
import type { Dial, Ended, Transport } from "./transport.js";
import {
  type Events,
  type History,
  type HistoryOptions,
  type Joined,
  type JoinOptions,
  type Member,
  type Options,
  type Position,
  RoomcastError,
  type TransportName,
} from "./types.js";
import { WsTransport } from "./ws.js";

type Reply = Record<string, any>;

interface Request {
  ref: number;
  body: Reply;
  resolve(reply: Reply): void;
  reject(e: RoomcastError): void;
  tries: number;
}

interface Room {
  presence?: Record<string, unknown>;
  /** The last position delivered (or joined at). */
  pos?: Position;
  /** Joined on the current transport. */
  joined: boolean;
  waiters: [(j: Joined) => void, (e: RoomcastError) => void][];
}

/** What the close code advises (docs/protocol.md, "Close codes and reconnect advice"). */
function advice(code: number): "stop" | "now" | "later" | "token" {
  if ([1000, 1002, 1003, 1007, 1008, 1009, 1010, 4003].includes(code)) return "stop";
  if (code === 4001 || code === 4009) return "token";
  if (code === 1001 || code === 4008) return "now";
  return "later";
}

const ALL: TransportName[] = ["websocket", "sse", "poll"];
const makers: Record<TransportName, new (d: Dial) => Transport> = {
  websocket: WsTransport,
  sse: SseTransport,
  poll: PollTransport,
};

/** The HTTP base URL of a server given as `ws://`, `http://`, or relative to the page. */
export function baseUrl(url: string): string {
  const here = (globalThis as { location?: { href: string } }).location?.href;
  const u = new URL(url, here);
  u.protocol = u.protocol.replace(/^ws/, "http");
  return (u.origin + u.pathname).replace(/\/(ws)?$/, "").replace(/\/$/, "");
}

function hex(bytes: number): string {
  const a = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Client extends Emitter<Events> {
  /** The server's HTTP base URL. */
  readonly base: string;
  /** The client id: as given, or the one the server chose at the first connect. */
  client: string | undefined;
  /** The transport in use, while connected. */
  transport: TransportName | undefined;
  private t: Transport | undefined;
  private open = false;
  private everOpened = false;
  private stopped = false;
  private rooms = new Map<string, Room>();
  private queue: Request[] = [];
  private sent = new Map<number, Request>();
  private ref = 0;
  private ids = 0;
  private readonly idPrefix = hex(6);
  private attempt = 0;
  private openedAt = 0;
  private lastHeard = 0;
  private heartbeatMs = 25000;
  private pingedAt = 0;
  private blocked = new Map<TransportName, number>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private beat: ReturnType<typeof setInterval> | undefined;
  private readonly order: TransportName[];
  private readonly online = () => {
    if (!this.t && !this.stopped) this.connect();
  };

  constructor(
    url: string,
    private readonly opts: Options = {},
  ) {
    super();
    this.base = baseUrl(url);
    this.client = opts.client;
    const g = globalThis as Record<string, unknown>;
    const have: Record<TransportName, boolean> = {
      websocket: !!(opts.WebSocket ?? g.WebSocket),
      sse: !!(opts.EventSource ?? g.EventSource),
      poll: typeof fetch === "function",
    };
    this.order = (opts.transports ?? ALL).filter((n) => have[n]);
    if (typeof g.addEventListener === "function") {
      // Back online: try now rather than at the end of the backoff.
      (g.addEventListener as (t: string, f: () => void) => void)("online", this.online);
    }
    queueMicrotask(() => this.connect());
  }

  // ---- what the app calls ----

  /** Joins `room`: resolves with where the room stands once the server answered. After
   * a reconnect the client rejoins it by itself, from the last message it delivered. */
  join(room: string, options: JoinOptions = {}): Promise<Joined> {
    const known = this.rooms.get(room);
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new RoomcastError("closed", "the client is closed"));
      if (known) {
        if (known.joined && known.pos) resolve({ room, ...known.pos });
        else known.waiters.push([resolve, reject]);
        return;
      }
      const r: Room = { presence: options.presence, pos: options.since, joined: false, waiters: [[resolve, reject]] };
      this.rooms.set(room, r);
      if (this.open) this.t?.send([this.joinRequest(room, r)]);
    });
  }

  /** Leaves `room`: no more messages, no rejoin. */
  async leave(room: string): Promise<void> {
    const r = this.rooms.get(room);
    if (!r) return;
    this.rooms.delete(room);
    for (const [, reject] of r.waiters) reject(new RoomcastError("not_joined", `left ${room}`));
    if (!this.open) return;
    await this.request({ type: "leave", room }).catch((e: RoomcastError) => {
      if (e.code !== "not_joined") throw e;
    });
  }

  /** Publishes `data` to a joined room; resolves with its offset once the server stored
   * it. Retried with the same idempotency id across reconnects and `unavailable` or
   * `rate_limited` answers, so it is stored once. */
  async publish(room: string, data: unknown, options: { id?: string } = {}): Promise<number> {
    const id = options.id ?? `${this.idPrefix}-${++this.ids}`;
    const ack = await this.request({ type: "publish", room, data, id });
    return ack.offset;
  }

  /** Who is visibly in `room`. */
  async presence(room: string): Promise<Member[]> {
    return (await this.request({ type: "presence", room })).members;
  }

  /** The retained messages of `room` after `since` (from the oldest without it). */
  async history(room: string, options: HistoryOptions = {}): Promise<History> {
    const m = await this.request({ type: "history", room, since: options.since, limit: options.limit });
    return { room, epoch: m.epoch, messages: m.messages };
  }

  /** The position reached in `room` (the last message delivered, or where it was joined). */
  position(room: string): Position | undefined {
    return this.rooms.get(room)?.pos;
  }

  /** Closes the connection for good. */
  close(): void {
    this.stop(1000, "closed by the client");
  }

  // ---- connecting ----

  private pick(): TransportName {
    const now = Date.now();
    const usable = this.order.filter((n) => (this.blocked.get(n) ?? 0) < now);
    return usable[0] ?? this.order[0] ?? "websocket";
  }

  private async token(): Promise<string | undefined> {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }

  private async connect(): Promise<void> {
    if (this.stopped || this.t) return;
    clearTimeout(this.timer);
    const name = this.pick();
    let token: string | undefined;
    try {
      token = await this.token();
    } catch (e) {
      return this.retry({ code: 4001, reason: `token: ${e}`, opened: false });
    }
    if (this.stopped || this.t) return;
    let t: Transport;
    try {
      t = new makers[name]({
        base: this.base,
        client: this.client,
        token,
        WebSocket: this.opts.WebSocket,
        EventSource: this.opts.EventSource,
      });
    } catch (e) {
      // No such constructor here, a URL the runtime refuses (mixed content...).
      if (this.order.length === 0) return this.stop(1006, `no transport: ${e}`);
      this.blocked.set(name, Date.now() + 60000);
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
    }, this.opts.connectTimeout ?? 5000);
  }

  private lost(e: Ended): void {
    const t = this.t;
    this.t = undefined;
    this.open = false;
    this.transport = undefined;
    clearTimeout(this.timer);
    clearInterval(this.beat);
    // Unanswered requests go first once connected again; joins are redone from `rooms`.
    const unanswered = [...this.sent.values()].filter((r) => r.body.type !== "join");
    this.queue = [...unanswered.sort((a, b) => a.ref - b.ref), ...this.queue];
    this.sent.clear();
    for (const r of this.rooms.values()) r.joined = false;
    if (this.stopped) return;
    // A connection that lasted starts the backoff over; one that failed does not.
    if (e.opened && Date.now() - this.openedAt > 5000) this.attempt = 0;
    if (!e.opened && t && this.order.length > 1 && advice(e.code) === "later") {
      // Failed before the welcome: blocked on the way (fall back to the next transport at
      // once), or the server is down (wait and try the same again)?
      this.reachable().then((up) => {
        if (this.stopped || this.t) return;
        if (up) {
          this.blocked.set(t.name, Date.now() + 60000);
          if (this.pick() !== t.name) return this.connect();
        }
        this.retry(e);
      });
      return;
    }
    this.retry(e);
  }

  private retry(e: Ended): void {
    const a = advice(e.code);
    if (a === "stop" || (a === "token" && typeof this.opts.token !== "function")) {
      return this.stop(e.code, e.reason);
    }
    const min = this.opts.backoff?.min ?? 250;
    const max = this.opts.backoff?.max ?? 10000;
    const span = a === "now" && this.attempt === 0 ? min : Math.min(max, min * 2 ** this.attempt);
    // Half fixed, half random: a restarted node is not met by every client at once.
    const delay = Math.round(span / 2 + (Math.random() * span) / 2);
    this.attempt++;
    this.emit("reconnecting", { code: e.code, reason: e.reason, attempt: this.attempt, delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private async reachable(): Promise<boolean> {
    try {
      const resp = await fetch(`${this.base}/healthz`, { signal: AbortSignal.timeout(3000) });
      return resp.ok;
    } catch {
      return false;
    }
  }

  private stop(code: number, reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    g.removeEventListener?.("online", this.online);
    clearTimeout(this.timer);
    clearInterval(this.beat);
    this.t?.close();
    this.t = undefined;
    this.open = false;
    const err = new RoomcastError("closed", `closed: ${code} ${reason}`);
    for (const r of [...this.sent.values(), ...this.queue]) r.reject(err);
    for (const room of this.rooms.values()) for (const [, reject] of room.waiters) reject(err);
    this.sent.clear();
    this.queue = [];
    this.emit("close", { code, reason });
  }

  // ---- what the server sends ----

  private receive(m: Reply): void {
    this.lastHeard = Date.now();
    const ref = m.ref as number | undefined;
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
        if (ref === undefined) return this.reset(m);
        break;
      case "left":
        if (ref === undefined && this.rooms.delete(m.room)) return this.emit("left", { room: m.room });
        break;
      case "error":
        if (ref === undefined) return this.emit("error", new RoomcastError(m.code, m.message));
    }
    const r = ref === undefined ? undefined : this.sent.get(ref);
    if (!r) return; // an answer already taken (SSE and poll see a join's twice)
    this.sent.delete(r.ref);
    if (m.type !== "error") return r.resolve(m);
    const room = this.rooms.get(r.body.room);
    const again =
      m.code === "unavailable" ||
      m.code === "rate_limited" ||
      (m.code === "not_joined" && r.body.type === "publish" && room !== undefined);
    if (again && (r.body.type !== "join" || room?.joined === false) && r.tries < 1000) {
      // Transient: the same request again later (a publish with its id).
      r.tries++;
      setTimeout(() => this.submit(r), Math.min(5000, 100 * 2 ** Math.min(r.tries, 6)));
      return;
    }
    r.reject(new RoomcastError(m.code, m.message));
  }

  private welcome(m: Reply): void {
    if (this.open) return; // a poll cursor's new session: the server rejoined its rooms
    clearTimeout(this.timer);
    this.open = true;
    this.client = m.client;
    this.transport = this.t?.name;
    this.heartbeatMs = m.heartbeat_ms || 25000;
    this.openedAt = this.lastHeard;
    const reconnect = this.everOpened;
    this.everOpened = true;
    this.emit("open", { transport: this.transport!, client: m.client, session: m.session, node: m.node, reconnect });
    const out: Reply[] = [];
    for (const [name, room] of this.rooms) out.push(this.joinRequest(name, room));
    for (const r of this.queue) out.push(this.track(r));
    this.queue = [];
    this.t?.send(out);
    clearInterval(this.beat);
    this.beat = setInterval(() => this.liveness(), 2000);
    (this.beat as { unref?: () => void }).unref?.();
  }

  private message(m: Reply): void {
    const room = this.rooms.get(m.room);
    if (!room) return;
    const p = room.pos;
    if (p && p.epoch === m.epoch && m.offset <= p.offset) return; // seen already
    room.pos = { epoch: m.epoch, offset: m.offset };
    this.emit("message", { room: m.room, epoch: m.epoch, offset: m.offset, from: m.from, data: m.data, ts: m.ts });
  }

  /** A `joined` the server sent by itself: the room's history broke (`recovered:false`),
   * or a poll session was reopened from its cursor. */
  private reset(m: Reply): void {
    const room = this.rooms.get(m.room);
    if (!room) return;
    const j: Joined = { room: m.room, epoch: m.epoch, offset: m.offset, recovered: m.recovered };
    if (m.recovered === false || room.pos?.epoch !== m.epoch) room.pos = { epoch: m.epoch, offset: m.offset };
    this.emit(m.recovered === true ? "recovered" : "continuity_lost", j);
  }

  private joinRequest(name: string, room: Room, tries = 0): Reply {
    const since = room.pos;
    const r: Request = {
      ref: ++this.ref,
      body: { type: "join", room: name, presence: room.presence, since },
      tries,
      resolve: (m) => {
        if (this.rooms.get(name) !== room) return;
        room.joined = true;
        const j: Joined = { room: name, epoch: m.epoch, offset: m.offset, recovered: m.recovered };
        // Recovered: the missed messages follow, and count from where the room was.
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
      },
    };
    return this.track(r);
  }

  private track(r: Request): Reply {
    this.sent.set(r.ref, r);
    return { ...r.body, ref: r.ref };
  }

  private submit(r: Request): void {
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

  private request(body: Reply): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.submit({ ref: ++this.ref, body, resolve, reject, tries: 0 });
    });
  }

  private async refresh(): Promise<void> {
    if (typeof this.opts.token !== "function") return;
    try {
      await this.request({ type: "refresh", token: await this.token() });
    } catch (e) {
      this.emit("error", e instanceof RoomcastError ? e : new RoomcastError("unauthorized", String(e)));
    }
  }

  /** Browsers cannot see the server's pings: a connection silent for longer than the
   * heartbeat is asked, and given up 10 s later. */
  private liveness(): void {
    const now = Date.now();
    if (!this.open || now - this.lastHeard < this.heartbeatMs) return;
    // Given up only 10 s after a ping went unanswered (a throttled tab's timers may
    // come late: that alone is no reason).
    if (this.pingedAt > this.lastHeard && now - this.pingedAt > 10000) {
      this.t?.close();
      return this.lost({ code: 1006, reason: "no answer to ping", opened: true });
    }
    if (this.pingedAt <= this.lastHeard) {
      this.pingedAt = now;
      this.request({ type: "ping" }).catch(() => {});
    }
  }
}

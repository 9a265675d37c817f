// One connection for every tab of an origin: the client runs in a `SharedWorker`, and
// each tab talks to it through a port with the same API as `Client`.
//
// The worker joins a room while any tab wants it, and leaves it when the last such tab
// leaves or goes away (a tab says `bye` when its page is hidden for good, and one that
// stopped saying `alive` for 3 minutes is taken as gone: a hidden tab's timers may fire
// once a minute). A tab taken as gone that speaks again is taken back, with its rooms. Room events reach the tabs in that
// room; connection events reach every tab. A token function cannot cross a port, so the
// worker asks a tab for the token when it needs one.

import { baseUrl, Client } from "./client.js";
import { Emitter } from "./emitter.js";
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

const EVENTS: (keyof Events)[] = [
  "open",
  "message",
  "presence",
  "reconnecting",
  "recovered",
  "continuity_lost",
  "left",
  "close",
  "error",
];
const ROOM_EVENTS = new Set<keyof Events>(["message", "presence", "recovered", "continuity_lost", "left"]);

type Wire = Record<string, any>;

/** The SharedWorker script to use for `url`, or none (no SharedWorker, another origin). */
export function workerUrl(url: string, shared: Options["shared"]): string | undefined {
  const g = globalThis as { SharedWorker?: unknown; location?: { origin: string } };
  if (shared === false || typeof g.SharedWorker !== "function" || !g.location) return undefined;
  if (typeof shared === "string") return shared;
  const base = baseUrl(url);
  return new URL(base).origin === g.location.origin ? `${base}/roomcast.js` : undefined;
}

/** A tab's side: the API of `Client`, carried out by the worker. */
export class SharedClient extends Emitter<Events> {
  readonly base: string;
  client: string | undefined;
  transport: TransportName | undefined;
  private port: MessagePort;
  private calls = new Map<number, [(v: any) => void, (e: RoomcastError) => void]>();
  private n = 0;
  private positions = new Map<string, Position>();

  constructor(url: string, opts: Options, script: string) {
    super();
    this.base = baseUrl(url);
    this.client = opts.client;
    const W = (globalThis as unknown as { SharedWorker: typeof SharedWorker }).SharedWorker;
    const worker = new W(script, { name: `roomcast ${this.base} ${opts.client ?? ""}` });
    this.port = worker.port;
    this.port.onmessage = (e) => this.receive(e.data);
    this.port.start();
    const { token, WebSocket: _w, EventSource: _e, ...rest } = opts;
    this.port.postMessage({
      op: "hello",
      url,
      opts: { ...rest, shared: false, token: typeof token === "function" ? undefined : token },
      asks: typeof token === "function",
    });
    const tok = token;
    this.tokenFn = typeof tok === "function" ? tok : undefined;
    addEventListener("pagehide", (e) => {
      if (!(e as PageTransitionEvent).persisted) this.port.postMessage({ op: "bye" });
    });
    setInterval(() => this.port.postMessage({ op: "alive" }), 5000);
  }

  private tokenFn: (() => string | Promise<string>) | undefined;

  join(room: string, options: JoinOptions = {}): Promise<Joined> {
    return this.call("join", room, options);
  }
  leave(room: string): Promise<void> {
    return this.call("leave", room);
  }
  publish(room: string, data: unknown, options: { id?: string } = {}): Promise<number> {
    return this.call("publish", room, data, options);
  }
  presence(room: string): Promise<Member[]> {
    return this.call("presence", room);
  }
  history(room: string, options: HistoryOptions = {}): Promise<History> {
    return this.call("history", room, options);
  }
  position(room: string): Position | undefined {
    return this.positions.get(room);
  }
  /** Leaves this tab's rooms; the connection stays while other tabs use it. */
  close(): void {
    this.port.postMessage({ op: "bye" });
    this.emit("close", { code: 1000, reason: "closed by the client" });
  }

  private call<T>(op: string, ...args: unknown[]): Promise<T> {
    const id = ++this.n;
    return new Promise((resolve, reject) => {
      this.calls.set(id, [resolve, reject]);
      this.port.postMessage({ op, id, args });
    });
  }

  private async receive(m: Wire): Promise<void> {
    if (m.op === "token") {
      let value: string | undefined;
      try {
        value = await this.tokenFn?.();
      } catch {
        value = undefined;
      }
      return this.port.postMessage({ op: "token", id: m.id, value });
    }
    if (m.event) {
      const p = m.payload;
      if (m.event === "open") {
        this.client = p.client;
        this.transport = p.transport;
      }
      if (["message", "recovered", "continuity_lost"].includes(m.event) && p.epoch !== undefined) {
        const known = this.positions.get(p.room);
        // A recovered room goes on from the last message delivered here.
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
    const v = m.value as Joined | undefined;
    if (v && typeof v === "object" && "epoch" in v && "room" in v && !this.positions.has(v.room)) {
      this.positions.set(v.room, { epoch: v.epoch, offset: v.offset });
    }
    call[0](m.value);
  }
}

interface Tab {
  rooms: Set<string>;
  seen: number;
  asks: boolean;
  /// Its hello, to start the client again if it was the last tab and comes back.
  hello?: Wire;
}

/** How long a tab may say nothing before it is taken as gone (ms). */
const SILENT = 180000;

/** The worker's side: one `Client` for every tab that connects. */
export function host(scope: { onconnect: ((e: MessageEvent) => void) | null }): void {
  let client: Client | undefined;
  let opened: Wire | undefined;
  const tabs = new Map<MessagePort, Tab>();
  const tokens = new Map<number, { port: MessagePort; settle: (v: string | undefined) => void }>();
  let asked = 0;

  const post = (port: MessagePort, m: Wire) => port.postMessage(m);
  const wanted = (room: string) => [...tabs.values()].some((t) => t.rooms.has(room));

  const drop = (port: MessagePort) => {
    const tab = tabs.get(port);
    if (!tab) return;
    tabs.delete(port);
    for (const [id, t] of tokens) {
      if (t.port === port) {
        tokens.delete(id);
        t.settle(undefined);
      }
    }
    for (const room of tab.rooms) if (!wanted(room)) client?.leave(room).catch(() => {});
    if (tabs.size === 0) {
      client?.close();
      client = undefined;
      opened = undefined;
    }
  };

  const askToken = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const port = [...tabs].find(([, t]) => t.asks)?.[0];
      if (!port) return reject(new Error("no tab to ask for a token"));
      const id = ++asked;
      const settle = (v: string | undefined) => {
        clearTimeout(timer);
        tokens.delete(id);
        return v ? resolve(v) : reject(new Error("no token"));
      };
      // A tab that does not answer (frozen, gone) must not hold the connection.
      const timer = setTimeout(() => settle(undefined), 10000);
      tokens.set(id, { port, settle });
      post(port, { op: "token", id });
    });

  const start = (url: string, opts: Options, asks: boolean) => {
    const c = new Client(url, { ...opts, token: asks ? askToken : opts.token });
    for (const type of EVENTS) {
      c.on(type, (payload: any) => {
        const wire =
          payload instanceof RoomcastError ? { code: payload.code, message: payload.message } : payload;
        if (type === "open") opened = wire;
        if (type === "close" && client === c) {
          // Stopped for good (4003, a token refused...): the next tab starts afresh.
          client = undefined;
          opened = undefined;
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
  }, 5000);

  scope.onconnect = (e: MessageEvent) => {
    const port = e.ports[0]!;
    const tab: Tab = { rooms: new Set(), seen: Date.now(), asks: false };
    tabs.set(port, tab);
    port.onmessage = async (ev: MessageEvent) => {
      const m = ev.data as Wire;
      tab.seen = Date.now();
      if (!tabs.has(port) && m.op !== "bye") {
        // Taken as gone, yet here: back, with its rooms. A room no other tab kept was
        // left meanwhile, so what it missed is not known: the tab is told to refetch.
        const kept = new Set([...tab.rooms].filter(wanted));
        tabs.set(port, tab);
        if (!client && tab.hello) client = start(tab.hello.url, tab.hello.opts, tab.hello.asks);
        for (const room of tab.rooms) {
          client?.join(room).then(
            (j) => kept.has(room) || post(port, { event: "continuity_lost", payload: j }),
            () => tab.rooms.delete(room),
          );
        }
      }
      switch (m.op) {
        case "hello":
          tab.asks = m.asks;
          tab.hello = m;
          client ??= start(m.url, m.opts, m.asks);
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
      const [room, ...rest] = m.args as [string, ...any[]];
      try {
        let value: unknown;
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
        const e = err as RoomcastError;
        post(port, { id: m.id, error: { code: e.code ?? "error", message: e.message } });
      }
    };
    port.start();
  };
}

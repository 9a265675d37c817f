// The public types of the client: options, what the server sends, and the events.

/** A transport, in the order the client tries them. */
export type TransportName = "websocket" | "sse" | "poll";

/** A token, or a function giving the current one (called before each connect and
 * before the current token expires). */
export type TokenSource = string | (() => string | Promise<string>);

export interface Options {
  /** The client id (`hello.client`). Without one the server picks `anon-...`, and the
   * client keeps that id across reconnects. With a token, its `sub`. */
  client?: string;
  /** A JWT when the server requires one (see docs/protocol.md "Authentication"). */
  token?: TokenSource;
  /** Transports to try, in order (default: all three). */
  transports?: TransportName[];
  /** Share one connection between the tabs of an origin through a `SharedWorker`:
   * `true` (default where the browser has it and the page is on the server's origin),
   * `false`, or the URL of the client bundle to run in the worker. */
  shared?: boolean | string;
  /** Reconnect delays in ms: the first at most `min`, doubling up to `max`
   * (defaults 250 and 10000), each with jitter. */
  backoff?: { min?: number; max?: number };
  /** How long a transport may take to get its `welcome` before the next one is tried
   * (ms, default 5000). */
  connectTimeout?: number;
  /** Constructors for runtimes without them as globals (Node 20: `ws`'s WebSocket). */
  WebSocket?: unknown;
  EventSource?: unknown;
}

/** A position in a room's stream. */
export interface Position {
  epoch: string;
  offset: number;
}

/** A message published to a room. */
export interface Message {
  room: string;
  epoch: string;
  offset: number;
  from: string;
  data: unknown;
  ts: number;
}

export interface Member {
  client: string;
  info?: unknown;
}

/** Who joined and left a room (to members that joined with `presence`). */
export interface PresenceDiff {
  room: string;
  joined: Member[];
  left: Member[];
}

export interface JoinOptions {
  /** Join visibly, with this info, and receive `presence` events. */
  presence?: Record<string, unknown>;
  /** Start after this position (the client tracks positions itself after that). */
  since?: Position;
}

/** The answer to a join: where the room stands. `recovered` only when `since` was
 * given: `false` means the gap could not be filled. */
export interface Joined {
  room: string;
  epoch: string;
  offset: number;
  recovered?: boolean;
}

export interface HistoryOptions {
  since?: Position;
  limit?: number;
}

export interface History {
  room: string;
  epoch: string;
  messages: Message[];
}

export interface OpenEvent {
  transport: TransportName;
  client: string;
  session: string;
  node: string;
  /** Whether this is a reconnect. */
  reconnect: boolean;
}

export interface CloseEvent {
  code: number;
  reason: string;
}

export interface ReconnectingEvent extends CloseEvent {
  attempt: number;
  /** ms until the next attempt. */
  delay: number;
}

export interface Events {
  open: OpenEvent;
  message: Message;
  presence: PresenceDiff;
  /** The connection was lost; the client tries again after `delay`. */
  reconnecting: ReconnectingEvent;
  /** A room rejoined after a reconnect with every missed message (they follow as
   * `message` events, each once). */
  recovered: Joined;
  /** A room whose missed messages could not all be recovered: refetch its state.
   * Messages go on from `epoch`/`offset`. */
  continuity_lost: Joined;
  /** The server took the client out of a room (a refreshed token no longer allows it). */
  left: { room: string };
  /** For good: the client will not reconnect (close code advice, or `close()`). */
  close: CloseEvent;
  /** An error the server sent without a request to answer. */
  error: RoomcastError;
}

/** An error reply of the server (`code` as in docs/protocol.md), or `closed`. */
export class RoomcastError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = "RoomcastError";
  }
}

// What the client needs of a transport. The client speaks the `/ws` protocol's JSON
// objects over all three: a transport carries requests one way, and replies and pushes
// the other, whatever the wire.

import type { TransportName } from "./types.js";

/** How a transport ended: a WebSocket close code, or the one an HTTP answer maps to. */
export interface Ended {
  code: number;
  reason: string;
  /** Whether it had got as far as the server's `welcome`. */
  opened: boolean;
}

export interface Transport {
  readonly name: TransportName;
  /** Sends requests, in order. Their replies come through `onmessage`. */
  send(requests: object[]): void;
  /** Ends the transport; `onclose` is not called after this. */
  close(): void;
  onmessage: (msg: Record<string, unknown>) => void;
  onclose: (ended: Ended) => void;
}

export interface Dial {
  /** The server's HTTP base URL, without a trailing slash. */
  base: string;
  client: string | undefined;
  token: string | undefined;
  WebSocket: unknown;
  EventSource: unknown;
}

/** The close code an HTTP status stands for, so that one table of advice covers every
 * transport (docs/protocol.md, "Close codes and reconnect advice"). */
export function codeOf(status: number): number {
  switch (status) {
    case 401:
      return 4001;
    case 403:
      return 4003;
    case 404:
      return 1001; // the session is gone: open another at once
    case 429:
      return 4029;
    case 503:
      return 1013;
    default:
      return 1006;
  }
}

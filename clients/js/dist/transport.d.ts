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
export declare function codeOf(status: number): number;

import { type Dial, type Ended, type Transport } from "./transport.js";
import type { TransportName } from "./types.js";
export declare abstract class HttpTransport implements Transport {
    protected dial: Dial;
    abstract readonly name: TransportName;
    onmessage: Transport["onmessage"];
    onclose: Transport["onclose"];
    protected session: string | undefined;
    protected done: boolean;
    protected abort: AbortController;
    private waiting;
    private posting;
    constructor(dial: Dial);
    /** The query of the request that opens the session. */
    protected opening(): string;
    /** Hands on an event of the session's stream. */
    protected event(msg: Record<string, unknown>): void;
    send(requests: object[]): void;
    private flush;
    close(): void;
    protected end(ended: Ended): void;
}

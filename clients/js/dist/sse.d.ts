import { HttpTransport } from "./http.js";
import type { Dial } from "./transport.js";
export declare class SseTransport extends HttpTransport {
    readonly name: "sse";
    private es;
    constructor(dial: Dial);
    close(): void;
}

import type { Dial, Transport } from "./transport.js";
export declare class WsTransport implements Transport {
    readonly name: "websocket";
    onmessage: Transport["onmessage"];
    onclose: Transport["onclose"];
    private ws;
    private opened;
    private socketOpen;
    private done;
    constructor(dial: Dial);
    send(requests: object[]): void;
    close(): void;
    private end;
}

// The WebSocket transport: `/ws`, a `hello` first, then one JSON object per text frame.

import type { Dial, Ended, Transport } from "./transport.js";

interface Socket {
  readyState: number;
  onopen: ((e: unknown) => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export class WsTransport implements Transport {
  readonly name = "websocket" as const;
  onmessage: Transport["onmessage"] = () => {};
  onclose: Transport["onclose"] = () => {};
  private ws: Socket;
  private opened = false;
  private socketOpen = false;
  private done = false;

  constructor(dial: Dial) {
    const Ws = (dial.WebSocket ?? globalThis.WebSocket) as new (url: string) => Socket;
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
    // A refused handshake: browsers follow with a close event, Node's undici may not.
    this.ws.onerror = () => {
      if (!this.socketOpen) this.end({ code: 1006, reason: "handshake failed", opened: false });
    };
  }

  send(requests: object[]): void {
    if (this.done || this.ws.readyState !== 1) return;
    for (const r of requests) this.ws.send(JSON.stringify(r));
  }

  close(): void {
    this.done = true;
    try {
      this.ws.close(1000);
    } catch {
      // Already closing.
    }
  }

  private end(ended: Ended): void {
    if (this.done) return;
    this.done = true;
    this.onclose(ended);
  }
}

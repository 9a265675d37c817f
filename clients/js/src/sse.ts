// Server-Sent Events: `GET /sse` for the stream, `POST /cmd` for the commands. The
// client reconnects by itself (the EventSource is closed at its first error, so that it
// neither gives up for good nor opens a session the client does not know of).

import { HttpTransport } from "./http.js";
import type { Dial } from "./transport.js";

interface Source {
  readyState: number;
  onerror: ((e: unknown) => void) | null;
  addEventListener(type: string, fn: (e: { data?: string }) => void): void;
  close(): void;
}

const EVENTS = ["welcome", "joined", "message", "presence_diff", "token_expiring", "left", "error", "closed"];

export class SseTransport extends HttpTransport {
  readonly name = "sse" as const;
  private es: Source;

  constructor(dial: Dial) {
    super(dial);
    const Es = (dial.EventSource ?? globalThis.EventSource) as new (url: string) => Source;
    this.es = new Es(`${dial.base}/sse?${this.opening()}`);
    for (const type of EVENTS) {
      this.es.addEventListener(type, (e) => {
        // A connection error is an "error" event too, without data.
        if (typeof e.data !== "string") return;
        try {
          this.event(JSON.parse(e.data));
        } catch {
          // Not JSON: nothing the server sends.
        }
      });
    }
    this.es.onerror = () => {
      this.end({ code: 1006, reason: "event stream ended", opened: this.session !== undefined });
    };
  }

  override close(): void {
    super.close();
    this.es.close();
  }
}

// What SSE and long-polling share: the session's commands, sent with `POST /cmd` one
// batch at a time (so they reach the server in order), their replies handed back like
// a WebSocket's.

import { codeOf, type Dial, type Ended, type Transport } from "./transport.js";
import type { TransportName } from "./types.js";

export abstract class HttpTransport implements Transport {
  abstract readonly name: TransportName;
  onmessage: Transport["onmessage"] = () => {};
  onclose: Transport["onclose"] = () => {};
  protected session: string | undefined;
  protected done = false;
  protected abort = new AbortController();
  private waiting: object[] = [];
  private posting = false;

  constructor(protected dial: Dial) {}

  /** The query of the request that opens the session. */
  protected opening(): string {
    const q = new URLSearchParams();
    if (this.dial.client) q.set("client", this.dial.client);
    if (this.dial.token) q.set("token", this.dial.token);
    return q.toString();
  }

  /** Hands on an event of the session's stream. */
  protected event(msg: Record<string, unknown>): void {
    if (this.done) return;
    if (msg.type === "closed") {
      // The server ended the session, and says why as a WebSocket close code.
      return this.end({ code: msg.code as number, reason: msg.reason as string, opened: true });
    }
    if (msg.type === "welcome") {
      this.session = msg.session as string;
      this.flush();
    }
    this.onmessage(msg);
  }

  send(requests: object[]): void {
    this.waiting.push(...requests);
    this.flush();
  }

  private async flush(): Promise<void> {
    if (this.posting || !this.session || this.done || this.waiting.length === 0) return;
    // At most about 256 KiB of JSON a POST (the server takes bodies up to 1 MiB), one
    // command at least; the rest follows in the next.
    let size = 0;
    let n = 0;
    while (n < this.waiting.length && (n === 0 || size < 256 * 1024)) {
      size += JSON.stringify(this.waiting[n]).length;
      n++;
    }
    const batch = this.waiting.splice(0, n);
    this.posting = true;
    try {
      // text/plain keeps a cross-origin POST "simple": no preflight round trip.
      const resp = await fetch(
        `${this.dial.base}/cmd?session=${encodeURIComponent(this.session)}`,
        {
          method: "POST",
          body: JSON.stringify(batch),
          headers: { "content-type": "text/plain;charset=utf-8" },
          signal: this.abort.signal,
        },
      );
      if (!resp.ok) return this.end({ code: codeOf(resp.status), reason: `/cmd ${resp.status}`, opened: true });
      const replies = await resp.json();
      for (const r of Array.isArray(replies) ? replies : [replies]) this.event(r);
    } catch (e) {
      return this.end({ code: 1006, reason: String(e), opened: true });
    } finally {
      this.posting = false;
    }
    this.flush();
  }

  close(): void {
    this.done = true;
    this.abort.abort();
  }

  protected end(ended: Ended): void {
    if (this.done) return;
    this.close();
    this.onclose(ended);
  }
}

// Long-polling: `GET /poll` opens the session and every answer's cursor acknowledges the
// events before it; `POST /cmd` carries the commands.

import { HttpTransport } from "./http.js";
import { codeOf, type Dial } from "./transport.js";

/** How long one poll may wait on the server (ms). */
const WAIT = 20000;

export class PollTransport extends HttpTransport {
  readonly name = "poll" as const;

  constructor(dial: Dial) {
    super(dial);
    this.loop();
  }

  private async loop(): Promise<void> {
    let query = `${this.opening()}&timeout_ms=0`;
    while (!this.done) {
      let answer;
      try {
        const resp = await fetch(`${this.dial.base}/poll?${query}`, { signal: this.abort.signal });
        if (!resp.ok) {
          return this.end({ code: codeOf(resp.status), reason: `/poll ${resp.status}`, opened: this.session !== undefined });
        }
        answer = await resp.json();
      } catch (e) {
        return this.end({ code: 1006, reason: String(e), opened: this.session !== undefined });
      }
      // A cursor whose session ended opens a new one on the server, rejoined from the
      // cursor's positions: its welcome and joined events say so, and the client goes on.
      for (const event of answer.events ?? []) this.event(event);
      if (answer.closed) {
        return this.end({ code: answer.code ?? 1001, reason: answer.reason ?? "poll session closed", opened: true });
      }
      query = `cursor=${encodeURIComponent(answer.cursor)}&timeout_ms=${WAIT}`;
      if (this.dial.token) query += `&token=${encodeURIComponent(this.dial.token)}`;
    }
  }
}

import { HttpTransport } from "./http.js";
import { type Dial } from "./transport.js";
export declare class PollTransport extends HttpTransport {
    readonly name: "poll";
    constructor(dial: Dial);
    private loop;
}

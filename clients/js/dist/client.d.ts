import { Emitter } from "./emitter.js";
import { type Events, type History, type HistoryOptions, type Joined, type JoinOptions, type Member, type Options, type Position, type TransportName } from "./types.js";
/** The HTTP base URL of a server given as `ws://`, `http://`, or relative to the page. */
export declare function baseUrl(url: string): string;
export declare class Client extends Emitter<Events> {
    private readonly opts;
    /** The server's HTTP base URL. */
    readonly base: string;
    /** The client id: as given, or the one the server chose at the first connect. */
    client: string | undefined;
    /** The transport in use, while connected. */
    transport: TransportName | undefined;
    private t;
    private open;
    private everOpened;
    private stopped;
    private rooms;
    private queue;
    private sent;
    private ref;
    private ids;
    private readonly idPrefix;
    private attempt;
    private openedAt;
    private lastHeard;
    private heartbeatMs;
    private pingedAt;
    private blocked;
    private timer;
    private beat;
    private readonly order;
    private readonly online;
    constructor(url: string, opts?: Options);
    /** Joins `room`: resolves with where the room stands once the server answered. After
     * a reconnect the client rejoins it by itself, from the last message it delivered. */
    join(room: string, options?: JoinOptions): Promise<Joined>;
    /** Leaves `room`: no more messages, no rejoin. */
    leave(room: string): Promise<void>;
    /** Publishes `data` to a joined room; resolves with its offset once the server stored
     * it. Retried with the same idempotency id across reconnects and `unavailable` or
     * `rate_limited` answers, so it is stored once. */
    publish(room: string, data: unknown, options?: {
        id?: string;
    }): Promise<number>;
    /** Who is visibly in `room`. */
    presence(room: string): Promise<Member[]>;
    /** The retained messages of `room` after `since` (from the oldest without it). */
    history(room: string, options?: HistoryOptions): Promise<History>;
    /** The position reached in `room` (the last message delivered, or where it was joined). */
    position(room: string): Position | undefined;
    /** Closes the connection for good. */
    close(): void;
    private pick;
    private token;
    private connect;
    private lost;
    private retry;
    private reachable;
    private stop;
    private receive;
    private welcome;
    private message;
    /** A `joined` the server sent by itself: the room's history broke (`recovered:false`),
     * or a poll session was reopened from its cursor. */
    private reset;
    private joinRequest;
    private track;
    private submit;
    private request;
    private refresh;
    /** Browsers cannot see the server's pings: a connection silent for longer than the
     * heartbeat is asked, and given up 10 s later. */
    private liveness;
}

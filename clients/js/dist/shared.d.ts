import { Emitter } from "./emitter.js";
import { type Events, type History, type HistoryOptions, type Joined, type JoinOptions, type Member, type Options, type Position, type TransportName } from "./types.js";
/** The SharedWorker script to use for `url`, or none (no SharedWorker, another origin). */
export declare function workerUrl(url: string, shared: Options["shared"]): string | undefined;
/** A tab's side: the API of `Client`, carried out by the worker. */
export declare class SharedClient extends Emitter<Events> {
    readonly base: string;
    client: string | undefined;
    transport: TransportName | undefined;
    private port;
    private calls;
    private n;
    private positions;
    constructor(url: string, opts: Options, script: string);
    private tokenFn;
    join(room: string, options?: JoinOptions): Promise<Joined>;
    leave(room: string): Promise<void>;
    publish(room: string, data: unknown, options?: {
        id?: string;
    }): Promise<number>;
    presence(room: string): Promise<Member[]>;
    history(room: string, options?: HistoryOptions): Promise<History>;
    position(room: string): Position | undefined;
    /** Leaves this tab's rooms; the connection stays while other tabs use it. */
    close(): void;
    private call;
    private receive;
}
/** The worker's side: one `Client` for every tab that connects. */
export declare function host(scope: {
    onconnect: ((e: MessageEvent) => void) | null;
}): void;

import { Client } from "./client.js";
import { SharedClient } from "./shared.js";
import type { Options } from "./types.js";
export { Client } from "./client.js";
export { SharedClient } from "./shared.js";
export * from "./types.js";
/** What `connect` gives: a `Client`, or in a browser tab sharing the connection, its
 * stand-in with the same API. */
export type Connection = Client | SharedClient;
/**
 * Connects to a roomcast server (`ws://`, `wss://`, `http://`, `https://`, or a path of
 * the page's own server) and stays connected: reconnects, rejoins every room where it
 * was, and sends again what had no answer. In a browser that has `SharedWorker`, every
 * tab of the server's origin shares one connection.
 */
export declare function connect(url: string, options?: Options): Connection;

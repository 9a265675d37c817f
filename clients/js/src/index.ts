// roomcast's client for browsers and Node: `connect(url, options)`.

import { Client } from "./client.js";
import { host, SharedClient, workerUrl } from "./shared.js";
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
export function connect(url: string, options: Options = {}): Connection {
  const script = workerUrl(url, options.shared);
  return script ? new SharedClient(url, options, script) : new Client(url, options);
}

// Loaded as a SharedWorker's script: serve the tabs.
const g = globalThis as { SharedWorkerGlobalScope?: { new (): unknown }; onconnect?: unknown };
if (typeof g.SharedWorkerGlobalScope === "function" && globalThis instanceof g.SharedWorkerGlobalScope) {
  host(globalThis as unknown as { onconnect: null });
}

// What the client's tests share: a real `roomcast serve` on a free loopback port, a TCP
// proxy in front of it that a test can cut, and small waiting helpers.
import { spawn } from "node:child_process";
import { createServer, connect as tcp } from "node:net";
import { fileURLToPath } from "node:url";
import { createHmac } from "node:crypto";

const root = fileURLToPath(new URL("../../..", import.meta.url));
export const BIN = process.env.ROOMCAST_BIN ?? `${root}target/debug/roomcast`;

// Every server a test started dies with the test process, whatever a test left behind.
const children = new Set();
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

/** Starts `roomcast serve` with `args`; resolves once it listens. */
export function serve(args = [], port = 0) {
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--log", "warn", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return new Promise((resolve, reject) => {
    let out = "";
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`roomcast serve exited with ${code}`)));
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on ([\d.]+:\d+)/);
      if (m) {
        child.removeAllListeners("exit");
        resolve({
          child,
          addr: m[1],
          url: `http://${m[1]}`,
          // Gone already: an exit code, or the signal that ended it.
          stop: () => new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : (child.once("exit", r), child.kill("SIGKILL")))),
          drain: () => new Promise((r) => (child.once("exit", r), child.kill("SIGTERM"))),
        });
      }
    });
  });
}

/** A TCP proxy to `addr` on a free port: `cut()` drops every connection through it,
 * `mute(true)` stops passing what the server sends (the client hears nothing). */
export function proxy(addr) {
  const [host, port] = addr.split(":");
  const conns = new Set();
  let muted = false;
  let refusing = false;
  const server = createServer((down) => {
    if (refusing) return down.destroy();
    const up = tcp(Number(port), host);
    conns.add(down);
    conns.add(up);
    down.on("data", (d) => up.write(d));
    up.on("data", (d) => muted || down.write(d));
    for (const s of [up, down]) {
      s.on("error", () => {});
      s.on("close", () => {
        up.destroy();
        down.destroy();
        conns.delete(s);
      });
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        connections: () => conns.size / 2,
        cut() {
          for (const s of conns) s.destroy();
        },
        mute(on) {
          muted = on;
        },
        refuse(on) {
          refusing = on;
        },
        close() {
          for (const s of conns) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

/** Resolves once `cond()` is true, checking every 20 ms; fails after `ms`. */
export async function until(cond, ms = 10000, what = "condition") {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The next `type` event of `client`. */
export function next(client, type, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${type} event in ${ms} ms`)), ms);
    const off = client.on(type, (e) => {
      clearTimeout(t);
      off();
      resolve(e);
    });
  });
}

/** An HS256 JWT (RFC 7519) for the tests' own secret. */
export function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** Collects the messages a client gets, by room. */
export function collect(client) {
  const got = [];
  client.on("message", (m) => got.push(m));
  return got;
}

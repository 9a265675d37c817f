// Debian's Chromium driven by playwright-core (no browser download), and a real Redis
// for the tests that restart a node. The server harness is the JS client's.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export * from "../../clients/js/test/harness.mjs";

/** Chromium, with `extra` flags beside ours. */
export function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // As root in a container; and nothing that would reach out of the machine.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extra,
    ],
  });
}

/** A page on the server at `url` with the client loaded (`Roomcast` global). */
export async function tab(context, url) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${url}/healthz`);
  await page.addScriptTag({ url: "/roomcast.js" });
  return page;
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** `redis-server` on a free loopback port, without persistence; stopped by its pid. */
export async function redis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "roomcast-redis-"));
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  process.on("exit", () => child.kill("SIGKILL"));
  await new Promise((resolve, reject) => {
    child.on("error", reject);
    child.stdout.on("data", (d) => String(d).includes("Ready to accept") && resolve());
  });
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill("SIGKILL") };
}

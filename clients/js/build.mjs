// Builds the client: dist/roomcast.mjs (ES module, for npm), dist/roomcast.js (minified,
// a script that defines `Roomcast`, and the SharedWorker's script; the server embeds it
// and serves it at /roomcast.js) and the type declarations (tsc).
//
//   node build.mjs           build
//   node build.mjs --check   build into a temporary folder and fail if dist/ differs
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "roomcast-js-")) : "dist";
const common = { entryPoints: ["src/index.ts"], bundle: true, target: "es2020", legalComments: "none", logLevel: "warning" };
await build({ ...common, format: "esm", outfile: `${out}/roomcast.mjs` });
await build({ ...common, format: "iife", globalName: "Roomcast", minify: true, outfile: `${out}/roomcast.js` });
execFileSync("node_modules/.bin/tsc", ["--outDir", out], { stdio: "inherit" });

const min = readFileSync(`${out}/roomcast.js`);
console.log(`roomcast.js: ${min.length} bytes minified, ${gzipSync(min, { level: 9 }).length} gzipped`);
if (check) {
  const stale = readdirSync(out).filter((f) => {
    try {
      return !readFileSync(`dist/${f}`).equals(readFileSync(`${out}/${f}`));
    } catch {
      return true;
    }
  });
  if (stale.length) {
    console.error(`dist/ is not what the sources build (${stale.join(", ")}): run npm run build and commit dist/`);
    process.exit(1);
  }
  console.log("dist/ matches a fresh build");
}

#!/usr/bin/env bash
# The hot path over TLS beside plain TCP, in one run: fan-out and echo against the same
# build, once with `serve --tls-self-signed` (wss://) and once plain (ws://), alternating
# rounds; server CPU per delivery / per message (median of the rounds) and the ratio.
#
#   bench/tls.sh            (ROOMCAST_BIN, default target/release/roomcast; ROUNDS, 3)
#
# The server runs on core 0 with one worker, the load generator on core 1. The bench
# does not check the server's certificate (it measures its own loopback server). Its
# own TLS work runs on core 1, so the server's figure is the server's alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/listening.sh
. scripts/lib/listening.sh
BIN=${ROOMCAST_BIN:-target/release/roomcast} ROUNDS=${ROUNDS:-3}
[ -x "$BIN" ] || cargo build --release -p roomcast
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
one() { # transport scenario: one bench run against a fresh server, its JSON
  local tls=() scheme=ws
  if [ "$1" = tls ]; then tls=(--tls-self-signed); scheme=wss; fi
  taskset -c 0 "$BIN" serve --listen 127.0.0.1:0 --workers 1 --echo --log warn "${tls[@]}" >"$LOG" 2>&1 &
  local pid=$! port
  port=$(listening_port "$LOG" "$pid")
  if [ "$2" = fanout ]; then
    taskset -c 1 "$BIN" bench --threads 1 fanout --url "$scheme://127.0.0.1:$port/ws" -n 1000 -m 2000 \
      --size 64 --window 16 --server-pid "$pid" --json
  else
    taskset -c 1 "$BIN" bench --threads 1 echo --url "$scheme://127.0.0.1:$port/echo" -c 100 -s 64 \
      -m 100000 --server-pid "$pid" --json
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for round in $(seq "$ROUNDS"); do
  for scenario in fanout echo; do
    for transport in plain tls; do
      echo "{\"round\":$round,\"scenario\":\"$scenario\",\"transport\":\"$transport\",\"result\":$(one "$transport" "$scenario")}"
    done
  done
done | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
bad = [r for r in rows if not r["result"].get("ok", True) or r["result"].get("lost")]
for scenario, key in (("fanout", "server_cpu_us_per_delivery"), ("echo", "server_cpu_us_per_message")):
    med = {}
    for transport in ("plain", "tls"):
        vals = [r["result"][key] for r in rows if r["scenario"] == scenario and r["transport"] == transport]
        med[transport] = statistics.median(vals)
        print(f"{scenario} {transport}: {key} {[round(v, 3) for v in vals]} median {med[transport]:.3f}")
    ratio = med["tls"] / med["plain"]
    print(f"{scenario}: tls/plain {ratio:.2f}x")
sys.exit(1 if bad else 0)
'

#!/usr/bin/env bash
# Two builds of roomcast side by side in one run, on the memory engine: fan-out and echo,
# alternating rounds, server CPU per delivery / per message (median of the rounds).
#
#   bench/versus.sh OLD_BINARY NEW_BINARY      e.g. after
#   git worktree add /tmp/old REV && CARGO_TARGET_DIR=target/old cargo build --release -p roomcast
#
# The server runs on core 0 with one worker, the load generator (the new build's bench) on
# core 1. Environment: ROUNDS (3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/listening.sh
. scripts/lib/listening.sh
OLD=${1:?old binary} NEW=${2:?new binary} ROUNDS=${ROUNDS:-3}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
one() { # binary scenario: one bench run against a fresh server, its JSON
  taskset -c 0 "$1" serve --listen 127.0.0.1:0 --workers 1 --echo --log warn >"$LOG" 2>&1 &
  local pid=$! port
  port=$(listening_port "$LOG" "$pid")
  if [ "$2" = fanout ]; then
    taskset -c 1 "$NEW" bench --threads 1 fanout --url "ws://127.0.0.1:$port/ws" -n 1000 -m 2000 \
      --size 64 --window 16 --server-pid "$pid" --json
  else
    taskset -c 1 "$NEW" bench --threads 1 echo --url "ws://127.0.0.1:$port/echo" -c 100 -s 64 \
      -m 100000 --server-pid "$pid" --json
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for round in $(seq "$ROUNDS"); do
  for scenario in fanout echo; do
    for build in old new; do
      bin=$OLD; [ "$build" = new ] && bin=$NEW
      echo "{\"round\":$round,\"scenario\":\"$scenario\",\"build\":\"$build\",\"result\":$(one "$bin" "$scenario")}"
    done
  done
done | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
bad = [r for r in rows if not r["result"].get("ok", True) or r["result"].get("lost")]
for scenario, key in (("fanout", "server_cpu_us_per_delivery"), ("echo", "server_cpu_us_per_message")):
    med = {}
    for build in ("old", "new"):
        vals = [r["result"][key] for r in rows if r["scenario"] == scenario and r["build"] == build]
        med[build] = statistics.median(vals)
        print(f"{scenario} {build}: {key} {[round(v, 3) for v in vals]} median {med[build]:.3f}")
    new, old = med["new"], med["old"]
    print(f"{scenario}: new/old {new / old:.2f}x")
sys.exit(1 if bad else 0)
'

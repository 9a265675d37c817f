# shellcheck shell=bash
# Sourced by bench/versus.sh and bench/tls.sh: two sides measured alternately in one run,
# fan-out and echo on a fresh one-worker server each time (server on core 0, load
# generator on core 1), and the medians of server CPU per delivery / per message with
# the ratio of the second side to the first.
#
#   pair_one SERVER_BIN LOADGEN_BIN SCENARIO SCHEME [SERVE_ARGS...]   one run's JSON
#   pair_row ROUND SCENARIO SIDE SERVER_BIN LOADGEN_BIN SCHEME [SERVE_ARGS...]   one row
#   pair_summary A B < rows                                          medians and B/A
#
# Rows are JSON lines {"round","scenario","side","result"}.
# shellcheck source=scripts/lib/listening.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/listening.sh"

pair_one() {
  local server=$1 loadgen=$2 scenario=$3 scheme=$4 log pid port
  shift 4
  log=$(mktemp)
  taskset -c 0 "$server" serve --listen 127.0.0.1:0 --workers 1 --echo --log warn "$@" >"$log" 2>&1 &
  pid=$!
  port=$(listening_port "$log" "$pid")
  if [ "$scenario" = fanout ]; then
    taskset -c 1 "$loadgen" bench --threads 1 fanout --url "$scheme://127.0.0.1:$port/ws" -n 1000 -m 2000 \
      --size 64 --window 16 --server-pid "$pid" --json
  else
    taskset -c 1 "$loadgen" bench --threads 1 echo --url "$scheme://127.0.0.1:$port/echo" -c 100 -s 64 \
      -m 100000 --server-pid "$pid" --json
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$log"
}

pair_row() {
  local round=$1 scenario=$2 side=$3 server=$4 loadgen=$5 scheme=$6
  shift 6
  echo "{\"round\":$round,\"scenario\":\"$scenario\",\"side\":\"$side\",\"result\":$(pair_one "$server" "$loadgen" "$scenario" "$scheme" "$@")}"
}

pair_summary() {
  python3 -c '
import json, statistics, sys
a, b = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in sys.stdin]
bad = [r for r in rows if not r["result"].get("ok", True) or r["result"].get("lost")]
for scenario, key in (("fanout", "server_cpu_us_per_delivery"), ("echo", "server_cpu_us_per_message")):
    med = {}
    for side in (a, b):
        vals = [r["result"][key] for r in rows if r["scenario"] == scenario and r["side"] == side]
        med[side] = statistics.median(vals)
        print(f"{scenario} {side}: {key} {[round(v, 3) for v in vals]} median {med[side]:.3f}")
    ratio = med[b] / med[a]
    print(f"{scenario}: {b}/{a} {ratio:.2f}x")
sys.exit(1 if bad else 0)
' "$1" "$2"
}

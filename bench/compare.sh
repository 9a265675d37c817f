#!/usr/bin/env bash
# Measures roomcast beside peer servers built from registries, the same scenarios for
# each, alternating servers, several rounds; prints medians, ranges and ratios.
#
#   bench/compare.sh                 full run (3 rounds, a few minutes)
#   bench/compare.sh --quick         one small round: checks that everything runs
#   ROUNDS=5 bench/compare.sh        more rounds
#   bench/compare.sh --only echo64   one scenario (fanout, echo64, echo16k, connect, connect19k)
#
# Peers: tokio-tungstenite 0.30 (echo, and a broadcast server on tokio::sync::broadcast),
# fastwebsockets 0.10 (echo, through hyper), Node ws 8.23 (echo and broadcast); sources in
# bench/peers/. Each run starts a fresh server pinned to CPU 0 (taskset), the load generator
# (`roomcast bench`, one thread) pinned to CPU 1, and reads the server's CPU time and memory
# from /proc. Results: target/bench/<time>/results.jsonl and summary.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
  shift
done
ROUNDS="${ROUNDS:-3}"
[ "$QUICK" = 1 ] && ROUNDS=1
OUT="$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

echo "==> building roomcast and the peers" >&2
cargo build --release --quiet -p roomcast
cargo build --release --quiet --manifest-path bench/peers/rust/Cargo.toml
[ -f bench/peers/node/node_modules/ws/package.json ] || (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)
ROOMCAST="$ROOT/target/release/roomcast"
PEERS="$ROOT/bench/peers/rust/target/release"

PIN_SERVER=(); PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# start SERVER PORT: starts a server, sets PID and the endpoint paths it serves.
start() {
  local server="$1" port="$2"
  case "$server" in
    roomcast|roomcast-ws|roomcast-raw)
      "${PIN_SERVER[@]}" "$ROOMCAST" serve --listen "127.0.0.1:$port" --echo --log warn &
      ECHO_PATH=/echo; BROADCAST_PATH=/rooms/bench; PUBLISHER_PATH="/rooms/bench?echo=1"; CONNECT_PATH=/ws ;;
    tungstenite)
      "${PIN_SERVER[@]}" "$PEERS/tungstenite-echo" "127.0.0.1:$port" 2>/dev/null &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    tungstenite-broadcast)
      "${PIN_SERVER[@]}" "$PEERS/tungstenite-broadcast" "127.0.0.1:$port" 2>/dev/null &
      BROADCAST_PATH=/; PUBLISHER_PATH=/ ;;
    fastwebsockets)
      "${PIN_SERVER[@]}" "$PEERS/fastwebsockets-echo" "127.0.0.1:$port" 2>/dev/null &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    node-ws)
      "${PIN_SERVER[@]}" node bench/peers/node/server.js echo "$port" 2>/dev/null &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    node-ws-broadcast)
      "${PIN_SERVER[@]}" node bench/peers/node/server.js broadcast "$port" 2>/dev/null &
      BROADCAST_PATH=/; PUBLISHER_PATH=/ ;;
  esac
  PID=$!
  wait_port "$port" || { echo "$server did not start" >&2; return 1; }
}

# measure SCENARIO SERVER ROUND BENCH_ARGS...: one run, one JSON line.
measure() {
  local scenario="$1" server="$2" round="$3"; shift 3
  local port; port=$(free_port)
  start "$server" "$port"
  local args=("$@")
  args=("${args[@]//PORT/$port}")
  args=("${args[@]//ECHO_PATH/${ECHO_PATH:-}}")
  args=("${args[@]//PUBLISHER_PATH/${PUBLISHER_PATH:-}}")
  args=("${args[@]//BROADCAST_PATH/${BROADCAST_PATH:-}}")
  args=("${args[@]//CONNECT_PATH/${CONNECT_PATH:-}}")
  local line
  if line=$("${PIN_LOAD[@]}" "$ROOMCAST" bench "${args[@]}" --threads 1 --json --server-pid "$PID" 2>>"$OUT/bench.log"); then :; else
    echo "  $scenario $server round $round: the bench reported a failure (see $OUT/bench.log)" >&2
  fi
  kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
  [ -n "$line" ] || line='{}'
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(case=sys.argv[2], server=sys.argv[3], round=int(sys.argv[4])); print(json.dumps(r))' \
    "$line" "$scenario" "$server" "$round" >> "$RESULTS"
  echo "  $scenario  $server  round $round done" >&2
}

if [ "$QUICK" = 1 ]; then
  SUBS=50; MSGS=300; ECHO_C=10; ECHO_M=3000; ECHO_BIG_M=500; CONNS=200; BIG_CONNS=300
else
  SUBS=1000; MSGS=2000; ECHO_C=100; ECHO_M=100000; ECHO_BIG_M=20000; CONNS=10000; BIG_CONNS=19000
fi

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
echo "==> $ROUNDS round(s); results in $OUT" >&2
for round in $(seq "$ROUNDS"); do
  if want fanout; then
    for server in roomcast-ws roomcast-raw tungstenite-broadcast node-ws-broadcast; do
      if [ "$server" = roomcast-ws ]; then
        measure fanout "$server" "$round" fanout --url "ws://127.0.0.1:PORT/ws" -n "$SUBS" -m "$MSGS" --size 64 --window 16
      else
        measure fanout "$server" "$round" fanout --raw --url "ws://127.0.0.1:PORTBROADCAST_PATH" --publisher-url "ws://127.0.0.1:PORTPUBLISHER_PATH" -n "$SUBS" -m "$MSGS" --size 64 --window 16
      fi
    done
  fi
  for size in 64 16384; do
    case "$size" in 64) name=echo64; m=$ECHO_M ;; *) name=echo16k; m=$ECHO_BIG_M ;; esac
    want "$name" || continue
    for server in roomcast fastwebsockets tungstenite node-ws; do
      measure "$name" "$server" "$round" echo --url "ws://127.0.0.1:PORTECHO_PATH" -c "$ECHO_C" -s "$size" -m "$m"
    done
  done
  if want connect; then
    measure connect roomcast-ws "$round" connect --url "ws://127.0.0.1:PORT/ws" -n "$CONNS" --room idle --hold 2 --concurrency 64 --sources 8
    for server in roomcast fastwebsockets tungstenite node-ws; do
      measure connect "$server" "$round" connect --url "ws://127.0.0.1:PORTCONNECT_PATH" -n "$CONNS" --hold 2 --concurrency 64 --sources 8
    done
  fi
  if want connect19k; then
    measure connect19k roomcast-ws "$round" connect --url "ws://127.0.0.1:PORT/ws" -n "$BIG_CONNS" --room idle --hold 2 --concurrency 64 --sources 8
  fi
done
python3 "$ROOT/bench/summarize.py" "$RESULTS" | tee "$OUT/summary.md"

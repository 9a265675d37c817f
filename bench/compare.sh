#!/usr/bin/env bash
# Measures roomcast beside peer servers built from registries, the same scenarios for
# each, alternating servers, several rounds; prints medians, ranges and ratios.
#
#   bench/compare.sh                 full run (3 rounds, a few minutes)
#   bench/compare.sh --quick         one small round: checks that everything runs
#   ROUNDS=5 bench/compare.sh        more rounds
#   bench/compare.sh --only echo64   one scenario (fanout, fanout-deflate, echo64, echo16k,
#                                    echo-h2, connect, connect19k)
#   bench/compare.sh --only cluster  three nodes through Redis and HAProxy beside one node
#                                    and Socket.IO 4 with its Redis adapter (bench/cluster.sh)
#
# Peers: tokio-tungstenite 0.30 (echo, and a broadcast server on tokio::sync::broadcast),
# fastwebsockets 0.10 (echo, through hyper), Node ws 8.23 (echo and broadcast, and broadcast
# with permessage-deflate, which compresses per recipient); sources in bench/peers/.
# fanout-deflate: 512 B chat-like messages, each server with compression off and on (the
# clients offering permessage-deflate). Bytes on the wire: the deflate-ratio example.
# echo-h2: roomcast over TLS, each WebSocket on its own HTTP/1.1 connection, beside the
# same WebSockets as HTTP/2 streams (RFC 8441): all on one connection (`-h2`), and one
# stream per connection (`-h2-1`). Each run starts a fresh server pinned to CPU 0 (taskset), the load generator
# (`roomcast bench`, one thread) pinned to CPU 1, and reads the server's CPU time and memory
# from /proc. Results: target/bench/<time>/results.jsonl and summary.md, each server's and
# bench's output in logs/. Exits 1, naming the scenario and server, when any run fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
  esac
  shift
done
# The cluster comparison needs Redis, HAProxy and npm: a script of its own, run when asked.
if [ "$ONLY" = cluster ]; then
  exec "$ROOT/bench/cluster.sh"
fi
ROUNDS="${ROUNDS:-3}"
[ "$QUICK" = 1 ] && ROUNDS=1
OUT="$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs"
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

# Every run must pass: a server that does not start, a bench that fails (any lost,
# repeated or reordered message, failed connection, missing echo: `roomcast bench` exits
# non-zero and says why), or a run without a result is a failure. Each is named on stderr
# as it happens and again at the end, and the script exits 1.
FAILURES=()
fail() { FAILURES+=("$1"); echo "  FAILED: $1" >&2; }
PID=""
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null || true' EXIT

# shellcheck source=scripts/lib/listening.sh
. "$ROOT/scripts/lib/listening.sh"

# start SERVER LOG: starts a server on a port of the kernel's choice; sets PID, PORT and
# the endpoint paths it serves.
start() {
  local server="$1" log="$2"
  case "$server" in
    roomcast|roomcast-ws|roomcast-raw)
      "${PIN_SERVER[@]}" "$ROOMCAST" serve --listen 127.0.0.1:0 --echo --log warn > "$log" 2>&1 &
      ECHO_PATH=/echo; BROADCAST_PATH=/rooms/bench; PUBLISHER_PATH="/rooms/bench?echo=1"; CONNECT_PATH=/ws ;;
    roomcast-deflate)
      "${PIN_SERVER[@]}" "$ROOMCAST" serve --listen 127.0.0.1:0 --echo --log warn --set websocket.compression=true > "$log" 2>&1 & ;;
    roomcast-tls|roomcast-tls-h2|roomcast-tls-h2-1)
      "${PIN_SERVER[@]}" "$ROOMCAST" serve --listen 127.0.0.1:0 --echo --log warn --tls-self-signed > "$log" 2>&1 &
      ECHO_PATH=/echo ;;
    tungstenite)
      "${PIN_SERVER[@]}" "$PEERS/tungstenite-echo" 127.0.0.1:0 > "$log" 2>&1 &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    tungstenite-broadcast)
      "${PIN_SERVER[@]}" "$PEERS/tungstenite-broadcast" 127.0.0.1:0 > "$log" 2>&1 &
      BROADCAST_PATH=/; PUBLISHER_PATH=/ ;;
    fastwebsockets)
      "${PIN_SERVER[@]}" "$PEERS/fastwebsockets-echo" 127.0.0.1:0 > "$log" 2>&1 &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    node-ws)
      "${PIN_SERVER[@]}" node bench/peers/node/server.js echo 0 > "$log" 2>&1 &
      ECHO_PATH=/; CONNECT_PATH=/ ;;
    node-ws-broadcast)
      "${PIN_SERVER[@]}" node bench/peers/node/server.js broadcast 0 > "$log" 2>&1 &
      BROADCAST_PATH=/; PUBLISHER_PATH=/ ;;
    node-ws-broadcast-deflate)
      "${PIN_SERVER[@]}" node bench/peers/node/server.js broadcast-deflate 0 > "$log" 2>&1 &
      BROADCAST_PATH=/; PUBLISHER_PATH=/ ;;
    *) echo "unknown server $server" >&2; return 1 ;;
  esac
  PID=$!
  PORT=$(listening_port "$log" "$PID")
}

# stop: stops the server started last.
stop() {
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# record SCENARIO SERVER ROUND JSON: one line of results.jsonl.
record() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(case=sys.argv[2], server=sys.argv[3], round=int(sys.argv[4])); print(json.dumps(r))' \
    "$4" "$1" "$2" "$3" >> "$RESULTS"
}

# measure SCENARIO SERVER ROUND BENCH_ARGS...: one run, one JSON line.
measure() {
  local scenario="$1" server="$2" round="$3"; shift 3
  local what="$scenario $server round $round" log="$OUT/logs/$scenario-$server-$round"
  if ! start "$server" "$log.server"; then
    fail "$what: the server did not start or report its port (log: $log.server)"
    stop
    record "$scenario" "$server" "$round" '{"error": "the server did not start"}'
    return 0
  fi
  local args=("$@")
  args=("${args[@]//PORT/$PORT}")
  args=("${args[@]//ECHO_PATH/${ECHO_PATH:-}}")
  args=("${args[@]//PUBLISHER_PATH/${PUBLISHER_PATH:-}}")
  args=("${args[@]//BROADCAST_PATH/${BROADCAST_PATH:-}}")
  args=("${args[@]//CONNECT_PATH/${CONNECT_PATH:-}}")
  local line="" rc=0
  line=$("${PIN_LOAD[@]}" "$ROOMCAST" bench "${args[@]}" --threads 1 --json --server-pid "$PID" 2> "$log.bench") || rc=$?
  stop
  if [ "$rc" -ne 0 ]; then
    fail "$what: roomcast bench exited with status $rc: $(tail -n 1 "$log.bench") (log: $log.bench)"
  fi
  # The bench prints one JSON object; anything else is a run without a result.
  if ! python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if isinstance(r, dict) else 1)' "$line" 2>/dev/null; then
    fail "$what: no result from roomcast bench (log: $log.bench)"
    line='{"error": "no result"}'
  fi
  [ "$rc" -eq 0 ] || line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["bench_exit"]=int(sys.argv[2]); print(json.dumps(r))' "$line" "$rc")
  record "$scenario" "$server" "$round" "$line"
  echo "  $scenario  $server  round $round done" >&2
}

if [ "$QUICK" = 1 ]; then
  ZSUBS=50; ZMSGS=300; SUBS=50; MSGS=300; ECHO_C=10; ECHO_M=3000; ECHO_BIG_M=500; CONNS=200; BIG_CONNS=300
else
  # fanout-deflate is smaller: a server compressing per recipient (Node ws, ~150 µs a
  # delivery) would need minutes for 2,000,000 deliveries, past the bench's timeout.
  ZSUBS=200; ZMSGS=1000; SUBS=1000; MSGS=2000; ECHO_C=100; ECHO_M=100000; ECHO_BIG_M=20000; CONNS=10000; BIG_CONNS=19000
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
  if want fanout-deflate; then
    for server in roomcast-ws roomcast-deflate node-ws-broadcast node-ws-broadcast-deflate; do
      zip=(); case "$server" in *deflate) zip=(--deflate) ;; esac
      case "$server" in
        roomcast*) measure fanout-deflate "$server" "$round" fanout --url "ws://127.0.0.1:PORT/ws" -n "$ZSUBS" -m "$ZMSGS" --size 512 --chat --window 16 "${zip[@]}" ;;
        *) measure fanout-deflate "$server" "$round" fanout --raw --url "ws://127.0.0.1:PORTBROADCAST_PATH" --publisher-url "ws://127.0.0.1:PORTPUBLISHER_PATH" -n "$ZSUBS" -m "$ZMSGS" --size 512 --chat --window 16 "${zip[@]}" ;;
      esac
    done
  fi
  for size in 64 16384; do
    case "$size" in 64) name=echo64; m=$ECHO_M ;; *) name=echo16k; m=$ECHO_BIG_M ;; esac
    want "$name" || continue
    for server in roomcast fastwebsockets tungstenite node-ws; do
      measure "$name" "$server" "$round" echo --url "ws://127.0.0.1:PORTECHO_PATH" -c "$ECHO_C" -s "$size" -m "$m"
    done
  done
  if want echo-h2; then
    for server in roomcast-tls roomcast-tls-h2 roomcast-tls-h2-1; do
      h2=(); case "$server" in *-h2) h2=(--http2 --streams "$ECHO_C") ;; *-h2-1) h2=(--http2 --streams 1) ;; esac
      measure echo-h2 "$server" "$round" echo --url "wss://127.0.0.1:PORTECHO_PATH" -c "$ECHO_C" -s 64 -m "$ECHO_M" "${h2[@]}"
    done
  fi
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
# The summary checks every result again (losses, errors, missing figures): belt and braces.
summary_rc=0
python3 "$ROOT/bench/summarize.py" "$RESULTS" | tee "$OUT/summary.md" || summary_rc=$?
if [ "${#FAILURES[@]}" -gt 0 ] || [ "$summary_rc" -ne 0 ]; then
  {
    echo "==> bench/compare.sh FAILED (results: $OUT):"
    for f in "${FAILURES[@]}"; do echo "  $f"; done
    [ "$summary_rc" -eq 0 ] || echo "  the summary found failed runs (above)"
  } >&2
  exit 1
fi

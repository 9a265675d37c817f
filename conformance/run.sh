#!/usr/bin/env bash
# Runs the Autobahn TestSuite (cases 1.* to 10.*) against roomcast in both roles and diffs
# the verdicts against the committed expected results.
#
#   conformance/run.sh [server|client|all] [--update]
#   conformance/run.sh timings      # 9.* case times: roomcast beside tokio-tungstenite
#
# server: `roomcast serve --echo` tested by wstest's fuzzingclient at /echo.
# client: the `autobahn-client` example of roomcast-ws driven by wstest's fuzzingserver.
# --update rewrites conformance/expected/*.json from the new reports (review the diff).
# Reports go to target/autobahn/. 12.* and 13.* (permessage-deflate) come with compression.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/conformance"
MODE="${1:-all}"
UPDATE=""
[ "${2:-}" = "--update" ] || [ "${1:-}" = "--update" ] && UPDATE="--update"
[ "$MODE" = "--update" ] && MODE=all
OUT="$ROOT/target/autobahn"
export AUTOBAHN_EXCLUDE="${AUTOBAHN_EXCLUDE:-12.* 13.*}"
export AUTOBAHN_PREFIX="${AUTOBAHN_PREFIX:-/opt/autobahn-testsuite}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # wait until http://127.0.0.1:$1/healthz answers, or the process $2 died
  for _ in $(seq 100); do
    python3 - "$1" <<'PY' 2>/dev/null && return 0
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1).read()
PY
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
wait_tcp() {
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

"$HERE/autobahn/install.sh" >/dev/null
cd "$ROOT"
cargo build --release --quiet -p roomcast --bin roomcast -p roomcast-ws --example autobahn-client

run_server() {
  local port pid rc=0
  port=$(free_port)
  "$ROOT/target/release/roomcast" serve --echo --listen "127.0.0.1:$port" --log warn --set websocket.max_message_size=16777216 --set websocket.max_frame_size=16777216 &
  pid=$!
  wait_http "$port" "$pid" || { echo "roomcast did not start" >&2; kill "$pid" 2>/dev/null; return 1; }
  AUTOBAHN_URL_PATH=/echo AUTOBAHN_AGENT=roomcast AUTOBAHN_REPORT_DIR="$OUT/server" \
    "$HERE/autobahn/fuzzingclient.sh" 127.0.0.1 "$port" || rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  python3 "$HERE/compare.py" "$OUT/server" roomcast "$HERE/expected/server.json" $UPDATE || rc=1
  return $rc
}

run_client() {
  local port rc=0
  port=$(free_port)
  AUTOBAHN_AGENT=roomcast-ws AUTOBAHN_REPORT_DIR="$OUT/client" \
    "$HERE/autobahn/fuzzingserver.sh" "$port" -- "$ROOT/target/release/examples/autobahn-client" 2> "$OUT/client-stderr.log" || rc=$?
  [ $rc -eq 0 ] || tail -n 20 "$OUT/client-stderr.log" >&2
  python3 "$HERE/compare.py" "$OUT/client" roomcast-ws "$HERE/expected/client.json" $UPDATE || rc=1
  return $rc
}

cpu_ms() {  # user+system CPU time of process $1 in ms, from /proc
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/$1/stat"
}

run_timings() {
  cargo build --release --quiet --manifest-path "$ROOT/bench/peers/rust/Cargo.toml" --bin tungstenite-echo
  local port pid round rounds="${ROUNDS:-3}"
  : > "$OUT/timings-cpu.txt"
  for round in $(seq "$rounds"); do
    for who in roomcast tungstenite; do
      port=$(free_port)
      if [ "$who" = roomcast ]; then
        "$ROOT/target/release/roomcast" serve --echo --listen "127.0.0.1:$port" --log warn --set websocket.max_message_size=16777216 --set websocket.max_frame_size=16777216 & pid=$!
        export AUTOBAHN_URL_PATH=/echo
      else
        "$ROOT/bench/peers/rust/target/release/tungstenite-echo" "127.0.0.1:$port" 2>/dev/null & pid=$!
        export AUTOBAHN_URL_PATH=
      fi
      wait_tcp "$port"
      AUTOBAHN_AGENT="$who" AUTOBAHN_REPORT_DIR="$OUT/timings-$who-$round" \
        "$HERE/autobahn/fuzzingclient.sh" 127.0.0.1 "$port" "9.*" >/dev/null || true
      echo "$round $who $(cpu_ms "$pid")" >> "$OUT/timings-cpu.txt"
      kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    done
  done
  python3 "$HERE/timings.py" "$OUT" "$rounds" "$OUT/timings-cpu.txt"
}

mkdir -p "$OUT"
rc=0
case "$MODE" in
  server) run_server || rc=1 ;;
  client) run_client || rc=1 ;;
  all) run_server || rc=1; run_client || rc=1 ;;
  timings) run_timings ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
exit $rc

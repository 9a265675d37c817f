#!/usr/bin/env bash
# Runs the Autobahn TestSuite (cases 1.* to 13.*, 12.* and 13.* being permessage-deflate)
# against roomcast in both roles and diffs the verdicts against the committed expected
# results. `all` runs the two roles side by side (wstest is one Python process each, and
# 12.* and 13.* take it about ten minutes a role).
#
#   conformance/run.sh [server|client|all] [--update]
#   conformance/run.sh timings      # 9.* case times: roomcast beside tokio-tungstenite
#
# server: `roomcast serve --echo` with compression on (every message compressed: threshold
#   0) tested by wstest's fuzzingclient at /echo.
# client: the `autobahn-client` example of roomcast-ws, offering permessage-deflate,
#   driven by wstest's fuzzingserver.
# --update rewrites conformance/expected/*.json from the new reports (review the diff).
# Reports go to target/autobahn/. AUTOBAHN_EXCLUDE="12.* 13.*" skips compression.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/conformance"
MODE="${1:-all}"
UPDATE=""
[ "${2:-}" = "--update" ] || [ "${1:-}" = "--update" ] && UPDATE="--update"
[ "$MODE" = "--update" ] && MODE=all
OUT="$ROOT/target/autobahn"
export AUTOBAHN_EXCLUDE="${AUTOBAHN_EXCLUDE:-}"
export AUTOBAHN_PREFIX="${AUTOBAHN_PREFIX:-/opt/autobahn-testsuite}"

# Servers we start listen on port 0 and report the port the kernel gave them (roomcast
# and tungstenite-echo print `listening on HOST:PORT`), so no port is guessed for them.
# wstest's fuzzingserver cannot: it gets a free port, and another one when that port was
# taken before it could bind it (fuzzingserver.sh exits 75), at most 5 times.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# shellcheck source=scripts/lib/listening.sh
. "$ROOT/scripts/lib/listening.sh"
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

"$HERE/autobahn/install.sh" >/dev/null
cd "$ROOT"
cargo build --release --quiet -p roomcast --bin roomcast -p roomcast-ws --example autobahn-client

run_server() {
  local port="" pid rc=0
  "$ROOT/target/release/roomcast" serve --echo --listen 127.0.0.1:0 --log warn --set websocket.max_message_size=16777216 --set websocket.max_frame_size=16777216 --set websocket.compression=true --set websocket.compression_threshold=0 > "$OUT/roomcast.stdout" &
  pid=$!
  if ! port=$(listening_port "$OUT/roomcast.stdout" "$pid") || ! wait_http "$port" "$pid"; then
    echo "roomcast did not start" >&2; kill "$pid" 2>/dev/null; return 1
  fi
  AUTOBAHN_URL_PATH=/echo AUTOBAHN_AGENT=roomcast AUTOBAHN_REPORT_DIR="$OUT/server" \
    "$HERE/autobahn/fuzzingclient.sh" 127.0.0.1 "$port" || rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  python3 "$HERE/compare.py" "$OUT/server" roomcast "$HERE/expected/server.json" $UPDATE || rc=1
  return $rc
}

run_client() {
  local port rc attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    rc=0
    AUTOBAHN_AGENT=roomcast-ws AUTOBAHN_REPORT_DIR="$OUT/client" \
      "$HERE/autobahn/fuzzingserver.sh" "$port" -- "$ROOT/target/release/examples/autobahn-client" 2> "$OUT/client-stderr.log" || rc=$?
    [ "$rc" -eq 75 ] || break
    echo "port $port was taken before wstest could bind it; another port ($attempt of 5)" >&2
  done
  [ $rc -eq 0 ] || tail -n 20 "$OUT/client-stderr.log" >&2
  python3 "$HERE/compare.py" "$OUT/client" roomcast-ws "$HERE/expected/client.json" $UPDATE || rc=1
  return $rc
}

cpu_ms() {  # user+system CPU time of process $1 in ms, from /proc
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/$1/stat"
}

run_timings() {
  cargo build --release --quiet --manifest-path "$ROOT/bench/peers/rust/Cargo.toml" --bin tungstenite-echo
  local port pid round rounds="${ROUNDS:-3}" log="$OUT/timings-server.log"
  : > "$OUT/timings-cpu.txt"
  for round in $(seq "$rounds"); do
    for who in roomcast tungstenite; do
      if [ "$who" = roomcast ]; then
        "$ROOT/target/release/roomcast" serve --echo --listen 127.0.0.1:0 --log warn --set websocket.max_message_size=16777216 --set websocket.max_frame_size=16777216 > "$log" 2>&1 & pid=$!
        export AUTOBAHN_URL_PATH=/echo
      else
        "$ROOT/bench/peers/rust/target/release/tungstenite-echo" 127.0.0.1:0 > "$log" 2>&1 & pid=$!
        export AUTOBAHN_URL_PATH=
      fi
      port=$(listening_port "$log" "$pid") || { echo "$who did not start (log: $log)" >&2; kill "$pid" 2>/dev/null; return 1; }
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
  all)
    run_server & server=$!
    run_client || rc=1
    wait "$server" || rc=1
    ;;
  timings) run_timings ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
exit $rc

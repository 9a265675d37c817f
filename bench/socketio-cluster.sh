#!/usr/bin/env bash
# The cluster fan-out benchmark's Socket.IO peer: Socket.IO 4 with @socket.io/redis-adapter
# on three Node processes sharing one Redis (bench/peers/socketio/server.js), measured the
# way `roomcast bench fanout` measures roomcast: N subscribers in one room spread
# round-robin over the three processes, one publisher on the first, M messages of SIZE
# bytes at RATE messages/s (RATE=0: as fast as acks allow, at most WINDOW unacked), every
# delivery checked (bench/peers/socketio/bench.js).
#
#   bench/socketio-cluster.sh                              N=1000 M=2000 SIZE=64 RATE=1000
#   N=1000 M=2000 SIZE=64 RATE=0 bench/socketio-cluster.sh  closed loop, window 16
#
# Prints one JSON line: bench.js's result (see its header) plus
#   server_cpu_us_per_delivery  the three servers' CPU time (user + system, from
#                               /proc/PID/stat, all threads) over subscribers x messages
#   redis_cpu_us_per_message    redis-server's CPU time over messages
#   server_cpu_seconds          each server's CPU time, the publisher's first
#   redis_cpu_seconds, sampled_seconds
#   machine_cores_busy          every core's busy time (/proc/stat, interrupts included)
#                               over the sampled wall time: near 2 on this 2-core machine
#                               means that it was saturated
#   interrupt_cores_busy        the part of it in irq and softirq, charged to no process
#                               (loopback TCP's receive work is mostly here)
#   other_cores_busy            the process time that was neither these servers, Redis nor
#                               bench.js: a build running beside the benchmark shows here,
#                               and the figures are then not the servers' own
# Exits with bench.js's status (1 when any message was lost, repeated or reordered).
#
# What is sampled: bench.js --sync stops once every subscriber has joined, printing
# `publishing`; this script reads the CPU times then and lets it go on, and reads them
# again when it prints `done` (every message delivered, or its timeout), before any client
# disconnects. So connecting and joining 1000 clients, and closing them, are not counted:
# only the publish phase, as `roomcast bench fanout --server-pid` counts it. The pauses
# around each sample are a few milliseconds of idle servers. /proc counts in clock ticks
# (`getconf CLK_TCK`, 100 here): 10 ms per process and sample, small against the seconds
# a run takes.
#
# Nothing is pinned to a core: three servers, Redis and the load generator share the two
# cores, as a three-node cluster on one machine must. The load generator is one Node
# thread (bench.js): its load_generator_cpu_per_wall near 1.0 means it, not the servers,
# set the pace, and the latencies include its own queueing.
#
# Everything listens on 127.0.0.1, on ports that python3 picks free. Every process this
# script starts is stopped by its pid on exit; the logs are in a temporary directory,
# removed on exit (KEEP_LOGS=1 keeps it and says where).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/bench/peers/socketio"
N="${N:-1000}"
M="${M:-2000}"
SIZE="${SIZE:-64}"
RATE="${RATE:-1000}"
WINDOW="${WINDOW:-16}"
TIMEOUT="${TIMEOUT:-20}"
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}"

[ -d "$DIR/node_modules/socket.io" ] || (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)

OUT="$(mktemp -d "${TMPDIR:-/tmp}/socketio-cluster.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 30); do
    local left=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "socketio-cluster: logs in $OUT" >&2; else rm -rf "$OUT"; fi
}
trap cleanup EXIT

die() {
  echo "socketio-cluster: $1" >&2
  local f
  for f in "$OUT"/*.log; do
    [ -s "$f" ] || continue
    echo "--- the end of $(basename "$f")" >&2
    tail -n 15 "$f" >&2
  done
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Whether Redis answers PING on port $1 (no redis-cli needed).
redis_ping() (
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'PING\r\n' >&3
  read -r -t 1 reply <&3 || exit 1
  [ "${reply%$'\r'}" = "+PONG" ]
) 2>/dev/null

# utime + stime of process $1 in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# command name, field 2, may hold spaces, so the fields are counted after its ")").
ticks() {
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# Busy clock ticks of the whole machine, from /proc/stat's `cpu` line: user + nice +
# system (time that processes are charged with), then irq + softirq (interrupt time, which
# the kernel charges to no process: loopback TCP's receive side is mostly softirq). Not
# idle, iowait, steal, nor guest (already in user).
machine_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4, $7 + $8; exit }' /proc/stat
}
# One line: the wall time, the machine's busy ticks, then the ticks of each pid given.
sample() {
  local pid line
  line="$(date +%s.%N) $(machine_ticks)"
  for pid in "$@"; do line="$line $(ticks "$pid")"; done
  echo "$line"
}

# Redis: no persistence, loopback only.
RPORT="$(free_port)"
"$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
  redis_ping "$RPORT" && break
  kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited"
  sleep 0.05
done
redis_ping "$RPORT" || die "redis-server does not answer on port $RPORT"

# Three Socket.IO servers. Each prints `listening on 127.0.0.1:PORT` once its adapter's
# Redis connections are up and it listens.
SERVER_PIDS=()
URLS=()
for i in 1 2 3; do
  port="$(free_port)"
  PORT="$port" REDIS_URL="redis://127.0.0.1:$RPORT" node "$DIR/server.js" >"$OUT/server$i.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  SERVER_PIDS+=("$pid")
  URLS+=("http://127.0.0.1:$port")
done
for i in 0 1 2; do
  pid="${SERVER_PIDS[$i]}"
  for _ in $(seq 400); do
    grep -q "listening on" "$OUT/server$((i + 1)).log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "server $((i + 1)) exited"
    sleep 0.05
  done
  grep -q "listening on" "$OUT/server$((i + 1)).log" || die "server $((i + 1)) does not listen after 20 s"
done

CLK_TCK="$(getconf CLK_TCK)"
WATCHED=("${SERVER_PIDS[@]}" "$REDIS_PID")

# The load generator, as a coprocess: its stdout (the JSON) goes to a file, its stderr
# comes here, where `publishing` and `done` are the moments to sample; a line on its
# stdin lets it go on.
URL_LIST="$(IFS=,; echo "${URLS[*]}")"
# shellcheck disable=SC2069 # meant: stderr to the pipe, stdout to the file
coproc BENCH {
  exec node "$DIR/bench.js" --urls "$URL_LIST" --publisher-url "${URLS[0]}" \
    -n "$N" -m "$M" --size "$SIZE" --rate "$RATE" --window "$WINDOW" --timeout "$TIMEOUT" \
    --json --sync 2>&1 >"$OUT/bench.json"
}
BENCH_PID_SAVED="$BENCH_PID"
PIDS+=("$BENCH_PID_SAVED")
exec {FROM_BENCH}<&"${BENCH[0]}" {TO_BENCH}>&"${BENCH[1]}"
BEFORE=""
AFTER=""
while IFS= read -r line <&"$FROM_BENCH"; do
  case "$line" in
    publishing)
      BEFORE="$(sample "${WATCHED[@]}" "$BENCH_PID_SAVED")"
      echo go >&"$TO_BENCH" ;;
    done)
      AFTER="$(sample "${WATCHED[@]}" "$BENCH_PID_SAVED")"
      echo go >&"$TO_BENCH" ;;
    *) echo "$line" >&2 ;;
  esac
done
rc=0
wait "$BENCH_PID_SAVED" || rc=$?
exec {TO_BENCH}>&- {FROM_BENCH}<&-
[ -s "$OUT/bench.json" ] || die "bench.js printed no result (exit status $rc)"
if [ -z "$BEFORE" ] || [ -z "$AFTER" ]; then die "bench.js did not reach the publish phase's end"; fi

python3 - "$OUT/bench.json" "$CLK_TCK" "$BEFORE" "$AFTER" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
tck = int(sys.argv[2])
before = [float(x) for x in sys.argv[3].split()]
after = [float(x) for x in sys.argv[4].split()]
wall = after[0] - before[0]
d = [(a - b) / tck for a, b in zip(after[1:], before[1:])]
proc, irq, servers, redis, bench = d[0], d[1], d[2:5], d[5], d[6]
deliveries = r["subscribers"] * r["messages"]
r["server_cpu_us_per_delivery"] = round(sum(servers) * 1e6 / deliveries, 3)
r["redis_cpu_us_per_message"] = round(redis * 1e6 / r["messages"], 3)
r["server_cpu_seconds"] = [round(s, 2) for s in servers]
r["redis_cpu_seconds"] = round(redis, 2)
r["sampled_seconds"] = round(wall, 3)
r["load_generator_cpu_seconds"] = round(bench, 2)
r["machine_cores_busy"] = round((proc + irq) / wall, 2)
r["interrupt_cores_busy"] = round(irq / wall, 2)
r["other_cores_busy"] = round(max(0.0, proc - sum(servers) - redis - bench) / wall, 2)
print(json.dumps(r))
if r["other_cores_busy"] > 0.2:
    print(f"socketio-cluster: other processes used {r['other_cores_busy']} cores during the "
          "run: these figures are not the servers' alone", file=sys.stderr)
if r["load_generator_cpu_per_wall"] > 0.9:
    print("socketio-cluster: the load generator (one Node thread) was saturated", file=sys.stderr)
PY
exit "$rc"

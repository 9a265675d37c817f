#!/usr/bin/env bash
# Fan-out through three nodes sharing one Redis (behind the shipped HAProxy config),
# through three nodes on a Redis Cluster (three primaries with a replica each, sharded
# pub/sub) and through three nodes on one NATS server with JetStream, beside the same
# room on one node with the memory engine, in the same run.
#
#   bench/cluster.sh            N=1000 subscribers, M=2000 messages of SIZE=64 B
#
# Two loads each: closed loop (window 16) for server CPU per delivery, and a fixed rate
# (RATE msg/s) for delivery latency. Subscribers are spread over the three nodes in turn
# (as the Socket.IO peer's are), the publisher on node 1; one more closed-loop run per
# round goes through HAProxy (leastconn spreads them), whose own CPU is reported beside
# it: on these 2-core machines the proxy relaying every delivery competes with the
# nodes for the same cores. Server CPU is summed
# over the three nodes (`bench fanout --server-pid --node-pid`), Redis's is reported per
# message (`--broker-pid`, every process of the cluster summed); both only while
# publishing. Prints one JSON line per run and
# a summary; fails on any loss. Last, a node of each trio is killed (`kill -9`) under
# its clients: the time until every one of them recovered on another node.
#
# Beside them, in the same run, the peer users pick for this job: Socket.IO 4 with its
# Redis adapter on three Node processes (bench/socketio-cluster.sh), closed loop with the
# same window, same room size and message size (PEER=0 leaves it out).
#
# Environment: N, M, SIZE, RATE, ROUNDS, PEER, ROOMCAST_BIN (default target/release/roomcast).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/listening.sh
. scripts/lib/listening.sh
N=${N:-1000} M=${M:-2000} SIZE=${SIZE:-64} RATE=${RATE:-100} ROUNDS=${ROUNDS:-2}
BIN=${ROOMCAST_BIN:-target/release/roomcast}
[ -x "$BIN" ] || cargo build --release -p roomcast
for tool in redis-server redis-cli haproxy nats-server; do
  command -v "$tool" >/dev/null || { echo "bench/cluster.sh needs $tool (Debian package)" >&2; exit 1; }
done
STATE=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$STATE" >"$STATE/redis.log" 2>&1 &
REDIS=$!; PIDS+=("$REDIS")
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

NPORT=$(free_port)
mkdir -p "$STATE/nats"
nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$STATE/nats" -l "$STATE/nats.log" &
NATS=$!; PIDS+=("$NATS")
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break; sleep 0.05; done

node() { # name [--broker URL]: starts a node, prints "pid port"
  local log="$STATE/$1.log"
  shift
  "$BIN" serve --listen 127.0.0.1:0 --workers 1 --log warn "$@" >"$log" 2>&1 &
  local pid=$!
  local port; port=$(listening_port "$log" "$pid") || { cat "$log" >&2; exit 1; }
  # Until it reaches the broker, room requests answer `unavailable`.
  for _ in $(seq 200); do [ "$(curl -s "http://127.0.0.1:$port/healthz")" = ok ] && break; sleep 0.05; done
  echo "$pid $port"
}

# A Redis Cluster: six processes, each with its bus port (+10000) free.
cluster_ports() { python3 -c '
import socket
held, ports = [], []
while len(ports) < 6:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; held.append(s)
    if p + 10000 > 65535: continue
    b = socket.socket()
    try: b.bind(("127.0.0.1", p + 10000))
    except OSError: continue
    held.append(b); ports.append(p)
print(" ".join(map(str, ports)))'; }
read -r -a CPORTS < <(cluster_ports)
CPIDS=()
for p in "${CPORTS[@]}"; do
  mkdir -p "$STATE/c$p"
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$STATE/c$p" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 >"$STATE/c$p.log" 2>&1 &
  CPIDS+=("$!"); PIDS+=("$!")
done
for p in "${CPORTS[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
# shellcheck disable=SC2046 # one argument per node
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CPORTS[@]}") --cluster-replicas 1 --cluster-yes \
  >"$STATE/cluster-create.log" 2>&1 || { cat "$STATE/cluster-create.log" >&2; exit 1; }
# Healthy: every node says ok, and every replica is done with its first sync (a sync's
# fork must not land in the broker CPU measured).
healthy() {
  local p
  for p in "${CPORTS[@]}"; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q cluster_state:ok || return 1
  done
  [ "$(for p in "${CPORTS[@]}"; do redis-cli -p "$p" info replication; done | grep -c 'state=online')" -eq 3 ]
}
for _ in $(seq 600); do healthy && break; sleep 0.05; done
healthy || { echo "bench/cluster.sh: the Redis Cluster did not become healthy" >&2; exit 1; }
CURL="redis+cluster://$(printf '127.0.0.1:%s,' "${CPORTS[@]}")"; CURL=${CURL%,}
BROKER_PIDS=(); for pid in "${CPIDS[@]}"; do BROKER_PIDS+=(--broker-pid "$pid"); done

read -r P1 N1 < <(node n1 --broker "redis://127.0.0.1:$RPORT" --node-id n1)
read -r P2 N2 < <(node n2 --broker "redis://127.0.0.1:$RPORT" --node-id n2)
read -r P3 N3 < <(node n3 --broker "redis://127.0.0.1:$RPORT" --node-id n3)
PIDS+=("$P1" "$P2" "$P3")
read -r C1 K1 < <(node c1 --broker "$CURL" --node-id c1)
read -r C2 K2 < <(node c2 --broker "$CURL" --node-id c2)
read -r C3 K3 < <(node c3 --broker "$CURL" --node-id c3)
PIDS+=("$C1" "$C2" "$C3")
read -r X1 J1 < <(node x1 --broker "nats://127.0.0.1:$NPORT" --node-id x1)
read -r X2 J2 < <(node x2 --broker "nats://127.0.0.1:$NPORT" --node-id x2)
read -r X3 J3 < <(node x3 --broker "nats://127.0.0.1:$NPORT" --node-id x3)
PIDS+=("$X1" "$X2" "$X3")
FRONT=$(free_port)
FRONT_PORT=$FRONT STATS_PORT=$(free_port) STATS_SOCKET="$STATE/haproxy.sock" \
  NODE1=127.0.0.1:$N1 NODE2=127.0.0.1:$N2 NODE3=127.0.0.1:$N3 \
  haproxy -db -f deploy/haproxy.cfg >"$STATE/haproxy.log" 2>&1 &
HAPROXY=$!
PIDS+=("$HAPROXY")
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
for _ in $(seq 100); do [ "$(curl -s "http://127.0.0.1:$FRONT/healthz")" = ok ] && break; sleep 0.05; done
sleep 1.2 # HAProxy's `rise 2` at `inter 500ms`: every node up before the subscribers come
read -r PM NM < <(node memory)
PIDS+=("$PM")

run() { # label, bench args...
  local label=$1; shift
  local out
  out=$("$BIN" bench --threads 1 fanout -n "$N" -m "$M" --size "$SIZE" --json "$@")
  echo "{\"run\":\"$label\",\"result\":$out}"
}
for round in $(seq "$ROUNDS"); do
  for load in closed rate; do
    extra=(--window 16); [ "$load" = rate ] && extra=(--rate "$RATE")
    run "redis-3-nodes/$load/$round" --url "ws://127.0.0.1:$N1/ws,ws://127.0.0.1:$N2/ws,ws://127.0.0.1:$N3/ws" \
      --room "c$round$load" --server-pid "$P1" --node-pid "$P2" --node-pid "$P3" --broker-pid "$REDIS" "${extra[@]}"
    run "rediscluster-3-nodes/$load/$round" --url "ws://127.0.0.1:$K1/ws,ws://127.0.0.1:$K2/ws,ws://127.0.0.1:$K3/ws" \
      --room "k$round$load" --server-pid "$C1" --node-pid "$C2" --node-pid "$C3" "${BROKER_PIDS[@]}" "${extra[@]}"
    run "nats-3-nodes/$load/$round" --url "ws://127.0.0.1:$J1/ws,ws://127.0.0.1:$J2/ws,ws://127.0.0.1:$J3/ws" \
      --room "j$round$load" --server-pid "$X1" --node-pid "$X2" --node-pid "$X3" --broker-pid "$NATS" "${extra[@]}"
    run "memory-1-node/$load/$round" --url "ws://127.0.0.1:$NM/ws" --room "m$round$load" --server-pid "$PM" "${extra[@]}"
  done
  # HAProxy's CPU over the whole run (connecting included), in seconds.
  hcpu0=$(proc_cpu "$HAPROXY")
  out=$(run "redis-3-nodes-haproxy/closed/$round" --url "ws://127.0.0.1:$FRONT/ws" --publisher-url "ws://127.0.0.1:$N1/ws" \
    --room "h$round" --server-pid "$P1" --node-pid "$P2" --node-pid "$P3" --broker-pid "$REDIS" --window 16)
  hcpu1=$(proc_cpu "$HAPROXY")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["haproxy_cpu_seconds"]=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); print(json.dumps(r))' \
    "$out" "$hcpu0" "$hcpu1" "$(getconf CLK_TCK)"
done | tee "$STATE/results.jsonl"
if [ "${PEER:-1}" = 1 ]; then
  # Its own Redis and processes; ours are idle meanwhile.
  peer=$(N=$N M=$M SIZE=$SIZE RATE=0 WINDOW=16 bench/socketio-cluster.sh)
  echo "{\"run\":\"socketio-3-nodes/closed/1\",\"result\":$peer}" | tee -a "$STATE/results.jsonl"
fi

# Last, as it leaves each trio a node short: `kill -9` of the third node under its
# clients (a third of the room), who reconnect to another node and recover with `since`
# while the publisher goes on at the fixed rate (`bench recover`).
recover() { # label, victim pid, urls
  local out
  out=$("$BIN" bench --threads 1 recover -n "$N" --rate "$RATE" --size "$SIZE" --json \
    --room "r$1" --victim-pid "$2" --url "$3")
  echo "{\"run\":\"$1/recover/1\",\"result\":$out}"
}
{
  recover redis-3-nodes "$P3" "ws://127.0.0.1:$N1/ws,ws://127.0.0.1:$N2/ws,ws://127.0.0.1:$N3/ws"
  recover rediscluster-3-nodes "$C3" "ws://127.0.0.1:$K1/ws,ws://127.0.0.1:$K2/ws,ws://127.0.0.1:$K3/ws"
  recover nats-3-nodes "$X3" "ws://127.0.0.1:$J1/ws,ws://127.0.0.1:$J2/ws,ws://127.0.0.1:$J3/ws"
} | tee -a "$STATE/results.jsonl"

python3 - "$STATE/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = [r["run"] for r in rows if not r["result"].get("ok", True) or r["result"].get("lost")]
def med(prefix, key, sub=None):
    vals = [r["result"][key] if sub is None else r["result"][key][sub]
            for r in rows if r["run"].startswith(prefix) and key in r["result"]]
    return statistics.median(vals) if vals else float("nan")
redis_cpu = med("redis-3-nodes/closed", "server_cpu_us_per_delivery")
mem_cpu = med("memory-1-node/closed", "server_cpu_us_per_delivery")
cluster_cpu = med("rediscluster-3-nodes/closed", "server_cpu_us_per_delivery")
print(f"server CPU per delivery (closed loop, median): redis 3 nodes {redis_cpu:.3f} us, "
      f"memory 1 node {mem_cpu:.3f} us, ratio {redis_cpu / mem_cpu:.2f}x")
print(f"server CPU per delivery (closed loop, median): redis cluster 3 nodes {cluster_cpu:.3f} us, "
      f"ratio to memory {cluster_cpu / mem_cpu:.2f}x")
nats_cpu = med("nats-3-nodes/closed", "server_cpu_us_per_delivery")
print(f"server CPU per delivery (closed loop, median): nats 3 nodes {nats_cpu:.3f} us, "
      f"ratio to memory {nats_cpu / mem_cpu:.2f}x")
peer = med("socketio-3-nodes/closed", "server_cpu_us_per_delivery")
if peer == peer:
    print(f"Socket.IO with its Redis adapter, 3 processes: {peer:.2f} us per delivery, "
          f"{peer / redis_cpu:.1f}x roomcast's with Redis")
hap = med("redis-3-nodes-haproxy/closed", "server_cpu_us_per_delivery")
hap_own = [r["haproxy_cpu_seconds"] * 1e6 / r["result"]["deliveries"] for r in rows
           if r["run"].startswith("redis-3-nodes-haproxy") and r["result"].get("deliveries")]
print(f"through HAProxy (closed loop): nodes {hap:.3f} us per delivery ({hap / mem_cpu:.2f}x memory), "
      f"HAProxy itself {statistics.median(hap_own) if hap_own else float('nan'):.3f} us per delivery")
print(f"deliveries/s (closed loop): redis 3 nodes {med('redis-3-nodes/closed', 'deliveries_per_second'):.0f}, "
      f"redis cluster 3 nodes {med('rediscluster-3-nodes/closed', 'deliveries_per_second'):.0f}, "
      f"nats 3 nodes {med('nats-3-nodes/closed', 'deliveries_per_second'):.0f}, "
      f"memory 1 node {med('memory-1-node/closed', 'deliveries_per_second'):.0f}")
for label in ("redis-3-nodes", "rediscluster-3-nodes", "nats-3-nodes"):
    print(f"broker CPU per message, {label}: {med(label + '/closed', 'broker_cpu_us_per_message'):.1f} us (closed loop), "
          f"{med(label + '/rate', 'broker_cpu_us_per_message'):.1f} us (at the fixed rate)")
for label in ("redis-3-nodes/rate", "rediscluster-3-nodes/rate", "nats-3-nodes/rate", "memory-1-node/rate"):
    p = [med(label, "latency_us", q) / 1000 for q in ("p50", "p99", "p999")]
    print(f"latency at the fixed rate, {label.split('/')[0]}: p50 {p[0]:.2f} ms, p99 {p[1]:.2f} ms, p99.9 {p[2]:.2f} ms")
p99 = {l: med(l + "/rate", "latency_us", "p99") for l in ("redis-3-nodes", "rediscluster-3-nodes", "nats-3-nodes")}
for l, name in (("rediscluster-3-nodes", "redis cluster"), ("nats-3-nodes", "nats")):
    print(f"delivery p99 at the fixed rate, {name} against one redis: {p99[l] / p99['redis-3-nodes']:.2f}x")
for label in ("redis-3-nodes", "rediscluster-3-nodes", "nats-3-nodes"):
    r = [x["result"] for x in rows if x["run"] == label + "/recover/1"]
    if r and "recover_ms" in r[0]:
        t = r[0]["recover_ms"]
        print(f"kill -9 of a node, {label}: {r[0]['recovered']} clients recovered, "
              f"p50 {t['p50']:.0f} ms, p99 {t['p99']:.0f} ms, all {t['max']:.0f} ms; "
              f"{r[0]['lost']} lost, {r[0]['repeated']} repeated")
if bad:
    sys.exit(f"runs with losses or failures: {bad}")
EOF

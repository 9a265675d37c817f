#!/usr/bin/env bash
# What recording metrics costs the hot path, in one run: fan-out and echo against the same
# build with `metrics.enabled` off and on, alternating rounds; server CPU per delivery /
# per message (median of the rounds) and the ratio on/off.
#
#   bench/metrics.sh        (ROOMCAST_BIN, default target/release/roomcast; ROUNDS, 5)
#
# Off leaves the counters every build keeps (relaxed atomics, read at a scrape); on also
# records the three histograms: fan-out batch members (once per message per worker),
# publish to ack (once per publish) and broker round trip (once per broker pipeline).
# These servers run without a broker (the third is recorded with Redis or NATS only): fan-out
# records the first two, echo neither. What the counters themselves cost is the previous
# build against this one: bench/versus.sh OLD NEW.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib/pair.sh
. bench/lib/pair.sh
BIN=${ROOMCAST_BIN:-target/release/roomcast} ROUNDS=${ROUNDS:-5}
[ -x "$BIN" ] || cargo build --release -p roomcast
for round in $(seq "$ROUNDS"); do
  for scenario in fanout echo; do
    pair_row "$round" "$scenario" off "$BIN" "$BIN" ws --set metrics.enabled=false
    pair_row "$round" "$scenario" on "$BIN" "$BIN" ws
  done
done | pair_summary off on

#!/usr/bin/env bash
# Two builds of roomcast side by side in one run, on the memory engine: fan-out and echo,
# alternating rounds, server CPU per delivery / per message (median of the rounds).
#
#   bench/versus.sh OLD_BINARY NEW_BINARY      e.g. after
#   git worktree add /tmp/old REV && CARGO_TARGET_DIR=target/old cargo build --release -p roomcast
#
# The server runs on core 0 with one worker, the load generator (the new build's bench) on
# core 1 (bench/lib/pair.sh). Environment: ROUNDS (3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib/pair.sh
. bench/lib/pair.sh
OLD=${1:?old binary} NEW=${2:?new binary} ROUNDS=${ROUNDS:-3}
for round in $(seq "$ROUNDS"); do
  for scenario in fanout echo; do
    for side in old new; do
      bin=$OLD; [ "$side" = new ] && bin=$NEW
      pair_row "$round" "$scenario" "$side" "$bin" "$NEW" ws
    done
  done
done | pair_summary old new

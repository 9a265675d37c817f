#!/usr/bin/env bash
# The hot path over TLS beside plain TCP, in one run: fan-out and echo against the same
# build, once with `serve --tls-self-signed` (wss://) and once plain (ws://), alternating
# rounds; server CPU per delivery / per message (median of the rounds) and the ratio.
#
#   bench/tls.sh            (ROOMCAST_BIN, default target/release/roomcast; ROUNDS, 3)
#
# The server runs on core 0 with one worker, the load generator on core 1
# (bench/lib/pair.sh). The bench does not check the server's certificate (it measures
# its own loopback server); its own TLS work runs on core 1, so the server's figure is
# the server's alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib/pair.sh
. bench/lib/pair.sh
BIN=${ROOMCAST_BIN:-target/release/roomcast} ROUNDS=${ROUNDS:-3}
[ -x "$BIN" ] || cargo build --release -p roomcast
for round in $(seq "$ROUNDS"); do
  for scenario in fanout echo; do
    pair_row "$round" "$scenario" plain "$BIN" "$BIN" ws
    pair_row "$round" "$scenario" tls "$BIN" "$BIN" wss --tls-self-signed
  done
done | pair_summary plain tls

#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a short while; exits non-zero
# if any target crashes (a panic, a failed assertion, a sanitizer report, a timeout or
# running out of memory).
#
#   scripts/fuzz-smoke.sh                      # 20 s per target
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh     # longer
#   scripts/fuzz-smoke.sh frame_decoder        # only the targets named
#
# Settings (environment):
#   FUZZ_SECONDS        seconds per target (default 20)
#   FUZZ_SANITIZER      address (default) or none: none is faster and still catches
#                       every panic, overflow and debug assertion
#   FUZZ_RSS_LIMIT_MB   memory limit per target (default 1024; ASan alone takes ~300)
#   FUZZ_TIMEOUT        seconds one input may take before it counts as a hang (default 10)
#
# It works on the stable toolchain: cargo-fuzz passes nightly-only flags to rustc
# (-Zsanitizer=..., -Cpasses=sancov-module with -Zllvm options), which RUSTC_BOOTSTRAP=1
# lets stable accept. Nothing else needs nightly: no -Zbuild-std is used.
#
# Seed inputs are written at run time into fuzz/corpus/<target>/ (git-ignored, like
# fuzz/artifacts/ where crashing inputs land), and the corpus grows from run to run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
rss_limit=${FUZZ_RSS_LIMIT_MB:-1024}
timeout=${FUZZ_TIMEOUT:-10}

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

# Seeds: a few valid inputs per target, so the short run starts from the interesting
# paths instead of discovering HTTP and frame headers byte by byte.
seed() { # seed TARGET NAME PRINTF-FORMAT
    mkdir -p "fuzz/corpus/$1"
    # shellcheck disable=SC2059
    printf "$3" >"fuzz/corpus/$1/seed-$2"
}
# frame_decoder: a flag byte (0: no cuts, 64 KiB message limit), then frames.
seed frame_decoder masked-hello '\x00\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58'
seed frame_decoder fragments '\x00\x01\x03Hel\x80\x02lo'
seed frame_decoder masked-fragments-ping '\x00\x01\x83\x01\x02\x03\x04\x49\x67\x6f\x89\x82\x01\x02\x03\x04\x71\x6b\x80\x82\x01\x02\x03\x04\x6d\x6d'
seed frame_decoder ping-pong-close '\x00\x89\x02hi\x8a\x00\x88\x04\x03\xe8ok'
seed frame_decoder masked-close '\x00\x88\x82\x00\x00\x00\x00\x03\xe8'
seed frame_decoder len16-binary-cut "\\x01\\x05\\x00\\x82\\x7e\\x00\\x80$(printf '%0128d' 0)"
seed frame_decoder utf8-text '\x00\x81\x0c\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5'
seed frame_decoder rsv1 '\x40\xc1\x01x'
rfc_request='GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n'
seed handshake_request rfc "$rfc_request"
seed handshake_request extensions 'GET /ws?room=a HTTP/1.1\r\nhost: h:8080\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits, x-foo; a="1"; b=2\r\n\r\n'
seed handshake_request post 'POST / HTTP/1.0\r\nHost: x\r\n\r\n'
# handshake_response: the target replaces {accept} with the expected accept key.
seed handshake_response ok 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n'
seed handshake_response protocol-extension 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\nsec-websocket-protocol: chat\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits=15\r\n\r\n\x81\x00'
seed handshake_response refused 'HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n'
seed protocol_request publish '{"type":"publish","room":"lobby","data":{"a":[1,2]},"id":"k1","ref":4}'
seed protocol_request join '{"type":"join","room":"a","presence":{"n":1},"since":{"epoch":"e","offset":41},"ref":2}'
seed protocol_request wrong-type '{"type":"history","room":5,"limit":"10","ref":8}'
seed protocol_request refresh '{"type":"refresh","token":"a.b.c","ref":9}'
# Inputs that once failed the target's own check: skipped JSON a serde_json::Value cannot hold.
seed protocol_request huge-number '{"type":"x","since":34e888,"ref":2}'
seed protocol_request lone-surrogate '{"type":"join","room":"a","skipped":"\\uD990","ref":2}'
seed session_cursor old-format 'abc|3|lobby!e!12'
seed session_cursor json "$(printf '{"s":"s1","q":4,"p":"a!e!3","c":"alice","j":["b"],"r":{"a":{"n":1}}}' | base64 -w0 | tr '+/' '-_' | tr -d '=')"
seed session_cursor positions 'lobby!e1!12,team!e2!7'
seed utf8_chunks text 'abcdefgh\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 \xf0\x9d\x84\x9e \xe2\x82\xac'

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

echo "fuzz-smoke: building the fuzz targets (sanitizer: $sanitizer)" >&2
build_start=$SECONDS
if ! cargo fuzz build --sanitizer "$sanitizer" >"$log_dir/build.log" 2>&1; then
    cat "$log_dir/build.log" >&2
    echo "fuzz-smoke: build failed" >&2
    exit 1
fi
echo "fuzz-smoke: built in $((SECONDS - build_start))s" >&2

failed=()
for target in "${targets[@]}"; do
    echo "fuzz-smoke: running $target for ${seconds}s" >&2
    log="$log_dir/$target.log"
    start=$SECONDS
    if cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_limit" -timeout="$timeout" \
        >"$log" 2>&1; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        echo "fuzz-smoke: $target ok: ${runs:-?} runs, ${cov:-cov: ?}, $((SECONDS - start))s" >&2
    else
        failed+=("$target")
        echo "fuzz-smoke: $target FAILED; the end of its output:" >&2
        tail -n 60 "$log" >&2
        if grep -q 'panicked at' "$log"; then
            echo "fuzz-smoke: $target panicked:" >&2
            grep -A 2 'panicked at' "$log" | head -n 12 >&2
        fi
        for artifact in fuzz/artifacts/"$target"/*; do
            [ -f "$artifact" ] || continue
            [ "$artifact" -nt "$log_dir" ] || continue # only this run's
            echo "fuzz-smoke: $artifact (hex):" >&2
            od -An -v -tx1 "$artifact" | tr -d ' \n' | fold -w 64 >&2
            echo >&2
        done
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    echo "fuzz-smoke: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer TARGET fuzz/artifacts/TARGET/<file>" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets ran ${seconds}s each without a crash" >&2

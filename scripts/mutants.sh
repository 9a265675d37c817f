#!/usr/bin/env bash
# Mutation testing of the pure logic with cargo-mutants (https://mutants.rs): each mutant
# is a small change to the code (`>` made `>=`, a function body replaced by a constant,
# `&&` made `||`...) and the tests are run against it; a mutant the tests do not notice
# ("missed") is code whose behaviour no test pins.
#
#   scripts/mutants.sh                 # both targets, ws then server
#   scripts/mutants.sh ws              # roomcast-ws only
#   scripts/mutants.sh server          # roomcast-server only
#   scripts/mutants.sh ws 'crates/roomcast-ws/src/utf8.rs'    # only these files (globs)
#   scripts/mutants.sh ws -- -F 'check_size'                   # extra cargo-mutants args
#   scripts/mutants.sh --summary [ws|server]                   # re-print the last summary
#
# Targets and the tests run against each mutant:
#   ws      crates/roomcast-ws: frame/, utf8.rs, connection/, handshake/, built without the
#           tokio driver (--no-default-features: the sans-IO core), tested with its unit
#           tests (--lib) and the property tests (--test proptest_frames).
#   server  crates/roomcast-server: hub/ and protocol/, tested with its unit tests (--lib)
#           only: the integration tests start servers and are too slow to run per mutant.
#
# How long: 363 mutants in ws and about 190 in server; each is an incremental build of
# the mutated crate and a run of its tests, one mutant at a time (-j 1: the machine this
# was written on has 2 cores and other builds share it). Measured there, with other
# builds running: ws 15 min (5.5 of them building the dependencies once), server 26 min
# (19 of them building the dependencies, the HTTP client and JSON Schema crates of its
# dev-dependencies included). `-- --iterate` re-tests only what the last run did not
# catch. It is not run in CI: too long.
#
# Where the results go: target/mutants/<target>/mutants.out/ (caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json, a log per mutant under log/). cargo-mutants
# copies the tree (without target/) to a scratch directory and builds there, with its own
# target directory, so the main target/ is left alone. The summary printed at the end
# counts caught / missed / timeout / unviable per file, and marks the missed mutants
# listed below as known equivalent (no test can tell them from the original).
#
# Settings (environment):
#   MUTANTS_TIMEOUT        seconds a mutant's test run may take (default 120); a mutant
#                          that makes a test loop forever counts as "timeout" (caught)
#   MUTANTS_BUILD_TIMEOUT  seconds a mutant's build may take (default 600)
#   MUTANTS_JOBS           mutants tested at once (default 1)
#   MUTANTS_OUT            where mutants.out directories go (default target/mutants)
#
# Debug info is turned off for the scratch builds (CARGO_PROFILE_DEV_DEBUG=0): the tests
# do not need it, and linking is most of an incremental build.
#
# Known equivalent mutants (missed, and no test can tell them from the original), one
# regex per line between the markers, matched against the lines of missed.txt, each with
# why. They name the line and column, so a mutant whose code moved shows up as "missed,
# not known equivalent" again and gets looked at again.
# EQUIVALENT-BEGIN
# frame/header.rs, FrameHeader::write: FIN (bit 7), RSV (bits 4-6) and the opcode (bits
# 0-3) of byte 0 are disjoint bit ranges, and so are the mask bit (0x80) and the 7-bit
# length (at most 127) of byte 1: `|` and `^` give the same byte.
#   ^crates/roomcast-ws/src/frame/header.rs:146:(40|64): replace \| with \^ in FrameHeader::write$
#   ^crates/roomcast-ws/src/frame/header.rs:(150|154|159):35: replace \| with \^ in FrameHeader::write$
# frame/mask.rs, apply_mask: `buf.len() < 16` only picks the path; the block loop with no
# whole block leaves everything to the same xor_tail, so every comparison masks the same.
#   ^crates/roomcast-ws/src/frame/mask.rs:20:18: replace < with (==|>|<=) in apply_mask$
# frame/mask.rs, apply_mask_words: `k | (k << 32)` with k < 2^32: disjoint halves.
#   ^crates/roomcast-ws/src/frame/mask.rs:51:15: replace \| with \^ in apply_mask_words$
# utf8.rs, Utf8Validator::feed: `pending_len > 0` made `>= 0`: with nothing pending the
# first block validates the chunk's first (up to 4) bytes exactly as the general path
# would, keeping an incomplete tail the same way.
#   ^crates/roomcast-ws/src/utf8.rs:41:29: replace > with >= in Utf8Validator::feed$
# connection/receiver.rs, Receiver::receive: `unmasked > utf8_checked` made `>=` feeds
# the validator an empty slice, which changes nothing.
#   ^crates/roomcast-ws/src/connection/receiver.rs:95:59: replace > with >= in Receiver::receive$
# connection/mod.rs, reply: the `!tx.is_close_sent()` guards of the close echo and of the
# failing close made `true`: Sender::close refuses a second close (SendError::Closed,
# which reply ignores) and queues nothing.
#   ^crates/roomcast-ws/src/connection/mod.rs:(207:44|214:19): replace match guard !tx.is_close_sent\(\) with true in reply$
# EQUIVALENT-END
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
out=${MUTANTS_OUT:-$root/target/mutants}
timeout=${MUTANTS_TIMEOUT:-120}
build_timeout=${MUTANTS_BUILD_TIMEOUT:-600}
jobs=${MUTANTS_JOBS:-1}

# The known-equivalent regexes, from the block above.
equivalent_res() {
    sed -n '/^# EQUIVALENT-BEGIN/,/^# EQUIVALENT-END/p' "$root/scripts/mutants.sh" |
        sed -n 's/^#   //p'
}

# Per-file counts of one target's last run, and the missed mutants not known equivalent.
summary() {
    local name=$1 dir=$out/$1/mutants.out
    if [ ! -d "$dir" ]; then
        echo "mutants: no results for $name in $dir" >&2
        return 1
    fi
    local eq
    eq=$(mktemp)
    equivalent_res >"$eq"
    echo
    echo "== $name ($dir)"
    for kind in caught missed timeout unviable previously_caught; do
        [ -f "$dir/$kind.txt" ] || : >"$dir/$kind.txt"
    done
    # One line per mutant, "kind file"; missed ones matching a known equivalent become
    # "equivalent".
    {
        for kind in caught timeout unviable; do
            sed "s|^\([^:]*\):.*|$kind \1|" "$dir/$kind.txt"
        done
        # With --iterate, what earlier runs caught (or found unviable) is not run again.
        sed "s|^\([^:]*\):.*|earlier \1|" "$dir/previously_caught.txt"
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            file=${line%%:*}
            if [ -s "$eq" ] && grep -qEf "$eq" <<<"$line"; then
                echo "equivalent $file"
            else
                echo "missed $file"
            fi
        done <"$dir/missed.txt"
    } | awk '
        { n[$2, $1]++; files[$2] = 1; total[$1]++ }
        END {
            printf "%-50s %6s %6s %6s %7s %8s %7s\n", "file", "caught", "missed", "equiv", "timeout", "unviable", "earlier"
            for (f in files) {
                printf "%-50s %6d %6d %6d %7d %8d %7d\n", f, n[f, "caught"], n[f, "missed"], n[f, "equivalent"], n[f, "timeout"], n[f, "unviable"], n[f, "earlier"]
            }
            printf "%-50s %6d %6d %6d %7d %8d %7d\n", "total", total["caught"], total["missed"], total["equivalent"], total["timeout"], total["unviable"], total["earlier"]
        }' | { read -r head; echo "$head"; sort; }
    local unexplained
    unexplained=$(if [ -s "$eq" ]; then grep -vEf "$eq" "$dir/missed.txt" || true; else cat "$dir/missed.txt"; fi)
    rm -f "$eq"
    if [ -n "$unexplained" ]; then
        echo "-- missed, not known equivalent:"
        echo "$unexplained"
        return 2
    fi
}

run() {
    local name=$1
    shift
    local -a files=() extra=()
    while [ "$#" -gt 0 ]; do
        if [ "$1" = "--" ]; then
            shift
            extra=("$@")
            break
        fi
        files+=("$1")
        shift
    done
    local -a args test_args
    case $name in
        ws)
            [ "${#files[@]}" -gt 0 ] || files=(
                'crates/roomcast-ws/src/frame/*.rs'
                crates/roomcast-ws/src/utf8.rs
                'crates/roomcast-ws/src/connection/*.rs'
                'crates/roomcast-ws/src/handshake/*.rs'
            )
            args=(-p roomcast-ws --no-default-features)
            test_args=(--lib --test=proptest_frames)
            ;;
        server)
            [ "${#files[@]}" -gt 0 ] || files=(
                'crates/roomcast-server/src/hub/*.rs'
                'crates/roomcast-server/src/protocol/*.rs'
            )
            args=(-p roomcast-server)
            test_args=(--lib)
            ;;
        *)
            echo "mutants: unknown target $name (ws or server)" >&2
            exit 2
            ;;
    esac
    for f in "${files[@]}"; do
        args+=(-f "$f")
    done
    # -C: for the build (`cargo test --no-run`) as well as the test run, so only the test
    # targets named are built.
    for a in "${test_args[@]}"; do
        args+=(-C "$a")
    done
    mkdir -p "$out/$name"
    echo "mutants: $name: cargo mutants ${args[*]} ${extra[*]}" >&2
    local start=$SECONDS status=0
    CARGO_PROFILE_DEV_DEBUG=0 CARGO_TERM_COLOR=never \
        cargo mutants "${args[@]}" -j "$jobs" --timeout "$timeout" \
        --build-timeout "$build_timeout" -o "$out/$name" --colors never \
        "${extra[@]}" || status=$?
    echo "mutants: $name took $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s" \
        "(cargo mutants exit $status: 0 all caught, 2 some missed, 3 timeouts, 4 baseline failed)" >&2
    # Exit codes 2 (missed) and 3 (timeouts) are results, reported by the summary.
    case $status in 0 | 2 | 3) ;; *) exit "$status" ;; esac
}

main() {
    if ! cargo mutants --version >/dev/null 2>&1; then
        echo "mutants: installing cargo-mutants" >&2
        cargo install cargo-mutants --locked
    fi

    if [ "${1:-}" = "--summary" ]; then
        shift
        status=0
        for t in "${@:-ws server}"; do
            for name in $t; do summary "$name" || status=$?; done
        done
        exit "$status"
    fi

    targets=(ws server)
    if [ "$#" -gt 0 ]; then
        targets=("$1")
        shift
    fi
    status=0
    for name in "${targets[@]}"; do
        run "$name" "$@"
    done
    for name in "${targets[@]}"; do
        summary "$name" || status=$?
    done
    exit "$status"
}

# bash reads a script as it runs it: main is read in full before it starts, and exits, so
# editing this file during a run does not change what the running copy does.
main "$@"
# shellcheck disable=SC2317 # main exits itself; this is for the reading, not the running
exit

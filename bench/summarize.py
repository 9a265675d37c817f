#!/usr/bin/env python3
"""Summarize bench/compare.sh results: per scenario and server, the median and range of
each figure over the rounds, and roomcast's ratio to each peer.

Every run is checked too: a run with an error or without a result, a bench that did not
pass (`ok` false), or any loss the bench reports (lost, out of order or repeated, wrong or
missing echoes, failed or dropped connections, failed subscribers) is named on stderr,
and the exit status is 1.

usage: summarize.py results.jsonl
"""
import json
import statistics
import sys

# scenario: [(figure, key in the bench's JSON, unit, lower is better)]
FIGURES = {
    "fanout": [("server CPU per delivery", "server_cpu_us_per_delivery", "µs", True),
               ("deliveries/s", "deliveries_per_second", "/s", False),
               ("lost", "lost", "", True)],
    "fanout-deflate": [("server CPU per delivery", "server_cpu_us_per_delivery", "µs", True),
                       ("deliveries/s", "deliveries_per_second", "/s", False),
                       ("lost", "lost", "", True)],
    "echo64": [("server CPU per message", "server_cpu_us_per_message", "µs", True),
               ("messages/s", "messages_per_second", "/s", False)],
    "echo16k": [("server CPU per message", "server_cpu_us_per_message", "µs", True),
                ("messages/s", "messages_per_second", "/s", False)],
    "echo-h2": [("server CPU per message", "server_cpu_us_per_message", "µs", True),
                ("messages/s", "messages_per_second", "/s", False)],
    "connect": [("memory per idle connection", "server_bytes_per_connection", "B", True),
                ("handshakes/s", "handshakes_per_second", "/s", False),
                ("server CPU per connection", "server_cpu_us_per_connection", "µs", True)],
    "connect19k": [("memory per idle connection", "server_bytes_per_connection", "B", True),
                   ("handshakes/s", "handshakes_per_second", "/s", False)],
}
# The pairs compared, where not every roomcast server against every peer: like with like,
# and what compression costs roomcast.
PAIRS = {
    "fanout-deflate": [("roomcast-deflate", "node-ws-broadcast-deflate"),
                       ("roomcast-ws", "node-ws-broadcast"),
                       ("roomcast-deflate", "roomcast-ws")],
    "echo-h2": [("roomcast-tls-h2", "roomcast-tls"),
                ("roomcast-tls-h2-1", "roomcast-tls")],
}
TITLES = {
    "fanout": "Fan-out: 1 room, 64 B messages, closed loop (window 16); `roomcast-ws` is the /ws protocol, the others raw broadcast",
    "fanout-deflate": "Fan-out with permessage-deflate: 1 room, 512 B chat-like messages, closed loop (window 16); each server with compression off, then on (`-deflate`: the clients offer it)",
    "echo64": "Echo: 64 B binary messages, closed loop per connection",
    "echo16k": "Echo: 16 KiB binary messages, closed loop per connection",
    "echo-h2": "Echo over TLS, 64 B: each WebSocket on its own HTTP/1.1 connection (`roomcast-tls`), as HTTP/2 streams all on one connection (`-h2`), one stream per connection (`-h2-1`)",
    "connect": "Connect and hold (`roomcast-ws`: hello + join a room on /ws; the others a bare socket)",
    "connect19k": "Connect and hold, as many as the open-file limit allows (room members on /ws)",
}


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "B":
        return f"{v / 1024:.2f} KiB" if v >= 1024 else f"{v:.0f} B"
    if unit == "/s":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else (f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}")
    if unit == "µs":
        return f"{v:.3f} µs" if v < 1 else f"{v:.2f} µs"
    return f"{v:g}"


# What must be zero in every result that has it.
MUST_BE_ZERO = ["lost", "out_of_order", "wrong", "failed", "dropped", "failed_subscribers"]


def problems(r):
    """Why result `r` is not a pass (empty when it is)."""
    found = []
    if "error" in r:
        return [r["error"]] + ([f"the bench exited with status {r['bench_exit']}"] if r.get("bench_exit") else [])
    if r.get("bench_exit"):
        found.append(f"the bench exited with status {r['bench_exit']}")
    if r.get("ok") is not True:
        found.append(r.get("failure") or "the bench did not report ok")
    for key in MUST_BE_ZERO:
        if r.get(key):
            found.append(f"{key}: {r[key]}")
    if "echoes" in r and r.get("echoes") != r.get("expected"):
        found.append(f"{r.get('echoes')} of {r.get('expected')} echoes")
    found += [f"no {key}" for _, key, _, _ in FIGURES.get(r["case"], []) if r.get(key) is None]
    return found


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    failed = [(r, p) for r in rows if (p := problems(r))]
    for r, p in failed:
        print(f"FAILED: {r['case']} {r['server']} round {r['round']}: {'; '.join(p)}", file=sys.stderr)
    if not rows:
        print(f"FAILED: no results in {path}", file=sys.stderr)
    cases = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
    rounds = max((r["round"] for r in rows), default=0)
    print(f"Rounds: {rounds}. Medians, with the range over the rounds in brackets.\n")
    for case in cases:
        print(f"### {TITLES.get(case, case)}\n")
        servers = []
        for r in rows:
            if r["case"] == case and r["server"] not in servers:
                servers.append(r["server"])
        figs = FIGURES.get(case, [])
        print("| server | " + " | ".join(f for f, _, _, _ in figs) + " |")
        print("|---" * (len(figs) + 1) + "|")
        medians = {}
        for s in servers:
            cells = []
            for fig, key, unit, _ in figs:
                vals = [r[key] for r in rows if r["case"] == case and r["server"] == s and r.get(key) is not None]
                if not vals:
                    cells.append("-")
                    continue
                m = statistics.median(vals)
                medians[(s, key)] = m
                rng = f" [{fmt(min(vals), unit)} - {fmt(max(vals), unit)}]" if len(vals) > 1 else ""
                cells.append(fmt(m, unit) + rng)
            print(f"| {s} | " + " | ".join(cells) + " |")
        ours = [s for s in servers if s.startswith("roomcast")]
        peers = [s for s in servers if not s.startswith("roomcast")]
        lines = []
        for fig, key, unit, lower in figs:
            if key == "lost":
                continue
            for o, p in PAIRS.get(case, [(o, p) for o in ours for p in peers]):
                a, b = medians.get((o, key)), medians.get((p, key))
                if a and b:
                    better = b / a if lower else a / b
                    lines.append(f"{fig}: {o} is {better:.2f}x {p}")
        if lines:
            print("\nRatios (above 1: roomcast better): " + "; ".join(lines) + ".")
        print()


    return 1 if failed or not rows else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

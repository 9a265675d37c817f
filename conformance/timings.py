#!/usr/bin/env python3
"""Autobahn 9.* case times of roomcast beside tokio-tungstenite, over several rounds.

usage: timings.py OUT_DIR ROUNDS CPU_FILE

Reads OUT_DIR/timings-{roomcast,tungstenite}-{round}/index.json and the server CPU times
(ms, from /proc) in CPU_FILE ("round agent ms" lines). Prints, per case, the median
duration of each server and the ratio, then the totals. The case durations are measured
by wstest (single-threaded Python) and include its own work, so they drift run to run;
the server CPU time is the steadier figure.
"""
import json
import os
import statistics
import sys

AGENTS = ("roomcast", "tungstenite")


def key(cid):
    return tuple(int(p) for p in cid.split("."))


def main(out, rounds, cpu_file):
    rounds = int(rounds)
    durations = {a: {} for a in AGENTS}
    for a in AGENTS:
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"timings-{a}-{r}", "index.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                for cid, c in json.load(f)[a].items():
                    durations[a].setdefault(cid, []).append(c["duration"])
    cases = sorted(set(durations[AGENTS[0]]) & set(durations[AGENTS[1]]), key=key)
    print(f"{'case':<8} {'roomcast ms':>12} {'tungstenite ms':>15} {'ratio':>6}   (medians of {rounds} rounds)")
    totals = {a: 0 for a in AGENTS}
    for cid in cases:
        m = {a: statistics.median(durations[a][cid]) for a in AGENTS}
        for a in AGENTS:
            totals[a] += m[a]
        ratio = m["roomcast"] / m["tungstenite"] if m["tungstenite"] else 1.0
        print(f"{cid:<8} {m['roomcast']:>12.0f} {m['tungstenite']:>15.0f} {ratio:>6.2f}")
    print(f"{'total':<8} {totals['roomcast']:>12.0f} {totals['tungstenite']:>15.0f} "
          f"{totals['roomcast'] / totals['tungstenite']:>6.2f}")
    cpu = {a: [] for a in AGENTS}
    with open(cpu_file) as f:
        for line in f:
            _, a, ms = line.split()
            cpu[a].append(int(ms))
    print("server CPU for all of 9.* (ms, per round): " + "; ".join(
        f"{a} {cpu[a]} median {statistics.median(cpu[a]):.0f}" for a in AGENTS if cpu[a]))
    if cpu["roomcast"] and cpu["tungstenite"]:
        print(f"server CPU ratio roomcast/tungstenite: "
              f"{statistics.median(cpu['roomcast']) / statistics.median(cpu['tungstenite']):.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])

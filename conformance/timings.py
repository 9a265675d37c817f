#!/usr/bin/env python3
"""Print per-case durations of two Autobahn reports side by side.

usage: timings.py REPORT_A AGENT_A REPORT_B AGENT_B
"""
import json
import os
import sys


def load(d, agent):
    with open(os.path.join(d, "index.json")) as f:
        return {cid: c for cid, c in json.load(f)[agent].items()}


def key(cid):
    return tuple(int(p) for p in cid.split("."))


def main(a_dir, a, b_dir, b):
    ra, rb = load(a_dir, a), load(b_dir, b)
    print(f"{'case':<8} {a + ' ms':>14} {b + ' ms':>16} {'ratio':>7}   verdicts")
    ta = tb = 0
    for cid in sorted(set(ra) & set(rb), key=key):
        da, db = ra[cid]["duration"], rb[cid]["duration"]
        ta, tb = ta + da, tb + db
        ratio = f"{da / db:.2f}" if db else "-"
        print(f"{cid:<8} {da:>14} {db:>16} {ratio:>7}   {ra[cid]['behavior']}/{rb[cid]['behavior']}")
    print(f"{'total':<8} {ta:>14} {tb:>16} {ta / tb if tb else 0:>7.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])

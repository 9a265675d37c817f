#!/usr/bin/env python3
"""Compare an Autobahn report with the committed expected results.

usage: compare.py REPORT_DIR AGENT EXPECTED.json [--update]

Only the verdicts are compared (`behavior` and `behaviorClose` per case), never timings.
Every case must be OK or INFORMATIONAL: NON-STRICT, UNIMPLEMENTED and FAILED are failures
even if the expected file were edited to allow them. With --update the expected file is
rewritten from the report (review the diff before committing it).
Exit status: 0 when the report matches, 1 otherwise, 2 when the report is missing.
"""
import json
import os
import sys

PASSING = {"OK", "INFORMATIONAL"}


def case_key(cid):
    return tuple(int(p) if p.isdigit() else p for p in cid.split("."))


def main(argv):
    update = "--update" in argv
    args = [a for a in argv if a != "--update"]
    if len(args) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    report_dir, agent, expected_path = args
    index = os.path.join(report_dir, "index.json")
    if not os.path.exists(index):
        print(f"compare: no report at {index}", file=sys.stderr)
        return 2
    with open(index) as f:
        report = json.load(f)
    if agent not in report:
        print(f"compare: agent {agent!r} not in {index} (agents: {sorted(report)})", file=sys.stderr)
        return 1
    got = {cid: {"behavior": c["behavior"], "behaviorClose": c["behaviorClose"]} for cid, c in report[agent].items()}
    ordered = {cid: got[cid] for cid in sorted(got, key=case_key)}

    if update:
        with open(expected_path, "w") as f:
            lines = [f"  {json.dumps(cid)}: {json.dumps(v)}" for cid, v in ordered.items()]
            f.write("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"compare: wrote {len(ordered)} cases to {expected_path}")

    with open(expected_path) as f:
        expected = json.load(f)
    problems = []
    for cid in sorted(set(expected) | set(got), key=case_key):
        e, g = expected.get(cid), got.get(cid)
        if g is None:
            problems.append(f"{cid}: missing from the report (expected {e})")
        elif e is None:
            problems.append(f"{cid}: not in the expected results (got {g})")
        elif e != g:
            problems.append(f"{cid}: expected {e}, got {g}")
        if g is not None and (g["behavior"] not in PASSING or g["behaviorClose"] not in PASSING):
            problems.append(f"{cid}: {g['behavior']} / close {g['behaviorClose']} is not a pass")
    counts = {}
    for c in got.values():
        counts[c["behavior"]] = counts.get(c["behavior"], 0) + 1
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    if problems:
        print(f"compare: {agent}: {len(problems)} difference(s) from {expected_path} ({summary})")
        for p in problems:
            print("  " + p)
        return 1
    print(f"compare: {agent}: {len(got)} cases match {os.path.basename(expected_path)} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Per-request profile from two callgrind runs of the same proxy.

    cgdiff.py ANNOTATE_N1 ANNOTATE_N2 N1 N2 [TOP]

Both files are `callgrind_annotate --auto=no` outputs (with or without
--inclusive=yes) of runs that served N1 and N2 requests. Each function's
(Ir(N2) - Ir(N1)) / (N2 - N1) is its cost per request, start-up and
shutdown cancelled out; the TOP (default 40) largest are printed with their
share of the per-request total. Standard library only.
"""

import re
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$")


def load(path):
    costs, total = {}, None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("-- Auto-annotated source") or line.startswith("-- User-annotated"):
                # Past the function table: per-line source annotation.
                break
            m = LINE.match(line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            name = m.group(2).strip()
            if name == "PROGRAM TOTALS":
                total = ir
                continue
            # "file:function [object]": keep the function, drop the file,
            # which is where the code was inlined from rather than who ran it.
            name = re.sub(r"\s+\[[^\]]*\]$", "", name)
            if ":" in name:
                name = name.split(":", 1)[1]
            costs[name] = costs.get(name, 0) + ir
    return costs, total


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    a, ta = load(argv[1])
    b, tb = load(argv[2])
    n1, n2 = int(argv[3]), int(argv[4])
    top = int(argv[5]) if len(argv) > 5 else 40
    per_req_total = (tb - ta) / (n2 - n1) if ta is not None and tb is not None else None
    rows = []
    for name in set(a) | set(b):
        d = (b.get(name, 0) - a.get(name, 0)) / (n2 - n1)
        if d > 0:
            rows.append((d, name))
    rows.sort(reverse=True)
    if per_req_total:
        print("total: %.0f instructions per request" % per_req_total)
    for d, name in rows[:top]:
        share = " %5.1f%%" % (100 * d / per_req_total) if per_req_total else ""
        print("%9.0f%s  %s" % (d, share, name[:160]))


if __name__ == "__main__":
    main(sys.argv)

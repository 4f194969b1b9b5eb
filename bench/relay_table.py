#!/usr/bin/env python3
"""relay_table.py - cutover vs Postfix end-to-end relay table (medians) from smtp-relay.sh's TSV:
delivered msgs/s (until the sinks hold all N), relay CPU ms/msg, ratio."""
import csv
import statistics
import sys


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main():
    rows = []
    for f in sys.argv[1:]:
        with open(f) as fh:
            rows += [r for r in csv.DictReader(fh, delimiter="\t") if r["verify"] == "PASS"]
    groups = {}
    for r in rows:
        relay, setup = r["label"].split("-", 1)
        groups.setdefault((setup, int(r["bytes"]), int(r["C"]), relay), []).append(r)
    print("| setup | size | sessions | cutover delivered msgs/s | Postfix delivered msgs/s | ratio | cutover / Postfix CPU ms/msg | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for setup, size, c in sorted({k[:3] for k in groups}):
        cut = groups.get((setup, size, c, "cutover"), [])
        pf = groups.get((setup, size, c, "postfix"), [])
        cr = med([fnum(r["e2e_rate"]) for r in cut])
        pr = med([fnum(r["e2e_rate"]) for r in pf])
        ccpu = med([1000 * fnum(r["relay_cpu_s"]) / int(r["N"]) for r in cut if fnum(r["relay_cpu_s"])])
        pcpu = med([1000 * fnum(r["relay_cpu_s"]) / int(r["N"]) for r in pf if fnum(r["relay_cpu_s"])])
        f = lambda v, fmt="%.0f": "-" if v is None else fmt % v
        ratio = f(cr / pr, "%.2f×") if cr and pr else "-"
        label = f"{size // 1024} KB"
        print(f"| {setup} | {label} | {c} | {f(cr)} | {f(pr)} | {ratio} | {f(ccpu, '%.2f')} / {f(pcpu, '%.2f')} | {len(cut)}+{len(pf)} |")
    ab = [k for k in sorted({k[:3] for k in groups}) if (*k, "cutover_before") in groups]
    if ab:
        print()
        print("| setup | size | sessions | cutover msgs/s | cutover before msgs/s | after / before | runs |")
        print("|---|---|---|---|---|---|---|")
        for setup, size, c in ab:
            cr = med([fnum(r["e2e_rate"]) for r in groups.get((setup, size, c, "cutover"), [])])
            br = med([fnum(r["e2e_rate"]) for r in groups[(setup, size, c, "cutover_before")]])
            r = "-" if not (cr and br) else "%.3f" % (cr / br)
            n = len(groups[(setup, size, c, "cutover_before")])
            print(f"| {setup} | {size // 1024} KB | {c} | {cr or 0:.0f} | {br or 0:.0f} | {r} | {n} |")


if __name__ == "__main__":
    main()

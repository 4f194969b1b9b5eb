#!/usr/bin/env python3
"""intake_table.py - cutover vs Postfix side-by-side table (medians) from smtp-intake.sh's TSV:
accepted msgs/s, p50/p99 acceptance latency (ms, per message incl. connect+EHLO), ratios."""
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
        key = (int(r["bytes"]), int(r["C"]), r["label"])
        groups.setdefault(key, []).append(r)
    print("| size | sessions | cutover msgs/s | Postfix msgs/s | ratio | cutover p50 / p99 ms | Postfix p50 / p99 ms | p99 ratio | runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    ab = []
    for size, c in sorted({(k[0], k[1]) for k in groups}):
        cut = groups.get((size, c, "cutover"), [])
        pf = groups.get((size, c, "postfix"), [])
        cr = med([fnum(r["accept_rate"]) for r in cut])
        pr = med([fnum(r["accept_rate"]) for r in pf])
        c50 = med([fnum(r["p50_ms"]) for r in cut]); c99 = med([fnum(r["p99_ms"]) for r in cut])
        p50 = med([fnum(r["p50_ms"]) for r in pf]); p99 = med([fnum(r["p99_ms"]) for r in pf])
        f = lambda v, fmt="%.0f": "-" if v is None else fmt % v
        base = groups.get((size, c, "cutover-before"), [])
        br = med([fnum(r["accept_rate"]) for r in base])
        ratio = f(cr / pr, "%.2f×") if cr and pr else "-"
        p99r = f(c99 / p99, "%.2f") if c99 and p99 else "-"
        print(f"| {size // 1024} KB | {c} | {f(cr)} | {f(pr)} | {ratio} | {f(c50, '%.1f')} / {f(c99, '%.1f')} | "
              f"{f(p50, '%.1f')} / {f(p99, '%.1f')} | {p99r} | {len(cut)}+{len(pf)} |")
        if base:
            ab.append((size, c, cr, br, len(base)))
    if ab:
        print()
        print("| size | sessions | cutover msgs/s | cutover-before msgs/s | after / before | runs |")
        print("|---|---|---|---|---|---|")
        for size, c, cr, br, n in ab:
            r = "-" if not (cr and br) else "%.3f" % (cr / br)
            print(f"| {size // 1024} KB | {c} | {cr or 0:.0f} | {br or 0:.0f} | {r} | {n} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# bench/delta-rounds.sh - the "+100 messages" delta pass, cutover and mbsync side by side, in
# interleaved rounds on ../shared/bench/imap/backfill-bench.sh (one prepared corpus, both tools'
# destinations kept apart with save/restore). Each round appends 100 new messages to the old
# side once, then runs each tool's delta pass on its own saved destination, alternating which
# tool goes first; prints every timing and the medians.
# Usage: ROUNDS=5 bench/delta-rounds.sh   (knobs of the harness apply: W, N, USERS, ...)
# Needs: cargo build --release; dovecot, mbsync (the harness checks).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
H=${HARNESS:-$HERE/../../shared/bench/imap/backfill-bench.sh}
ROUNDS=${ROUNDS:-5}
U=${BENCH_USER:-alice}
export BACKFILL_CMD=$HERE/backfill-adapter.sh
export W=${W:-/tmp/bench-imap/delta}
export USERS=${USERS:-$U}
TOOLS=(cutover mbsync)
"$H" prepare >/dev/null
for t in "${TOOLS[@]}"; do
    "$H" pass "$t" "$U" first >/dev/null
    "$H" save "$t" "$U" >/dev/null
done
for ((r = 1; r <= ROUNDS; r++)); do
    "$H" delta "$U" 100 >/dev/null
    order=("${TOOLS[@]}")
    ((r % 2 == 0)) && order=("${TOOLS[1]}" "${TOOLS[0]}")
    for t in "${order[@]}"; do
        "$H" restore "$t" "$U" >/dev/null
        # The harness times the tool's process alone (measure.py) and verifies afterwards.
        "$H" pass "$t" "$U" delta "$t-delta-r$r" | grep -E 'verify' || true
        "$H" save "$t" "$U" >/dev/null
    done
done
# wall_s of each labelled pass, from the harness's results file; medians and the ratio.
python3 - "$W/results.jsonl" "${TOOLS[@]}" <<'PY'
import json, statistics, sys
path, tools = sys.argv[1], sys.argv[2:]
rows = [json.loads(l) for l in open(path) if l.strip()]
t = {k: [(r["label"], r["wall_s"]) for r in rows if r["label"].startswith(k + "-delta-r")] for k in tools}
for k in tools:
    print(k, " ".join(f"{w:.2f}" for _, w in t[k]))
m = {k: statistics.median(w for _, w in t[k]) for k in tools}
print("median of %d rounds: %s; ratio %s/%s %.2f" % (
    len(t[tools[0]]), ", ".join(f"{k} {m[k]:.2f} s" for k in tools), tools[0], tools[1], m[tools[0]] / m[tools[1]]))
PY

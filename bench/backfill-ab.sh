#!/usr/bin/env bash
# backfill-ab.sh - A/B of two cutover builds on the IMAP backfill: first passes and no-op passes of
# one mailbox, old Dovecot -> new Dovecot, the two builds interleaved (the one going first
# alternates per round), through the shared harness (../shared/bench/imap/backfill-bench.sh, its
# corpus, its verification). Prints the median wall time per build and the after/before ratio.
#
#   bench/backfill-ab.sh --baseline PATH [--baseline-adapter FILE] [--cutover PATH]
#                        [--rounds K] [--user alice] [--skip-prepare | --prepare-each]
#
# --prepare-each resets both servers and the corpus before every round (the destination
# server's CPU per pass drifts upward over consecutive passes otherwise).
#
# --baseline is the older cutover binary; --baseline-adapter that build's bench/backfill-adapter.sh
# (default: this one). N (messages per user, default 5000) and W are the harness's knobs.
# Build first: cargo build --release --bin cutover
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS=${HARNESS:-$HERE/../../shared/bench/imap/backfill-bench.sh}
CUTOVER=$HERE/../target/release/cutover
BASELINE=""; BASE_ADAPTER=$HERE/backfill-adapter.sh; ROUNDS=3; USER_=alice; PREPARE=1; EACH=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --baseline) BASELINE=$2; shift 2 ;;
    --baseline-adapter) BASE_ADAPTER=$2; shift 2 ;;
    --cutover) CUTOVER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --user) USER_=$2; shift 2 ;;
    --skip-prepare) PREPARE=0; shift ;;
    --prepare-each) EACH=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "backfill-ab.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -x $CUTOVER && -x $BASELINE && -f $BASE_ADAPTER ]] || {
    echo "backfill-ab.sh: needs --baseline PATH (executable), $CUTOVER and the adapter" >&2; exit 2; }
(( ROUNDS >= 1 && ROUNDS <= 10 )) || { echo "--rounds must be 1..10" >&2; exit 2; }
export W=${W:-/tmp/bench-imap/work} N=${N:-5000}
NEW_CMD="CUTOVER_BIN=$CUTOVER bash $HERE/backfill-adapter.sh"
OLD_CMD="CUTOVER_BIN=$BASELINE bash $BASE_ADAPTER"
(( PREPARE )) && { "$HARNESS" prepare || exit 1; }
# The harness's results file is reset by `prepare`: collect each round's rows here.
ACC=$(dirname "$W")/backfill-ab-results.jsonl
: > "$ACC"
for round in $(seq 1 "$ROUNDS"); do
    (( EACH && round > 1 )) && { "$HARNESS" prepare > /dev/null || exit 1; }
    order="new old"; (( round % 2 == 0 )) && order="old new"
    for b in $order; do
        cmd=$NEW_CMD; tool=cutover; [[ $b == old ]] && { cmd=$OLD_CMD; tool=cutover_before; }
        BACKFILL_CMD=$cmd "$HARNESS" pass "$tool" "$USER_" first "ab-$tool-first" || exit 1
        BACKFILL_CMD=$cmd "$HARNESS" pass "$tool" "$USER_" noop "ab-$tool-noop" || exit 1
    done
    cat "$W/results.jsonl" >> "$ACC" && : > "$W/results.jsonl"
done
echo "rows -> $ACC" >&2
python3 - "$ACC" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def walls(label):
    return [r["wall_s"] for r in rows if r["label"] == label and r["rc"] == 0]
print("| pass | cutover s (median) | cutover before s (median) | after / before | runs |")
print("|---|---|---|---|---|")
for kind in ("first", "noop"):
    a, b = walls(f"ab-cutover-{kind}"), walls(f"ab-cutover_before-{kind}")
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {kind} | {ma:.2f} ({', '.join(map(str, a))}) | {mb:.2f} ({', '.join(map(str, b))}) "
              f"| {ma / mb:.3f} | {len(a)}+{len(b)} |")
PY

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
declare -A times
for ((r = 1; r <= ROUNDS; r++)); do
    "$H" delta "$U" 100 >/dev/null
    order=("${TOOLS[@]}")
    ((r % 2 == 0)) && order=("${TOOLS[1]}" "${TOOLS[0]}")
    for t in "${order[@]}"; do
        "$H" restore "$t" "$U" >/dev/null
        s=$(date +%s.%N)
        "$H" pass "$t" "$U" delta >/dev/null
        e=$(date +%s.%N)
        "$H" save "$t" "$U" >/dev/null
        d=$(echo "$e - $s" | bc)
        times[$t]+="$d "
        printf 'round %d %-8s %.3f s\n' "$r" "$t" "$d"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
mc=$(echo "${times[cutover]}" | median)
mm=$(echo "${times[mbsync]}" | median)
printf 'median of %d rounds: cutover %.3f s, mbsync %.3f s, ratio cutover/mbsync %.2f\n' \
    "$ROUNDS" "$mc" "$mm" "$(echo "$mc / $mm" | bc -l)"

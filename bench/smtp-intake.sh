#!/usr/bin/env bash
# smtp-intake.sh - SMTP intake benchmark: cutover vs Postfix, side by side, interleaved.
#
# Accepted msgs/s and p50/p99 acceptance latency (smtp_load.py driver: one session per message,
# like smtp-source) for each size x concurrency, with both relays durable (Postfix: queue file
# fsync before 250; cutover: group-committed flush before 250). cutover has no delivery yet, so
# its sink gets nothing (EXPECT_A_PER_MSG=0); Postfix delivers to smtp-sink meanwhile, as it
# always does. Uses the shared harness (../shared/bench/smtp beside the repository, override with HARNESS=).
#
#   bench/smtp-intake.sh [--rounds K] [--sizes "2k 100k"] [--conc "1 10 50"] [--quick]
#                        [--cutover PATH] [--results FILE]
#                        [--baseline PATH --baseline-config FILE]
#
# CUTOVER_CONFIG=FILE replaces bench/cutover-intake.toml for the cutover under test.
#
# --baseline adds a third relay, an older cutover binary with its own config (label
# cutover-before), to every round: an A/B run of two builds under the same conditions. The
# table then shows the after/before ratio of cutover's own rate.
#
# Needs Debian's postfix (smtp-source/smtp-sink + the reference relay) and python3.
# Build first: cargo build --release --bin cutover
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS=${HARNESS:-$HERE/../../shared/bench/smtp}
ROUNDS=1; SIZES="2k 100k"; CONCS="1 10 50"; QUICK=0
CUTOVER=${CUTOVER:-$HERE/../target/release/cutover}
RESULTS=""; BASELINE=""; BASELINE_CONFIG=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --conc) CONCS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --cutover) CUTOVER=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --baseline-config) BASELINE_CONFIG=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "smtp-intake.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -x $CUTOVER ]] || { echo "smtp-intake.sh: $CUTOVER not found (cargo build --release --bin cutover)" >&2; exit 2; }
(( ROUNDS >= 1 && ROUNDS <= 10 )) || { echo "--rounds must be 1..10" >&2; exit 2; }
CUTOVER=$(cd "$(dirname "$CUTOVER")" && pwd)/$(basename "$CUTOVER")
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE && -f $BASELINE_CONFIG ]] || {
        echo "smtp-intake.sh: --baseline needs an executable and --baseline-config FILE" >&2; exit 2; }
    BASELINE_CONFIG=$(cd "$(dirname "$BASELINE_CONFIG")" && pwd)/$(basename "$BASELINE_CONFIG")
fi
RESULTS=${RESULTS:-/tmp/relay-bench/intake-$(date +%Y%m%d-%H%M%S).tsv}
export WAIT_QUIET_S=${WAIT_QUIET_S:-10} QUIET_CORES=${QUIET_CORES:-0.5}

n_for() {  # messages per run: a few seconds each on 2 vCPU
    local size=$1 c=$2 n
    case $size in
    2k) n=$(( c == 1 ? 1000 : 3000 )) ;;
    *)  n=$(( c == 1 ? 500 : 1500 )) ;;
    esac
    (( QUICK )) && n=$(( n / 5 ))
    echo "$n"
}

CUTOVER_CONFIG=${CUTOVER_CONFIG:-$HERE/cutover-intake.toml}
CUT_CMD="rm -rf /tmp/relay-bench/cutover-state; RUST_LOG=info exec $CUTOVER serve --no-deliver -c $CUTOVER_CONFIG"
BASE_CMD="rm -rf /tmp/relay-bench/cutover-state; RUST_LOG=info exec $BASELINE serve --no-deliver -c $BASELINE_CONFIG"
echo "results -> $RESULTS" >&2
for round in $(seq 1 "$ROUNDS"); do
    for size in $SIZES; do
        for c in $CONCS; do
            n=$(n_for "$size" "$c")
            # Rotate which relay goes first from round to round.
            relays="postfix cutover"; [[ -n $BASELINE ]] && relays="postfix cutover baseline"
            read -ra rs <<<"$relays"; k=$(( (round - 1) % ${#rs[@]} ))
            order="${rs[*]:k} ${rs[*]:0:k}"
            for relay in $order; do
                if [[ $relay == postfix ]]; then
                    RELAY_CMD="$HARNESS/postfix-relay.sh start single" \
                    RELAY_STOP_CMD="$HARNESS/postfix-relay.sh stop" \
                    RELAY_PIDFILE=/tmp/pf-bench/spool/pid/master.pid \
                    RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                        --driver py --label postfix || echo "postfix run failed" >&2
                elif [[ $relay == baseline ]]; then
                    RELAY_CMD="$BASE_CMD" EXPECT_A_PER_MSG=0 \
                    RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                        --driver py --label cutover-before || echo "baseline run failed" >&2
                else
                    RELAY_CMD="$CUT_CMD" EXPECT_A_PER_MSG=0 \
                    RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                        --driver py --label cutover || echo "cutover run failed" >&2
                fi
            done
        done
    done
done
python3 "$HERE/intake_table.py" "$RESULTS"

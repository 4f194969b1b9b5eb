#!/usr/bin/env bash
# smtp-relay.sh - end-to-end relay benchmark: cutover vs Postfix, side by side, interleaved.
#
# Delivered msgs/s (driver start until the smtp-sink(s) hold all N messages) for single delivery
# (one sink) and dual delivery (two sinks; Postfix: recipient_bcc), 2 KB and 100 KB, at C
# concurrent sessions, both relays durable (Postfix: queue file fsync before 250; cutover:
# group-committed flush before 250). Uses the shared harness (../shared/bench/smtp beside the repository, override
# with HARNESS=); it verifies every sink got exactly N (no loss, no duplicates).
#
#   bench/smtp-relay.sh [--rounds K] [--setups "single dual"] [--sizes "2k 100k"] [--conc "50"]
#                       [--quick] [--cutover PATH] [--results FILE]
#                       [--baseline PATH --baseline-configs DIR]
#
# --baseline adds an older cutover binary to every round (labels cutover_before-<setup>), run with
# DIR/cutover-relay-<setup>.toml (that build's own bench configs): an A/B run of two builds under
# the same conditions; the table then shows the after/before ratio.
#
# Needs Debian's postfix (smtp-source/smtp-sink + the reference relay) and python3.
# Build first: cargo build --release --bin cutover
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS=${HARNESS:-$HERE/../../shared/bench/smtp}
ROUNDS=1; SETUPS="single dual"; SIZES="2k 100k"; CONCS="50"; QUICK=0
CUTOVER=${CUTOVER:-$HERE/../target/release/cutover}
RESULTS=""; BASELINE=""; BASELINE_CONFIGS=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --setups) SETUPS=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --conc) CONCS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --cutover) CUTOVER=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --baseline-configs) BASELINE_CONFIGS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "smtp-relay.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -x $CUTOVER ]] || { echo "smtp-relay.sh: $CUTOVER not found (cargo build --release --bin cutover)" >&2; exit 2; }
(( ROUNDS >= 1 && ROUNDS <= 10 )) || { echo "--rounds must be 1..10" >&2; exit 2; }
CUTOVER=$(cd "$(dirname "$CUTOVER")" && pwd)/$(basename "$CUTOVER")
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE && -d $BASELINE_CONFIGS ]] || {
        echo "smtp-relay.sh: --baseline needs an executable and --baseline-configs DIR" >&2; exit 2; }
    BASELINE_CONFIGS=$(cd "$BASELINE_CONFIGS" && pwd)
fi
RESULTS=${RESULTS:-/tmp/relay-bench/relay-$(date +%Y%m%d-%H%M%S).tsv}
export WAIT_QUIET_S=${WAIT_QUIET_S:-10} QUIET_CORES=${QUIET_CORES:-0.5}

n_for() {  # messages per run: a few seconds each on 2 vCPU
    local size=$1 n
    case $size in 2k) n=3000 ;; *) n=1500 ;; esac
    (( QUICK )) && n=$(( n / 5 ))
    echo "$n"
}

echo "results -> $RESULTS" >&2
for round in $(seq 1 "$ROUNDS"); do
    for setup in $SETUPS; do
        sinks=1; [[ $setup == dual ]] && sinks=2
        for size in $SIZES; do
            for c in $CONCS; do
                n=$(n_for "$size")
                # Rotate which relay goes first from round to round.
                relays="postfix cutover"; [[ -n $BASELINE ]] && relays="postfix cutover baseline"
                read -ra rs <<<"$relays"; k=$(( (round - 1) % ${#rs[@]} ))
                order="${rs[*]:k} ${rs[*]:0:k}"
                for relay in $order; do
                    if [[ $relay == postfix ]]; then
                        RELAY_CMD="$HARNESS/postfix-relay.sh start $setup" \
                        RELAY_STOP_CMD="$HARNESS/postfix-relay.sh stop" \
                        RELAY_PIDFILE=/tmp/pf-bench/spool/pid/master.pid \
                        RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                            --sinks "$sinks" --label "postfix-$setup" || echo "postfix run failed" >&2
                    elif [[ $relay == baseline ]]; then
                        RELAY_CMD="rm -rf /tmp/relay-bench/cutover-state; RUST_LOG=warn exec $BASELINE serve -c $BASELINE_CONFIGS/cutover-relay-$setup.toml" \
                        RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                            --sinks "$sinks" --label "cutover_before-$setup" || echo "baseline run failed" >&2
                    else
                        RELAY_CMD="rm -rf /tmp/relay-bench/cutover-state; RUST_LOG=warn exec $CUTOVER serve -c $HERE/cutover-relay-$setup.toml" \
                        RESULTS=$RESULTS "$HARNESS/relay-bench.sh" -n "$n" -c "$c" -s "$size" \
                            --sinks "$sinks" --label "cutover-$setup" || echo "cutover run failed" >&2
                    fi
                done
            done
        done
    done
done
python3 "$HERE/relay_table.py" "$RESULTS"

#!/usr/bin/env bash
# smtp-intake-auth.sh - the cost of edge authentication at intake (issue 13): the same cutover
# binary with [auth] verify on and off, beside Postfix, interleaved by bench/smtp-intake.sh
# (the "cutover" column is verification on, "cutover-before" is verification off).
#
# DNS is a private dnsmasq on 127.0.0.1:10053 serving what a real sender domain publishes for
# the load generator's identities (sender@bench.test, HELO loadgen.bench.test): SPF admitting
# 127.0.0.1 and a DMARC record, so every message runs SPF (HELO and MAIL FROM), DMARC and the
# ARC check against warm caches (the first message of a run fills them).
#
#   bench/smtp-intake-auth.sh [smtp-intake.sh arguments, e.g. --rounds 3 --sizes 2k --conc "1 10"]
#
# Needs dnsmasq, Debian's postfix and python3. Build first: cargo build --release --bin cutover
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CUTOVER=${CUTOVER:-$HERE/../target/release/cutover}
WORK=/tmp/relay-bench/auth
mkdir -p "$WORK"
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[[ -x $DNSMASQ ]] || { echo "smtp-intake-auth.sh: dnsmasq not found (apt-get install dnsmasq-base)" >&2; exit 2; }
"$DNSMASQ" --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
    --listen-address=127.0.0.1 --port=10053 --pid-file="$WORK/dnsmasq.pid" \
    --local=/bench.test/ --local-ttl=3600 \
    --txt-record=bench.test,"v=spf1 ip4:127.0.0.1 -all" \
    --txt-record=loadgen.bench.test,"v=spf1 ip4:127.0.0.1 -all" \
    --txt-record=_dmarc.bench.test,"v=DMARC1; p=reject" &
DNS_PID=$!
trap 'kill $DNS_PID 2>/dev/null || true' EXIT
on=$WORK/auth-on.toml off=$WORK/auth-off.toml
{ cat "$HERE/cutover-intake.toml"; printf '\n[dns]\nservers = ["127.0.0.1:10053"]\n'; } >"$on"
{ cat "$on"; printf '\n[auth]\nverify = false\n'; } >"$off"
CUTOVER_CONFIG=$on "$HERE/smtp-intake.sh" --cutover "$CUTOVER" --baseline "$CUTOVER" --baseline-config "$off" "$@"

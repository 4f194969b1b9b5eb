#!/usr/bin/env bash
# bench/backfill-large.sh - one large folder: peak RSS and time of cutover's backfill passes over a
# folder of N small messages (default 200,000 x ~1 KB in alice's INBOX on the harness's "old"
# Dovecot), beside mbsync's when it is installed. Measures:
#   since   a pass with `since` (the newest ~1 % of the folder): the window is searched on the
#           server (UID SEARCH SINCE), so only those messages are indexed and copied
#   first   a whole first pass (destination wiped)
#   noop    a second pass with nothing new
#   mbsync  mbsync's first pass into a wiped destination, for comparison (skipped if absent)
# Each line: pass, wall seconds, peak RSS (MiB, /usr/bin/time -v), messages in the destination.
# Uses ../shared/bench/imap/dovecot.sh (ports 10143/10144) with DC_DIR=/tmp/dc-large.
# Knobs: N (200000), CUTOVER_BIN (target/release/cutover), MBSYNC (1; 0 skips its pass).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench/imap}
N=${N:-200000}
BIN=${CUTOVER_BIN:-$HERE/../target/release/cutover}
export DC_DIR=${DC_DIR:-/tmp/dc-large}
W=${W:-/tmp/bench-large}
DC=$SHARED/dovecot.sh
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 2; }
rm -rf "$W"; mkdir -p "$W"
bash "$DC" reset >/dev/null
MD=$DC_DIR/mail/old/alice/Maildir
python3 - "$MD" "$N" <<'PY'
import os, sys, random
md, n = sys.argv[1], int(sys.argv[2])
for d in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(md, d), exist_ok=True)
rng = random.Random(1)
t0 = 1_500_000_000
for i in range(n):
    date = t0 + i * 600  # one message every 10 minutes: ~3.8 years for 200k
    body = ("line %d of a small message\n" % i) * rng.randint(20, 40)
    msg = (f"Message-ID: <large-{i}@bench.example>\nFrom: a@example.com\nTo: alice@example.com\n"
           f"Subject: message {i}\nDate: Thu, 1 Jan 2019 00:00:00 +0000\n\n{body}")
    flags = rng.choice(["", "S", "S", "FS", "RS"])
    p = os.path.join(md, "cur", f"{date}.M{i}P1.bench:2,{flags}")
    with open(p, "w") as f:
        f.write(msg)
    os.utime(p, (date, date))
for root, dirs, files in os.walk(os.path.dirname(md)):
    for x in dirs + files:
        os.chown(os.path.join(root, x), 5000, 5000)
    os.chown(root, 5000, 5000)
PY
# Let Dovecot index the folder once (as a live server would have), outside the measurements.
doveadm -c "$(bash "$DC" conf old)" index -u alice INBOX
doveadm -c "$(bash "$DC" conf old)" mailbox status -u alice messages INBOX

last=$(( 1500000000 + (N - 1) * 600 ))
since=$(date -u -d "@$(( last - N * 6 ))" +%F)   # the newest ~1 %
conf() {  # EXTRA -> config path
    mkdir -p "$W/c"; printf 'pw-alice' > "$W/c/pw"; echo "alice" > "$W/c/m.csv"
    cat > "$W/c/cutover.toml" <<TOML
[gateway]
state_dir = "$W/c/state"
accept_domains = ["example.com"]
[targets.old]
address = "127.0.0.1:25"
[targets.new]
address = "127.0.0.1:25"
[[backfill.job]]
name = "large"
source = { host = "127.0.0.1", port = 10143, tls = "none", auth = "plain", password_file = "pw" }
destination = { host = "127.0.0.1", port = 10144, tls = "none", auth = "plain", password_file = "pw" }
mailboxes_file = "m.csv"
connections_per_mailbox = 4
$1
TOML
    echo "$W/c/cutover.toml"
}
dst_count() { doveadm -c "$(bash "$DC" conf new)" mailbox status -u alice messages INBOX 2>/dev/null | sed 's/.*messages=//'; }
measure() {  # NAME CMD...
    local name=$1; shift
    /usr/bin/time -v -o "$W/$name.time" "$@" > "$W/$name.log" 2>&1 || { echo "$name failed: see $W/$name.log" >&2; tail -5 "$W/$name.log" >&2; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$W/$name.time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$W/$name.time")
    printf '%-8s wall %-9s peak RSS %7s MiB   destination INBOX %s messages\n' "$name" "$wall" "$rss" "$(dst_count)"
}
wipe_dst() { bash "$DC" wipe new alice >/dev/null; rm -rf "$W/c/state"; }

echo "folder: $N messages in INBOX; since = $since"
wipe_dst
measure since "$BIN" backfill run large -q -c "$(conf "since = \"$since\"")"
wipe_dst
measure first "$BIN" backfill run large -q -c "$(conf "")"
measure noop "$BIN" backfill run large -q -c "$(conf "")"
if [[ ${MBSYNC:-1} == 1 ]] && command -v mbsync >/dev/null; then
    wipe_dst
    mkdir -p "$W/mbsync"
    measure mbsync env SRC_HOST=127.0.0.1 SRC_PORT=10143 SRC_USER=alice SRC_PASS=pw-alice \
        DST_HOST=127.0.0.1 DST_PORT=10144 DST_USER=alice DST_PASS=pw-alice STATE_DIR="$W/mbsync" \
        bash "$SHARED/drivers/mbsync.sh"
fi
bash "$DC" stop >/dev/null

#!/usr/bin/env bash
# bench/backfill-adapter.sh - cutover adapter for ../shared/bench/imap/backfill-bench.sh.
# Reads the harness's env contract (SRC_* / DST_* / STATE_DIR / CA_FILE), writes a one-job config
# under $STATE_DIR and runs one `cutover backfill run` pass. Exit 0 only after a converged pass.
# A login of the form "user*admin" becomes a Dovecot master-user login (admin_login = "separator").
# Knobs (env): CUTOVER_BIN (default: <repo>/target/release/cutover), BF_CONNS (connections per
#   mailbox, default 4), BF_EXTRA (extra [[backfill.job]] lines).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${CUTOVER_BIN:-$HERE/../target/release/cutover}
[[ -x $BIN ]] || { echo "backfill-adapter: $BIN missing (cargo build --release)" >&2; exit 2; }
: "${SRC_HOST:?}" "${SRC_PORT:?}" "${SRC_USER:?}" "${SRC_PASS:?}" "${DST_HOST:?}" "${DST_PORT:?}" "${DST_USER:?}" "${DST_PASS:?}" "${STATE_DIR:?}"
mkdir -p "$STATE_DIR"
tls() { case ${1:-none} in none) echo none ;; starttls) echo starttls ;; imaps) echo implicit ;; *) echo "bad TLS $1" >&2; exit 2 ;; esac; }
side() {  # NAME HOST PORT USER PASS TLS -> inline table; writes the password file
    local name=$1 host=$2 port=$3 user=$4 pass=$5 t
    t=$(tls "$6")
    printf '%s' "$pass" > "$STATE_DIR/$name.pass"
    chmod 600 "$STATE_DIR/$name.pass"
    local extra=""
    [[ $t != none && -n ${CA_FILE:-} ]] && extra=", tls_ca = \"$CA_FILE\""
    if [[ $user == *'*'* ]]; then
        extra="$extra, admin_user = \"${user#*\*}\", admin_login = \"separator\""
    fi
    echo "host = \"$host\", port = $port, tls = \"$t\", auth = \"plain\", password_file = \"$name.pass\"$extra"
}
src_user=${SRC_USER%%\**}
dst_user=${DST_USER%%\**}
echo "$src_user,$dst_user" > "$STATE_DIR/mailboxes.csv"
cat > "$STATE_DIR/cutover.toml" <<TOML
[gateway]
state_dir = "$STATE_DIR/state"
accept_domains = ["example.com"]
[targets.old]
address = "127.0.0.1:25"
[targets.new]
address = "127.0.0.1:25"
[[backfill.job]]
name = "bench"
source = { $(side src "$SRC_HOST" "$SRC_PORT" "$SRC_USER" "$SRC_PASS" "${SRC_TLS:-none}") }
destination = { $(side dst "$DST_HOST" "$DST_PORT" "$DST_USER" "$DST_PASS" "${DST_TLS:-none}") }
mailboxes_file = "mailboxes.csv"
connections_per_mailbox = ${BF_CONNS:-4}
${BF_EXTRA:-}
TOML
exec "$BIN" backfill run bench -c "$STATE_DIR/cutover.toml" -q --report "$STATE_DIR/report.json"

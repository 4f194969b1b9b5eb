#!/usr/bin/env bash
# Install Cyrus IMAP 3.6 (Debian bookworm cyrus-imapd + cyrus-common) for the test fixture
# tests/support/cyrus.rs WITHOUT dpkg-installing it: cyrus-imapd conflicts with dovecot-imapd (which
# the Dovecot fixture needs), so the two .debs are fetched with `apt-get download` and unpacked with
# `dpkg -x` into a private root ($CUTOVER_CYRUS_ROOT, default /opt/cutover-test/cyrus). No maintainer
# script runs, no system-wide daemon is started, /etc is not touched (the fixture writes its own
# imapd.conf/cyrus.conf). Their library dependencies do not conflict and are apt-get installed normally.
# The system user `cyrus` (group mail), which Cyrus processes switch to when started as root, is
# created if missing. Idempotent: does nothing when the unpacked tree and the libraries are present.
set -euo pipefail

root="${CUTOVER_CYRUS_ROOT:-/opt/cutover-test/cyrus}"
stamp="$root/.installed-3.6"
# Runtime libraries of /usr/lib/cyrus/bin/* (apt-cache depends cyrus-common cyrus-imapd, minus the
# ones every Debian system has) and sasl2-bin (saslpasswd2, not used by the fixture today, handy
# for a sasldb).
libs=(libclamav12 libical3 libicu72 libjansson4 libxapian30 libpcre3 libpq5 libsqlite3-0 libwrap0
      libxml2 libzephyr4 libldap-2.5-0 libkrb5-3 libsasl2-2 libsasl2-modules db-util)

missing=()
for p in "${libs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done

if [ -f "$stamp" ] && [ -x "$root/usr/lib/cyrus/bin/master" ] && ((${#missing[@]} == 0)) \
    && getent passwd cyrus >/dev/null; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]})); then
    echo "install-cyrus: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$stamp" ] || [ ! -x "$root/usr/lib/cyrus/bin/master" ]; then
    echo "install-cyrus: unpacking cyrus-imapd + cyrus-common into $root"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq cyrus-imapd cyrus-common >/dev/null 2>&1) || {
        apt-get update -qq >/dev/null
        (cd "$work" && apt-get download -qq cyrus-imapd cyrus-common >/dev/null)
    }
    rm -rf "$root.tmp"
    mkdir -p "$root.tmp"
    for deb in "$work"/*.deb; do
        dpkg -x "$deb" "$root.tmp"
        dpkg-deb -f "$deb" Package Version >> "$root.tmp/.packages"
    done
    rm -rf "$root"
    mv "$root.tmp" "$root"
    touch "$stamp"
fi

getent passwd cyrus >/dev/null \
    || useradd --system --gid mail --home-dir /var/spool/cyrus --no-create-home \
        --shell /usr/sbin/nologin cyrus

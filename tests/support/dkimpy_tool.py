"""Independent DKIM/ARC signing and verification for cutover's tests (tests/support/dkimpy.rs).

Uses dkimpy's Python API (Debian python3-dkim; ARC needs python3-authres) with its DNS pointed at
the test's dnsmasq (--dns HOST:PORT, UDP then TCP) through dnspython: dkimpy's command-line tools
only know the system resolver on port 53. The message is read from stdin; signing writes the
signed message to stdout, verifying writes one JSON object. It never touches the network beyond
the given DNS server and never reads or writes files other than the key named on the command line.

  dkimpy_tool.py dkim-sign  --domain D --selector S --key PEM [--ed25519]
  dkimpy_tool.py arc-sign   --domain D --selector S --key PEM --srv-id ID [--cv none|pass]
  dkimpy_tool.py dkim-verify --dns HOST:PORT   -> {"pass": bool, "error": str}
  dkimpy_tool.py arc-verify  --dns HOST:PORT   -> {"cv": "pass|fail|none", "reason": str}
"""

import argparse
import base64
import json
import subprocess
import sys

import dkim
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype


def dnsfunc_for(server):
    """A dkimpy `dnsfunc` asking only `server` (host:port): the TXT strings of `name`, joined."""
    host, port = server.rsplit(":", 1)
    port = int(port)

    def get_txt(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        try:
            resp = dns.query.udp(query, host, port=port, timeout=timeout)
            if resp.flags & dns.flags.TC:
                resp = dns.query.tcp(query, host, port=port, timeout=timeout)
        except dns.exception.Timeout:
            raise dkim.DnsTimeoutError(name)
        for rrset in resp.answer:
            if rrset.rdtype != dns.rdatatype.TXT:
                continue
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return get_txt


def ed25519_seed(pem_path):
    """The base64 32-byte seed dkimpy wants, from an OpenSSL PKCS#8 Ed25519 PEM."""
    der = subprocess.run(
        ["openssl", "pkey", "-in", pem_path, "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return base64.b64encode(der[-32:])


def read_key(args):
    if getattr(args, "ed25519", False):
        return ed25519_seed(args.key)
    with open(args.key, "rb") as f:
        return f.read()


def cmd_dkim_sign(args, msg):
    algo = b"ed25519-sha256" if args.ed25519 else b"rsa-sha256"
    sig = dkim.sign(
        msg,
        args.selector.encode(),
        args.domain.encode(),
        read_key(args),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=algo,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    sys.stdout.buffer.write(sig + msg)


def cmd_arc_sign(args, msg):
    srv = args.srv_id.encode()
    # dkimpy takes the AAR (and cv) from an Authentication-Results header of srv_id: a
    # forwarder stamps its own before sealing (arc=none for i=1, arc=pass to extend a chain).
    stamp = b"Authentication-Results: " + srv + b"; arc=" + args.cv.encode() + b"\r\n"
    msg = stamp + msg
    arc_set = dkim.arc_sign(
        msg,
        args.selector.encode(),
        args.domain.encode(),
        read_key(args),
        srv,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    if not arc_set:
        sys.exit("dkimpy produced no ARC set")
    sys.stdout.buffer.write(b"".join(arc_set) + msg)


def cmd_dkim_verify(args, msg):
    try:
        ok = dkim.verify(msg, dnsfunc=dnsfunc_for(args.dns))
        err = ""
    except dkim.DKIMException as e:
        ok, err = False, str(e)
    print(json.dumps({"pass": bool(ok), "error": err}))


def cmd_arc_verify(args, msg):
    cv, _results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc_for(args.dns))
    cv = cv.decode() if cv else "fail"
    print(json.dumps({"cv": cv, "reason": reason}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("dkim-sign", "arc-sign"):
        s = sub.add_parser(name)
        s.add_argument("--domain", required=True)
        s.add_argument("--selector", required=True)
        s.add_argument("--key", required=True)
        if name == "dkim-sign":
            s.add_argument("--ed25519", action="store_true")
        else:
            s.add_argument("--srv-id", required=True)
            s.add_argument("--cv", default="none", choices=["none", "pass"])
    for name in ("dkim-verify", "arc-verify"):
        sub.add_parser(name).add_argument("--dns", required=True)
    args = p.parse_args()
    msg = sys.stdin.buffer.read()
    {
        "dkim-sign": cmd_dkim_sign,
        "arc-sign": cmd_arc_sign,
        "dkim-verify": cmd_dkim_verify,
        "arc-verify": cmd_arc_verify,
    }[args.cmd](args, msg)


if __name__ == "__main__":
    main()

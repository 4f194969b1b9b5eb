#!/usr/bin/env python3
"""smtp-memory.py - memory footprint of cutover's SMTP intake (release build).

Starts `cutover serve` (fresh state under /tmp/cutover-membench, SMTP on 127.0.0.1:10033,
admin on :10034), then measures from /proc/PID/status:
  1. RSS after start and after one small message (baseline);
  2. the peak RSS (VmHWM) increase caused by one 50 MiB message sent in one session
     (target: < 16 MiB: the body is streamed to the spool, not held);
  3. RSS with 1,000 idle connections that each said EHLO (target: <= 64 MiB).
Bounded: every socket has a 60 s timeout; the server is stopped by PID at the end.

  bench/smtp-memory.py [--cutover target/release/cutover] [--idle 1000] [--mib 50]
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = "/tmp/cutover-membench"
PORT = 10033
ADMIN = 10034


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


def session():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=60)
    f = s.makefile("rb")
    code, _ = reply(f)
    assert code == 220, code
    s.sendall(b"EHLO mem.bench\r\n")
    code, _ = reply(f)
    assert code == 250, code
    return s, f


def send(size):
    s, f = session()
    s.sendall(b"MAIL FROM:<m@bench.test>\r\n")
    assert reply(f)[0] == 250
    s.sendall(b"RCPT TO:<rcpt@example.test>\r\n")
    assert reply(f)[0] == 250
    s.sendall(b"DATA\r\n")
    assert reply(f)[0] == 354
    s.sendall(b"Subject: memory\r\n\r\n")
    line = b"x" * 998 + b"\r\n"
    chunk = line * 1024  # ~1 MiB
    sent = 0
    while sent + len(chunk) <= size:
        s.sendall(chunk)
        sent += len(chunk)
    s.sendall(b".\r\n")
    code, text = reply(f)
    s.sendall(b"QUIT\r\n")
    s.close()
    return code, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cutover", default=os.path.join(HERE, "..", "target", "release", "cutover"))
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--mib", type=int, default=50)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.idle + 200)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    shutil.rmtree(STATE, ignore_errors=True)
    os.makedirs(STATE)
    cfg = os.path.join(STATE, "cutover.toml")
    with open(cfg, "w") as f:
        f.write(f"""[gateway]
hostname = "mem.bench"
listen = ["127.0.0.1:{PORT}"]
state_dir = "{STATE}/state"
accept_domains = ["example.test"]
max_message_size = "{a.mib + 10}MiB"
max_connections = {a.idle + 100}
max_connections_per_ip = {a.idle + 100}
min_free_space = "64MiB"
[targets.a]
address = "127.0.0.1:10026"
[routing]
default = ["a"]
[admin]
listen = "127.0.0.1:{ADMIN}"
[bounce]
via = "a"
""")
    log = open(os.path.join(STATE, "serve.log"), "w")
    # The child gets the raised fd limit too.
    p = subprocess.Popen([a.cutover, "serve", "--no-deliver", "-c", cfg], stdout=log, stderr=log,
                         env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    sys.exit("cutover did not start: " + open(log.name).read())
                time.sleep(0.05)
        r0 = status(p.pid)
        code, _ = send(2048)
        assert code == 250, code
        time.sleep(0.3)
        r1 = status(p.pid)
        t0 = time.time()
        code, text = send(a.mib << 20)
        dt = time.time() - t0
        assert code == 250, text
        spool = os.path.join(STATE, "state", "spool")
        spooled = sum(os.path.getsize(os.path.join(spool, n)) for n in os.listdir(spool))
        time.sleep(0.3)
        r2 = status(p.pid)
        socks = []
        for _ in range(a.idle):
            socks.append(session())
        time.sleep(1.0)
        r3 = status(p.pid)
        for s, _f in socks:
            s.close()
        print(f"| measurement | RSS MiB | peak RSS (VmHWM) MiB |")
        print(f"|---|---|---|")
        print(f"| after start | {r0['VmRSS']:.1f} | {r0['VmHWM']:.1f} |")
        print(f"| after one 2 KB message | {r1['VmRSS']:.1f} | {r1['VmHWM']:.1f} |")
        print(f"| after one {a.mib} MiB message ({dt:.1f} s) | {r2['VmRSS']:.1f} | {r2['VmHWM']:.1f} |")
        print(f"| with {a.idle} idle connections (EHLO done) | {r3['VmRSS']:.1f} | {r3['VmHWM']:.1f} |")
        print()
        print(f"{a.mib} MiB message answered: {text.decode().strip()}")
        print(f"{a.mib} MiB message: peak RSS +{r2['VmHWM'] - r1['VmHWM']:.1f} MiB (target < 16)")
        print(f"spool holds {spooled / 1048576:.1f} MiB after the {a.mib} MiB message")
        print(f"{a.idle} idle connections: RSS {r3['VmRSS']:.1f} MiB (target <= 64)")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    main()

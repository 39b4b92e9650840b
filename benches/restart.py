#!/usr/bin/env python3
"""Restart time, side by side: sessiond replaying its data dir against Redis
loading an RDB file, for the same sessions.

For each server: start it on an empty dir, load N sessions of VALUE bytes with
`sessiond-bench --workload preload`, stop it gracefully (SIGTERM; Redis:
SHUTDOWN SAVE), drop the page cache where allowed (`/proc/sys/vm/drop_caches`;
skipped with a note elsewhere), start it again and time from exec to the first
answered request (sessiond: a connection accepted, which it does only after
replay; Redis: PING answered PONG, not LOADING). Repeats the restart ROUNDS
times on the same files and prints each time and the median.

    python3 benches/restart.py --sessiond target/release/sessiond \
        --bench target/release/sessiond-bench --sessions 1000000 [--redis redis-server]
        [--compact] [--no-owner] [--repeated-values] [--rounds 3]

Values are random letters (incompressible, as session tokens are) unless
--repeated-values.

--compact: time a start after a compaction instead (a snapshot plus the
segments after it): the N sessions are created and then each updated once
(`--workload update --preload N --requests N`), with --compact-ratio 1.1, so
the log outgrows the live data and is compacted while the updates run.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def wait_sessiond(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sessiond exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("sessiond did not listen in time")


def redis_ping(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def wait_redis(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis exited with {proc.returncode}")
        try:
            if redis_ping(port).startswith(b"+PONG"):
                return
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("redis did not answer in time")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def preload(bench, url, args, compact=False):
    cmd = [bench, "--threads", "1", "--target", url, "--concurrency", "64",
           "--value-size", str(args.value_size), "--requests", str(args.sessions)]
    if compact:
        cmd += ["--workload", "update", "--preload", str(args.sessions)]
    else:
        cmd += ["--workload", "preload"]
    if args.no_owner:
        cmd.append("--no-owner")
    if not args.repeated_values:
        cmd.append("--random-values")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def sessiond_cmd(args, port, data, extra):
    return [args.sessiond, "--listen", f"127.0.0.1:{port}", "--data-dir", data] + extra


def time_sessiond(args, data, extra, label):
    times = []
    for _ in range(args.rounds):
        dropped = drop_caches()
        port = free_port()
        log = open(os.path.join(data, "..", f"{label}.log"), "w")
        t0 = time.monotonic()
        p = subprocess.Popen(sessiond_cmd(args, port, data, extra), stdout=log, stderr=log)
        wait_sessiond(port, p, t0 + 600)
        t = time.monotonic() - t0
        rss = rss_mb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait()
        log.close()
        times.append(t)
        print(f"  {label}: listening after {t:.3f} s (RSS {rss:.0f} MB, caches dropped: {dropped})", flush=True)
    return times


def run_sessiond(args, work):
    data = os.path.join(work, "sessiond-data")
    extra = []
    if args.compact:
        # Compactions while the preload runs: the restart reads a snapshot
        # and the segments after it.
        extra = ["--compact-ratio", args.compact_ratio]
    port = free_port()
    p = subprocess.Popen(sessiond_cmd(args, port, data, extra),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_sessiond(port, p, time.monotonic() + 60)
    preload(args.bench, f"sessiond://127.0.0.1:{port}", args, args.compact)
    p.send_signal(signal.SIGTERM)
    p.wait()
    files = sorted(os.listdir(data))
    size = sum(os.path.getsize(os.path.join(data, f)) for f in files)
    print(f"sessiond: {len(files)} files, {size / 1e6:.0f} MB: {' '.join(files)}", flush=True)
    return time_sessiond(args, data, extra, "sessiond")


def run_redis(args, work):
    data = os.path.join(work, "redis-data")
    os.makedirs(data)
    conf = ["--dir", data, "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"]
    port = free_port()
    p = subprocess.Popen([args.redis, "--port", str(port)] + conf,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_redis(port, p, time.monotonic() + 60)
    preload(args.bench, f"redis://127.0.0.1:{port}", args)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"SHUTDOWN SAVE\r\n")
        s.recv(64)
    p.wait()
    size = os.path.getsize(os.path.join(data, "dump.rdb"))
    print(f"redis: dump.rdb {size / 1e6:.0f} MB", flush=True)
    times = []
    for _ in range(args.rounds):
        dropped = drop_caches()
        port = free_port()
        t0 = time.monotonic()
        p = subprocess.Popen([args.redis, "--port", str(port)] + conf,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_redis(port, p, t0 + 600)
        t = time.monotonic() - t0
        rss = rss_mb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait()
        times.append(t)
        print(f"  redis: PONG after {t:.3f} s (RSS {rss:.0f} MB, caches dropped: {dropped})", flush=True)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessiond", default="target/release/sessiond")
    ap.add_argument("--bench", default="target/release/sessiond-bench")
    ap.add_argument("--redis", default=None, help="redis-server (or valkey-server) to compare with")
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-owner", action="store_true")
    ap.add_argument("--repeated-values", action="store_true",
                    help="values of one repeated letter (which Redis's RDB compresses to nothing) instead of random letters")
    ap.add_argument("--compact", action="store_true")
    ap.add_argument("--compact-ratio", default="1.1")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="restart-")
    try:
        s = run_sessiond(args, work)
        line = f"sessiond median {statistics.median(s):.3f} s"
        if args.redis:
            r = run_redis(args, work)
            line += f"; redis median {statistics.median(r):.3f} s; ratio (redis / sessiond) {statistics.median(r) / statistics.median(s):.2f}x"
        print(line)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

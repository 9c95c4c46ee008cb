"""The load tools the bench drives: our generator, memcaslap, a raw set-churn for memory, and
the spinners that keep idle cores awake during the latency probe.

Each returns plain numbers; subprocesses get hard timeouts so a hung tool cannot stall a run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memcache_server.load.bench_servers import ROOT


@dataclass(frozen=True)
class BenchWorkload:
    """One comparison row: how our generator and memcaslap express it, and the issue's target
    for it (the least ratio ours/memcached at ``-t 4`` both, measured with ``target_tool``)."""

    key: str
    title: str
    ours_args: tuple[str, ...]
    get_prop: float
    value_size: int
    division: int = 1
    caslap_concurrency: int = 50
    note: str = ""
    target: float | None = None
    target_tool: str = "memcaslap"


WORKLOADS = (
    BenchWorkload(
        "a",
        "90% get / 10% set, 100 B",
        ("--workload", "get90", "--prefill"),
        0.9,
        100,
        target=0.7,
    ),
    BenchWorkload(
        "b",
        "50% get / 50% set, 100 B",
        ("--workload", "mixed50", "--prefill"),
        0.5,
        100,
        target=0.6,
    ),
    BenchWorkload(
        "c",
        "10-key multi-get",
        ("--workload", "multiget10"),
        0.9,
        100,
        division=10,
        target=0.6,
    ),
    BenchWorkload("d", "4 KB values", ("--workload", "large4k", "--prefill"), 0.9, 4096),
    BenchWorkload(
        "e",
        "pipelined gets, 32 in flight",
        ("--workload", "pipeline32"),
        0.9,
        100,
        caslap_concurrency=256,
        note=(
            "memcaslap cannot pipeline: its row is 256 connections of 90/10 get/set; the "
            "pipelined-gets target is judged on our generator, which sends 32 gets per write "
            "on every connection to both servers"
        ),
        target=1.0,
        target_tool="load",
    ),
)

_TPS = re.compile(rb"Run time:\s*([\d.]+)s\s+Ops:\s*(\d+)\s+TPS:\s*(\d+)")


def run_ours(
    port: int, args: tuple[str, ...], duration: float, procs: int, connections: int, keys: int
) -> dict[str, Any]:
    """One ``python -m memcache_server.load run``; returns its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "memcache_server.load", "run"]
        cmd += ["--server", f"127.0.0.1:{port}", *args]
        cmd += ["--duration", str(duration), "--procs", str(procs), "--keys", str(keys)]
        cmd += ["--connections", str(connections), "--quiet", "--json", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 300)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"load run failed: {proc.stderr.strip()[-400:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def have_memcaslap() -> bool:
    return shutil.which("memcaslap") is not None


def run_memcaslap(port: int, wl: BenchWorkload, duration: float, threads: int = 2) -> float:
    """One memcaslap run; returns its final TPS (multi-get counts every key as an op)."""
    cfg = (
        f"key\n16 16 1\nvalue\n{wl.value_size} {wl.value_size} 1\n"
        f"cmd\n0 {1 - wl.get_prop:.2f}\n1 {wl.get_prop:.2f}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
        f.write(cfg)
        f.flush()
        cmd = ["memcaslap", "-s", f"127.0.0.1:{port}", "-t", f"{max(1, round(duration))}s"]
        cmd += ["-T", str(threads), "-c", str(wl.caslap_concurrency), "-F", f.name]
        if wl.division > 1:
            cmd += ["-d", str(wl.division)]
        proc = subprocess.run(cmd, capture_output=True, timeout=duration + 120)
    m = _TPS.search(proc.stdout)
    if not m:
        raise RuntimeError(f"memcaslap output not understood: {proc.stdout[-300:]!r}")
    return float(m.group(3))


def _read_replies(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while buf.count(b"\r\n") < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection during churn")
        buf += chunk
    return buf


def _stat_values(sock: socket.socket, names: tuple[str, ...]) -> dict[str, int]:
    """``stats`` on an open connection; the named counters as ints (0 when absent)."""
    sock.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the stats connection")
        buf += chunk
    got = {}
    for line in buf.decode(errors="replace").splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "STAT" and parts[1] in names:
            got[parts[1]] = int(parts[2])
    return {n: got.get(n, 0) for n in names}


def churn(
    port: int,
    total_bytes: int,
    value_size: int,
    time_limit: float,
    connections: int = 4,
) -> dict[str, Any]:
    """Set distinct keys with distinct ``value_size``-byte values until ``total_bytes`` of values
    have been stored or ``time_limit`` passes; each round sends a window of 1000 sets on each of
    ``connections`` connections (so a node of several workers has them all storing) and reads
    every reply.

    Until the first eviction, ``stats`` is read after every round: ``first_eviction`` holds
    ``curr_items`` then, the number of items the memory limit holds (None when the churn ended
    before any eviction).
    """
    window = 1000
    count = total_bytes // value_size
    stored = errors = 0
    first_eviction: dict[str, Any] | None = None
    start = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    try:
        watch = socks[0]
        i = 0
        while i < count and time.monotonic() - start < time_limit:
            sent: list[tuple[socket.socket, int]] = []
            for sock in socks:
                n = min(window, count - i)
                if n <= 0:
                    break
                sock.sendall(
                    b"".join(
                        b"set churn:%d 0 0 %d\r\n%s\r\n"
                        % (k, value_size, (b"%d:" % k).ljust(value_size, b"v"))
                        for k in range(i, i + n)
                    )
                )
                sent.append((sock, n))
                i += n
            for sock, n in sent:
                buf = _read_replies(sock, n)
                ok = buf.count(b"STORED\r\n") - buf.count(b"NOT_STORED\r\n")
                stored += ok
                errors += n - ok
            if first_eviction is None:
                st = _stat_values(watch, ("evictions", "curr_items"))
                if st["evictions"] > 0:
                    first_eviction = {
                        "sets": i,
                        "curr_items": st["curr_items"],
                        "evictions": st["evictions"],
                        "seconds": round(time.monotonic() - start, 2),
                    }
    finally:
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - start
    return {
        "sets": i,
        "stored": stored,
        "errors": errors,
        "value_bytes": i * value_size,
        "complete": i >= count,
        "seconds": round(elapsed, 2),
        "first_eviction": first_eviction,
    }


SPIN_CODE = (
    "import os, time\n"
    "os.nice(19)\n"
    "end = time.monotonic() + {seconds}\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


def start_spinners(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that spin at nice 19 for at most ``seconds`` (then exit by
    themselves, so a bench that dies leaves no spinner behind for long).

    Why: a CPU that goes idle takes tens of microseconds to wake (about 70 us on this kind of
    VM), which a one-connection ping-pong pays on every request; a spinning process keeps the
    other cores awake, and at nice 19 it gives way to the server and the generator.
    """
    code = SPIN_CODE.format(seconds=float(seconds))
    return [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_spinners(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop each spinner by its PID and reap it."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

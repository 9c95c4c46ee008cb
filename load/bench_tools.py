"""The load tools the bench drives: our generator, memcaslap, and a raw set-churn for memory.

Each returns plain numbers; subprocesses get hard timeouts so a hung tool cannot stall a run.
"""

from __future__ import annotations

import json
import re
import shutil
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
    """One comparison row: how our generator and memcaslap express it."""

    key: str
    title: str
    ours_args: tuple[str, ...]
    get_prop: float
    value_size: int
    division: int = 1
    caslap_concurrency: int = 32
    note: str = ""


WORKLOADS = (
    BenchWorkload("a", "90% get / 10% set, 100 B", ("--workload", "get90", "--prefill"), 0.9, 100),
    BenchWorkload(
        "b", "50% get / 50% set, 100 B", ("--workload", "mixed50", "--prefill"), 0.5, 100
    ),
    BenchWorkload("c", "10-key multi-get", ("--workload", "multiget10"), 0.9, 100, division=10),
    BenchWorkload("d", "4 KB values", ("--workload", "large4k", "--prefill"), 0.9, 4096),
    BenchWorkload(
        "e",
        "pipelined gets, 32 in flight",
        ("--workload", "pipeline32"),
        0.9,
        100,
        caslap_concurrency=256,
        note="memcaslap cannot pipeline: 256 connections, 90/10 get/set instead",
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


def churn(port: int, total_bytes: int, value_size: int, time_limit: float) -> dict[str, Any]:
    """Set distinct keys with distinct ``value_size``-byte values until ``total_bytes`` of values
    have been stored or ``time_limit`` passes; pipelined in windows of 1000 with replies read."""
    window = 1000
    count = total_bytes // value_size
    stored = errors = 0
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        i = 0
        while i < count and time.monotonic() - start < time_limit:
            n = min(window, count - i)
            sock.sendall(
                b"".join(
                    b"set churn:%d 0 0 %d\r\n%s\r\n"
                    % (k, value_size, (b"%d:" % k).ljust(value_size, b"v"))
                    for k in range(i, i + n)
                )
            )
            buf = b""
            while buf.count(b"\r\n") < n:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection during churn")
                buf += chunk
            ok = buf.count(b"STORED\r\n") - buf.count(b"NOT_STORED\r\n")
            stored += ok
            errors += n - ok
            i += n
    elapsed = time.monotonic() - start
    return {
        "sets": i,
        "stored": stored,
        "errors": errors,
        "value_bytes": i * value_size,
        "complete": i >= count,
        "seconds": round(elapsed, 2),
    }

"""Scale-out and scale-in of a real cluster, cold and with ``--warm``: what the clients see.

    python -m memcache_server.load.scaleout [--keys 30000] [--poll 0.5] [--mode cold|warm|both]
        [--warm-rate N] [--json out.json]

Starts a config node and three nodes on loopback, stores ``--keys`` keys through our
``ClusterClient``, then adds a fourth node and later stops one gracefully (SIGTERM), and
measures, for each change:

- the hit ratio of one ``get_many`` sweep over every key right after the reader's client
  switched to the new document (it polls every ``--poll`` seconds, as real clients do);
- stale reads: a writer client rewrites a slice of the keys with increasing sequence numbers
  throughout, and a reader client reads them; a read is stale when it returns a sequence older
  than the last one the writer had acknowledged before the read began (misses are not stale);
- the warm-up: keys copied, its rate, and the p99 of ``get`` on the serving nodes while it
  copies and while its catch-up passes run, against the p99 before it, from the same run (a
  probe client pinned to the old ring).

Every process started here is stopped by its PID at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from memcache_server.discovery.client import ClusterClient

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: generous: the benchmark shares a small machine with its servers
TIMEOUTS: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 5.0}


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)


def _start(args: list[str]) -> Proc:
    cmd = [sys.executable, str(ROOT / "cli.py"), *args, "-l", HOST, "-p", "0"]
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert popen.stdout is not None
    line = popen.stdout.readline()
    if not line:
        raise RuntimeError(f"{' '.join(args[:1])} did not start")
    return Proc(popen, int(line.split()[-1]))


def stats(port: int) -> dict[str, str]:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    out = {}
    for line in buf.decode().split("\r\n"):
        parts = line.split(" ", 2)
        if parts[0] == "STAT" and len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def p99(samples: list[float]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class Change:
    """What one membership change cost the clients."""

    what: str
    hit_ratio: float = 0.0  # one sweep right after the reader switched
    hit_after: float = 0.0  # one sweep after the hand-over window (the new owners alone)
    switch_seconds: float = 0.0  # from the change being published to the reader switching
    stale_reads: int = 0
    checked_reads: int = 0
    warm_keys: int = 0
    warm_seconds: float = 0.0
    warm_rate: float = 0.0
    p99_before_ms: float = 0.0
    p99_during_ms: float = 0.0  # the bulk copy (and its first catch-up pass)
    p99_catchup_ms: float = 0.0  # the catch-up passes after the change is published
    extra: dict[str, Any] = field(default_factory=dict)


class Writer:
    """Rewrites ``keys`` with increasing sequence numbers; remembers what was acknowledged."""

    def __init__(self, endpoint: str, keys: list[str], poll: float) -> None:
        self.client = ClusterClient(endpoint, poll_interval=poll, **TIMEOUTS)
        self.keys = keys
        self.acked: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seq = 0

    def _run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            self.seq += 1
            try:
                if self.client.set(key, b"%d" % self.seq, expire=3600):
                    self.acked[key] = self.seq
            except Exception:  # a node going away: the write is simply not acknowledged
                pass
            time.sleep(0.0005)


class Reader:
    """Reads the writer's keys; counts reads older than the last acknowledged write."""

    def __init__(self, endpoint: str, writer: Writer, poll: float) -> None:
        self.client = ClusterClient(endpoint, poll_interval=poll, **TIMEOUTS)
        self.writer = writer
        self.stale = 0
        self.checked = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(2)
        while not self.stop.is_set():
            key = rng.choice(self.writer.keys)
            floor = self.writer.acked.get(key, 0)
            try:
                got = self.client.get(key)
            except Exception:
                continue
            if got is not None:
                self.checked += 1
                if int(got) < floor:
                    self.stale += 1
            time.sleep(0.0005)


class Probe:
    """``get`` latencies on the serving nodes through a client pinned to the old ring."""

    def __init__(self, endpoint: str, keys: list[str]) -> None:
        self.client = ClusterClient(endpoint, background=False, **TIMEOUTS)
        self.keys = keys
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(3)
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            started = time.perf_counter()
            try:
                self.client.get(key)
            except Exception:
                continue
            self.samples.append((time.monotonic(), time.perf_counter() - started))
            time.sleep(0.001)

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.samples if start <= t <= end]


def _wait(what: str, predicate: Any, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def fill(client: ClusterClient, keys: list[str], values: dict[str | bytes, Any]) -> None:
    for i in range(0, len(keys), 1000):
        chunk: dict[str | bytes, Any] = {k: values[k] for k in keys[i : i + 1000]}
        assert client.set_many(chunk, expire=3600) == []


def run(mode: str, n_keys: int, poll: float, drain: float, warm_rate: int | None) -> list[Change]:
    warm = ["--warm"] if mode == "warm" else []
    if mode == "warm" and warm_rate is not None:
        warm += ["--warm-rate", str(warm_rate)]
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    procs: list[Proc] = []
    clients: list[ClusterClient] = []
    threads: list[Writer | Reader | Probe] = []
    try:
        cfg = _start(
            ["config-node", "--state-file", str(tmp / "state"), "--heartbeat-timeout", "10"]
        )
        procs.append(cfg)
        endpoint = f"{HOST}:{cfg.port}"
        root = ["-u", "root"] if os.geteuid() == 0 else []  # memcached's rule for root
        node_args = [
            *root,
            "-t",
            "1",
            "-m",
            "256",
            "--join",
            endpoint,
            "--heartbeat-interval",
            "0.2",
            "--drain-seconds",
            str(drain),
            *warm,
        ]
        nodes = [_start(node_args) for _ in range(3)]
        procs += nodes
        loader = ClusterClient(endpoint, background=False, **TIMEOUTS)
        clients.append(loader)
        _wait("3 nodes", lambda: loader.poll() is not None and len(loader.live_nodes) == 3)
        keys = [f"user:{i}" for i in range(n_keys)]
        values: dict[str | bytes, Any] = {
            k: b"profile-%d-" % i + b"x" * 100 for i, k in enumerate(keys)
        }
        fill(loader, keys, values)
        hot = [f"hot:{i}" for i in range(max(200, n_keys // 100))]
        assert loader.set_many({k: b"0" for k in hot}, expire=3600) == []
        writer = Writer(endpoint, hot, poll)
        reader = Reader(endpoint, writer, poll)
        probe = Probe(endpoint, keys)
        threads += [writer, reader, probe]
        clients += [writer.client, reader.client, probe.client]
        for t in threads:
            t.thread.start()
        time.sleep(1.0)  # the clients' first connections are not the baseline
        baseline_start = time.monotonic()
        time.sleep(3.0)
        out = []

        # ------------------------------------------------------------ 3 -> 4
        change = Change(f"3->4 {mode}")
        stale0, checked0 = reader.stale, reader.checked
        started = time.monotonic()
        newcomer = _start(node_args)
        procs.append(newcomer)
        if mode == "warm":
            _wait(
                "warm copy",
                lambda: (
                    stats(newcomer.port).get("cluster_warm_state") not in (None, "idle", "copying")
                ),
            )
            s = stats(newcomer.port)
            change.warm_keys = int(s["cluster_warm_copied"])
            change.warm_seconds = float(s["cluster_warm_seconds"])
            change.warm_rate = change.warm_keys / max(change.warm_seconds, 1e-9)
        copied_at = time.monotonic()
        change.p99_before_ms = p99(probe.between(baseline_start, started)) * 1000
        change.extra["probes_before"] = len(probe.between(baseline_start, started))
        if mode == "warm":
            during = probe.between(started, copied_at)
            change.p99_during_ms = p99(during) * 1000
            change.extra["probes_during"] = len(during)
        published = time.monotonic()
        version = reader.client.version
        change.switch_seconds = _wait("reader switch", lambda: reader.client.version != version)
        if mode == "warm":
            _wait(
                "catch-up",
                lambda: stats(newcomer.port).get("cluster_warm_state") == "done",
                timeout=drain + 60,
            )
            catching_up = probe.between(copied_at, time.monotonic())
            change.p99_catchup_ms = p99(catching_up) * 1000
            change.extra["probes_catchup"] = len(catching_up)
        change.hit_ratio = len(reader.client.get_many(keys)) / len(keys)
        # through the nodes' catch-up and the clients' hand-over window
        time.sleep(max(drain, reader.client.handover_window) + 0.5)
        change.hit_after = len(reader.client.get_many(keys)) / len(keys)
        change.stale_reads = reader.stale - stale0
        change.checked_reads = reader.checked - checked0
        change.extra["published_to_sweep_s"] = round(time.monotonic() - published, 2)
        out.append(change)

        # ------------------------------------------------------------ 4 -> 3
        change = Change(f"4->3 {mode}")
        fill(reader.client, keys, values)  # refilled, as the application does on misses
        stale0, checked0 = reader.stale, reader.checked
        leaving = nodes[1]
        version = reader.client.version
        os.kill(leaving.popen.pid, signal.SIGTERM)
        change.switch_seconds = _wait("reader switch", lambda: reader.client.version != version)
        change.hit_ratio = len(reader.client.get_many(keys)) / len(keys)
        leaving.popen.wait(drain + 120)
        time.sleep(reader.client.handover_window + 0.5)  # the clients' hand-over window
        change.hit_after = len(reader.client.get_many(keys)) / len(keys)
        change.stale_reads = reader.stale - stale0
        change.checked_reads = reader.checked - checked0
        out.append(change)
        return out
    finally:
        for t in threads:
            t.stop.set()
        for t in threads:
            t.thread.join(10)
        for c in clients:
            c.close()
        for p in reversed(procs):
            p.stop()


@click.command()
@click.option("--keys", "n_keys", type=int, default=30_000, show_default=True)
@click.option("--poll", type=float, default=0.5, show_default=True, help="Clients' poll (s).")
@click.option("--drain", type=float, default=3.0, show_default=True, help="--drain-seconds.")
@click.option("--mode", type=click.Choice(["cold", "warm", "both"]), default="both")
@click.option("--warm-rate", type=int, default=None, help="The nodes' --warm-rate.")
@click.option("--json", "json_out", type=click.Path(), default=None)
def main(
    n_keys: int, poll: float, drain: float, mode: str, warm_rate: int | None, json_out: str | None
) -> None:
    """Measure the hit ratio and stale reads of a 3->4 and a 4->3 change."""
    # a SIGTERM unwinds like Ctrl-C, so every process started here is stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    results: list[Change] = []
    for m in ("cold", "warm") if mode == "both" else (mode,):
        results += run(m, n_keys, poll, drain, warm_rate)
    click.echo(
        f"{'change':<12} {'hit':>6} {'after':>6} {'switch s':>8} {'stale':>6} {'reads':>7} "
        f"{'warm keys':>9} {'rate/s':>7} {'p99 ms':>7} {'p99 warm':>8} {'p99 catch':>9}"
    )
    for c in results:
        click.echo(
            f"{c.what:<12} {c.hit_ratio:6.4f} {c.hit_after:6.4f} {c.switch_seconds:8.2f} "
            f"{c.stale_reads:6d} {c.checked_reads:7d} {c.warm_keys:9d} {c.warm_rate:7.0f} "
            f"{c.p99_before_ms:7.2f} {c.p99_during_ms:8.2f} {c.p99_catchup_ms:9.2f}"
        )
    if json_out:
        Path(json_out).write_text(json.dumps([asdict(c) for c in results], indent=2))


if __name__ == "__main__":
    main()

"""What a heartbeat costs etcd, and so how many cache nodes one etcd carries.

A config node on etcd turns each node's heartbeat into one lease keepalive (a put only when the
node's address changes, two writes on a join or a leave). This measures, against a real etcd,
with the config node's own client:

- latency, one request at a time: a keepalive, and a keepalive + put (the worst heartbeat);
- throughput, with ``--concurrency`` clients each on its own connection, as config nodes would
  be: keepalives per second, and keepalive + put per second;
- heartbeats through one config node (run in this process) from ``--nodes`` joined nodes: what
  one config node carries, its single etcd worker included.

At a heartbeat interval of I seconds one etcd carries about ``keepalives/s x I`` nodes on the
keepalive path (the steady state), and ``(keepalive+put)/s x I`` if every beat wrote.

    python -m memcache_server.load.etcd_heartbeat --etcd http://127.0.0.1:2379
    python -m memcache_server.load.etcd_heartbeat --start-etcd /var/tmp/etcd-bench  # starts one
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from memcache_server.discovery.config_node import ConfigNode, ConfigNodeSettings
from memcache_server.discovery.document import NodeAddress
from memcache_server.discovery.etcd_client import EtcdClient, EtcdError, parse_endpoints
from memcache_server.discovery.etcd_registry import EtcdSettings
from memcache_server.discovery.wire import EndpointConnection, register_line

PREFIX = b"/memcache-server/bench/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise SystemExit("etcd is not installed (Debian package etcd-server)")
    client, peer = _free_port(), _free_port()
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [etcd, "--name", "bench", "--data-dir", str(data_dir / "etcd")]
        + ["--listen-client-urls", url, "--advertise-client-urls", url]
        + ["--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl]
        + ["--initial-cluster", f"bench={purl}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    c = EtcdClient(parse_endpoints(url), timeout=1.0)
    deadline = time.monotonic() + 20
    while True:
        try:
            c.range_prefix(PREFIX)
            break
        except EtcdError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("etcd did not start") from None
            time.sleep(0.1)
    c.close()
    return proc, url


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def _steps(client: EtcdClient, lease: int, key: bytes) -> dict[str, Callable[[], object]]:
    return {
        "keepalive": lambda: client.keepalive(lease),
        "keepalive+put": lambda: (client.keepalive(lease), client.put(key, b"h|10.0.0.1|11211")),
    }


def latency(url: str, n: int) -> dict[str, list[float]]:
    client = EtcdClient(parse_endpoints(url))
    lease = client.grant(10)
    out: dict[str, list[float]] = {}
    for name, step in _steps(client, lease, PREFIX + b"latency").items():
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t)
        out[name] = samples
    client.close()
    return out


def _cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (0 when not ours to read)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hammer(url: str, name: str, i: int, stop: float, counts: list[int]) -> None:
    client = EtcdClient(parse_endpoints(url))
    step = _steps(client, client.grant(10), PREFIX + b"tp%d" % i)[name]
    while time.monotonic() < stop:
        step()
        counts[i] += 1
    client.close()


def throughput(
    url: str, concurrency: int, seconds: float, etcd_pid: int | None
) -> dict[str, tuple[float, float]]:
    """Per step: (requests per second, etcd CPU seconds per second while serving them)."""
    out: dict[str, tuple[float, float]] = {}
    for name in ("keepalive", "keepalive+put"):
        counts = [0] * concurrency
        stop = time.monotonic() + seconds
        cpu = _cpu_seconds(etcd_pid)
        threads = [
            threading.Thread(target=_hammer, args=(url, name, i, stop, counts))
            for i in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        out[name] = (sum(counts) / seconds, (_cpu_seconds(etcd_pid) - cpu) / seconds)
    return out


def _beat(port: int, nodes: list[NodeAddress], stop: float, lat: list[float]) -> None:
    with EndpointConnection("127.0.0.1", port, 5.0) as conn:
        i = 0
        while time.monotonic() < stop:
            line = register_line(nodes[i % len(nodes)], 0, None, fresh=False)
            t = time.perf_counter()
            conn.call(line)
            lat.append(time.perf_counter() - t)
            i += 1


def through_config_node(
    url: str, concurrency: int, seconds: float, nodes: int
) -> tuple[float, list[float]]:
    """Heartbeats per second one config node (in this process) turns into etcd keepalives,
    from ``concurrency`` connections cycling over ``nodes`` joined nodes; and their latencies."""
    etcd = EtcdSettings(parse_endpoints(url), "/memcache-server/bench-cluster/", 10.0)
    cfg = ConfigNode(ConfigNodeSettings(port=0, heartbeat_timeout=10.0, etcd=etcd))
    cfg.bind()
    loop = threading.Thread(target=cfg.serve, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while cfg.registry.version == 0:  # synchronised with etcd
            if time.monotonic() > deadline:
                raise SystemExit("the config node did not reach etcd")
            time.sleep(0.05)
        members = [
            NodeAddress(f"node-{i}.bench", f"10.0.{i // 250}.{i % 250 + 1}", 11211)
            for i in range(nodes)
        ]
        with EndpointConnection("127.0.0.1", cfg.port, 5.0) as conn:
            for m in members:
                conn.call(register_line(m, 0, None, fresh=True))
        lats: list[list[float]] = [[] for _ in range(concurrency)]
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_beat, args=(cfg.port, members[i::concurrency], stop, lats[i]))
            for i in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
    finally:
        cfg.stop()
        loop.join(5)
    flat = [x for lat in lats for x in lat]
    return len(flat) / seconds, flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--etcd", help="etcd client URL (default: start one, see --start-etcd)")
    ap.add_argument("--start-etcd", metavar="DIR", help="start a one-member etcd with data in DIR")
    ap.add_argument("--requests", type=int, default=2000, help="per latency measurement")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    ap.add_argument("--interval", type=float, default=1.0, help="heartbeat interval to size for")
    ap.add_argument("--nodes", type=int, default=200, help="nodes joined to the config node")
    args = ap.parse_args()
    proc = None
    url = args.etcd
    tmp = None
    if url is None:
        base = Path(args.start_etcd) if args.start_etcd else None
        tmp = tempfile.TemporaryDirectory(dir=base)
        proc, url = start_etcd(Path(tmp.name))
    try:
        lat = latency(url, args.requests)
        tp = throughput(url, args.concurrency, args.seconds, proc.pid if proc else None)
        cfg_rate, cfg_lat = through_config_node(url, args.concurrency, args.seconds, args.nodes)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if tmp is not None:
            tmp.cleanup()
    print(
        f"etcd {url}; {args.requests} sequential requests; {args.concurrency} clients x "
        f"{args.seconds:g} s for throughput"
    )
    print(
        f"{'step':<15} {'p50 ms':>7} {'p99 ms':>7} {'per s':>7} {'etcd CPU':>9} "
        f"{'nodes (measured)':>17} {'nodes/etcd core':>16}"
    )
    for name, samples in lat.items():
        rate, cpu = tp[name]
        per_core = f"{rate / cpu * args.interval:16.0f}" if cpu else f"{'-':>16}"
        print(
            f"{name:<15} {_pct(samples, 0.5):7.2f} {_pct(samples, 0.99):7.2f} {rate:7.0f} "
            f"{cpu:9.2f} {rate * args.interval:17.0f} {per_core}"
        )
    print(
        f"{'via config node':<15} {_pct(cfg_lat, 0.5):7.2f} {_pct(cfg_lat, 0.99):7.2f} "
        f"{cfg_rate:7.0f} {'':>9} {cfg_rate * args.interval:17.0f}"
    )
    print(
        f"nodes = heartbeats per second x the {args.interval:g} s interval; measured: what this "
        "client drove; per etcd core: the same rate scaled to one full core of etcd's CPU; "
        f"via config node: heartbeats of {args.nodes} joined nodes through one config node "
        "(in this process) to etcd"
    )


if __name__ == "__main__":
    main()

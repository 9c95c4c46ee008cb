"""Hit ratio under memory pressure: our node and memcached in the same run, same traffic.

``python -m memcache_server.load.hitratio [--memory 16] [--hot-keys 20000] [--scan-keys 120000]
[--scans 1] [--hot-reads 1.0] [--value-size 200] [--zipf-keys 200000] [--zipf-requests 200000]
[--zipf-s 0.99] [--pace-ms 0] [--ours-args "-o no_lru_maintainer"] [--json FILE]``

Two workloads, each against a fresh server of each kind (``-m`` as given), one pipelined
connection, batches of ``BATCH`` commands:

* **hot set + scans**: store ``--hot-keys`` keys and read them twice (a working set in use),
  then write ``--scans`` one-pass scans of ``--scan-keys`` new keys while reading the hot set
  round-robin, ``--hot-reads`` hot gets per scan set (default 1). Reports the hot set's hit
  ratio during the scans and the share of it still stored at the end. A segmented LRU keeps
  the hot set in WARM; a plain LRU lets the scan push it out.
* **zipf**: a read-through trace: ``--zipf-requests`` gets over ``--zipf-keys`` keys drawn
  with Zipf(s) popularity (seeded, so both servers see the same trace); a miss is followed by
  a set of the key. Reports the hit ratio.

Speed is not measured here (the servers differ several-fold in speed, and so does how far the
LRU maintainer gets between requests); only which items each server chose to keep.

``--pace-ms``: start scan batch k no sooner than k times this after the scan starts, so both
servers see the scan on the same clock. Why: the segmented LRU's age limits
(``hot_max_factor``/``warm_max_factor`` times COLD's tail age) count whole seconds, so how
many hot items WARM gives back to COLD depends on how many seconds the scan spans; a server
driven faster by the same client sees another workload. With a pace both can keep, the
comparison is of the policies alone.
"""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import click

from memcache_server.load.bench_servers import (
    DEFAULT_OURS_CMD,
    Server,
    start_memcached,
    start_ours,
    stop,
)

BATCH = 200  # commands sent before reading their replies


class Client:
    """One pipelined text-protocol connection: batches of sets and gets, replies counted."""

    def __init__(self, port: int, value_size: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.value = b"x" * value_size

    def close(self) -> None:
        self.sock.close()

    def _read_until(self, count: int, marks: tuple[bytes, ...]) -> bytes:
        buf = bytearray()
        while sum(buf.count(m) for m in marks) < count:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return bytes(buf)

    def set_many(self, keys: list[bytes]) -> None:
        n = len(self.value)
        self.sock.sendall(b"".join(b"set %b 0 0 %d\r\n%b\r\n" % (k, n, self.value) for k in keys))
        self._read_until(len(keys), (b"STORED\r\n", b"SERVER_ERROR"))

    def hits(self, keys: list[bytes]) -> set[bytes]:
        """The keys of ``keys`` that hit (one get each, pipelined)."""
        self.sock.sendall(b"".join(b"get %b\r\n" % k for k in keys))
        reply = self._read_until(len(keys), (b"END\r\n",))
        return {line.split(b" ")[1] for line in reply.split(b"\r\n") if line.startswith(b"VALUE ")}


def _start(which: str, memory: int, ours_args: str) -> Server:
    if which == "memcached":
        return start_memcached(4, memory)
    return start_ours(f"{DEFAULT_OURS_CMD} {ours_args}".strip(), 4, memory)


def hot_and_scans(
    port: int,
    hot_keys: int,
    scan_keys: int,
    scans: int,
    value_size: int,
    hot_reads: float,
    pace: float = 0.0,
) -> dict[str, float]:
    """The hot set and scans workload; ``pace``: seconds per scan batch at least."""
    c = Client(port, value_size)
    try:
        hot = [b"hot:%d" % i for i in range(hot_keys)]
        for i in range(0, hot_keys, BATCH):
            c.set_many(hot[i : i + BATCH])
        for _ in range(2):
            for i in range(0, hot_keys, BATCH):
                c.hits(hot[i : i + BATCH])
        cycle = itertools.cycle(hot)
        gets = hit = 0
        owed = 0.0
        start = time.monotonic()
        batches = 0
        for scan in range(scans):
            for i in range(0, scan_keys, BATCH):
                if pace:
                    wait = start + batches * pace - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                batches += 1
                n = min(BATCH, scan_keys - i)
                c.set_many([b"scan%d:%d" % (scan, j) for j in range(i, i + n)])
                owed += n * hot_reads
                batch = [next(cycle) for _ in range(int(owed))]
                owed -= len(batch)
                if batch:
                    hit += len(c.hits(batch))
                    gets += len(batch)
        kept = sum(len(c.hits(hot[i : i + BATCH])) for i in range(0, hot_keys, BATCH))
        scan_seconds = time.monotonic() - start
    finally:
        c.close()
    return {
        "hot_hit_ratio": hit / gets if gets else 0.0,
        "hot_kept": kept / hot_keys,
        "scan_seconds": scan_seconds,
    }


def zipf_trace(keys: int, requests: int, s: float, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1.0 / (r + 1) ** s for r in range(keys)))
    ranks = rng.choices(range(keys), cum_weights=weights, k=requests)
    perm = list(range(keys))
    rng.shuffle(perm)  # popularity unrelated to key order (and so to slab class or set order)
    return [perm[r] for r in ranks]


def zipf_read_through(port: int, trace: list[int], value_size: int) -> dict[str, float]:
    c = Client(port, value_size)
    try:
        hit = 0
        for i in range(0, len(trace), BATCH):
            batch = [b"z:%d" % k for k in trace[i : i + BATCH]]
            got = c.hits(batch)
            hit += sum(1 for k in batch if k in got)
            missed = list(dict.fromkeys(k for k in batch if k not in got))
            if missed:
                c.set_many(missed)
    finally:
        c.close()
    return {"zipf_hit_ratio": hit / len(trace) if trace else 0.0}


def run(opts: dict[str, Any]) -> dict[str, dict[str, float]]:
    trace = zipf_trace(opts["zipf_keys"], opts["zipf_requests"], opts["zipf_s"])
    out: dict[str, dict[str, float]] = {}
    for which in ("memcached", "ours"):
        row: dict[str, float] = {}
        t0 = time.monotonic()
        for workload in ("scan", "zipf"):
            server = _start(which, opts["memory"], opts["ours_args"])
            try:
                if workload == "scan":
                    row |= hot_and_scans(
                        server.port,
                        opts["hot_keys"],
                        opts["scan_keys"],
                        opts["scans"],
                        opts["value_size"],
                        opts["hot_reads"],
                        opts["pace_ms"] / 1000,
                    )
                else:
                    row |= zipf_read_through(server.port, trace, opts["value_size"])
            finally:
                stop(server)
        row["seconds"] = time.monotonic() - t0
        out[which] = row
    return out


@click.command()
@click.option("--memory", default=16, show_default=True, help="-m for both servers (MB)")
@click.option("--hot-keys", default=20_000, show_default=True)
@click.option("--scan-keys", default=120_000, show_default=True, help="keys per one-pass scan")
@click.option("--scans", default=1, show_default=True)
@click.option("--hot-reads", default=1.0, show_default=True, help="hot gets per scan set")
@click.option("--value-size", default=200, show_default=True)
@click.option("--zipf-keys", default=200_000, show_default=True)
@click.option("--zipf-requests", default=200_000, show_default=True)
@click.option("--zipf-s", default=0.99, show_default=True)
@click.option(
    "--pace-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="ms per scan batch at least (0: as fast as each server answers)",
)
@click.option(
    "--ours-args", default="", help="extra flags for our node (e.g. -o no_lru_maintainer)"
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def main(json_path: Path | None, **opts: Any) -> None:
    """Hit ratios of memcached and our node under the same memory pressure."""
    result = run(opts)
    print(
        "| server | hot hits during scans | hot set kept | scan seconds | zipf hit ratio "
        "| seconds |"
    )
    print("|---|---|---|---|---|---|")
    for which, r in result.items():
        print(
            f"| {which} | {r['hot_hit_ratio']:.2f} | {r['hot_kept']:.2f} "
            f"| {r['scan_seconds']:.1f} | {r['zipf_hit_ratio']:.3f} | {r['seconds']:.0f} |"
        )
    if json_path is not None:
        json_path.write_text(json.dumps({"options": opts, "result": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The -t scaling curve: memcaslap against memcached and our node at each thread count.

``python -m memcache_server.load.scaling [--threads 1,2,4,8] [--duration 10] [--caslap-threads 8]
[--concurrency 256] [--reps 1] [--json FILE]``

For each ``-t`` both servers are started fresh (``-m 64``) on 127.0.0.1 and driven by the same
memcaslap get90 run (16 B keys, 100 B values), alternating which goes first; the server's CPU
(utime + stime of its whole process tree over the run) says how many cores it used. Prints a
markdown table of ops/s, cores and the paired ratio ours/memcached. Meant for a many-core
machine, where the curve shows whether our throughput grows with -t as memcached's does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from memcache_server.load.bench_servers import (
    DEFAULT_OURS_CMD,
    cpu_seconds,
    start_memcached,
    start_ours,
    stop,
)
from memcache_server.load.bench_tools import WORKLOADS, BenchWorkload, run_memcaslap

GET90 = WORKLOADS[0]


def _measure(
    which: str, threads: int, wl: BenchWorkload, duration: float, caslap_threads: int
) -> dict[str, float]:
    server = (
        start_memcached(threads, 64)
        if which == "memcached"
        else start_ours(DEFAULT_OURS_CMD, threads, 64)
    )
    try:
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        ops = run_memcaslap(server.port, wl, duration, threads=caslap_threads)
        cores = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        stop(server)
    return {"ops": ops, "cores": cores}


def curve(
    thread_counts: list[int], duration: float, caslap_threads: int, concurrency: int, reps: int
) -> list[dict[str, Any]]:
    wl = BenchWorkload(**{**GET90.__dict__, "caslap_concurrency": concurrency})
    rows = []
    for t in thread_counts:
        runs: dict[str, list[dict[str, float]]] = {"memcached": [], "ours": []}
        for rep in range(reps):
            order = ("memcached", "ours") if rep % 2 == 0 else ("ours", "memcached")
            for which in order:
                runs[which].append(_measure(which, t, wl, duration, caslap_threads))
        ratios = sorted(
            o["ops"] / m["ops"] for o, m in zip(runs["ours"], runs["memcached"], strict=True)
        )
        rows.append({"threads": t, **runs, "ratio": ratios[len(ratios) // 2]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def best(runs: list[dict[str, float]], field: str) -> float:
        return sorted(r[field] for r in runs)[len(runs) // 2]

    out = [
        "| -t | memcached ops/s | memcached cores | ours ops/s | ours cores | ours/memcached |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, o = r["memcached"], r["ours"]
        out.append(
            f"| {r['threads']} | {best(m, 'ops'):,.0f} | {best(m, 'cores'):.1f} | "
            f"{best(o, 'ops'):,.0f} | {best(o, 'cores'):.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(out)


@click.command()
@click.option("--threads", default="1,2,4,8", show_default=True, help="The -t values.")
@click.option("--duration", default=10.0, show_default=True, help="Seconds per run.")
@click.option("--caslap-threads", default=8, show_default=True, help="memcaslap -T.")
@click.option("--concurrency", default=256, show_default=True, help="memcaslap -c.")
@click.option("--reps", default=1, show_default=True, help="Alternated pairs per -t.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(
    threads: str,
    duration: float,
    caslap_threads: int,
    concurrency: int,
    reps: int,
    json_path: Path | None,
) -> None:
    """Print the -t scaling curve of our node against memcached."""
    rows = curve([int(t) for t in threads.split(",")], duration, caslap_threads, concurrency, reps)
    click.echo(table(rows))
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

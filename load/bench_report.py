"""Markdown rendering of a bench run (the BENCHMARKS-style table)."""

from __future__ import annotations

import statistics
from typing import Any


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def _errors(cell: dict[str, list[float]]) -> str:
    errs = cell.get("errors")
    return f"{int(sum(errs)):,}" if errs else "n/a"


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# Benchmark: our node vs memcached",
        "",
        f"- when: {meta['when']}; host: {meta['cpus']} CPUs; reps: {meta['reps']} "
        f"(alternating order); {meta['duration']} s per measurement",
        f"- servers: `-t {meta['threads']} -m {meta['memory']}` on 127.0.0.1; ours: "
        f"`{meta['ours_cmd']}`",
        f"- our generator: {meta['procs']} procs x {meta['connections']} conns, "
        f"{meta['keys']:,} keys (prefilled); memcaslap: `-T 2` (see notes)",
        "- ratio = median over reps of (ours / memcached) measured back to back; CPU = server "
        "utime+stime over the run / run seconds (1.0 = one core)",
        "",
        "## Throughput",
        "",
        "| workload | tool | ours ops/s | memcached ops/s | ratio ours/mc | ours CPU | mc CPU "
        "| generator errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["matrix"]:
        for tool in ("load", "memcaslap"):
            cell = row.get(tool)
            if not cell:
                continue
            lines.append(
                f"| ({row['key']}) {row['title']} | {tool} | {_fmt(_med(cell['ours']))} "
                f"| {_fmt(_med(cell['memcached']))} | {_fmt(_med(cell['ratio']), 3)} "
                f"| {_fmt(_med(cell['cpu_ours']), 2)} | {_fmt(_med(cell['cpu_memcached']), 2)} "
                f"| {_errors(cell)} |"
            )
    probe = data.get("latency_probe")
    if probe:
        lines += [
            "",
            "## Low-load latency (1 connection, no pipelining, get90)",
            "",
            "| server | p50 us | p99 us | ops/s |",
            "|---|---:|---:|---:|",
        ]
        for name in ("ours", "memcached"):
            p = probe[name]
            lines.append(
                f"| {name} | {_fmt(_med(p['p50']), 1)} | {_fmt(_med(p['p99']), 1)} "
                f"| {_fmt(_med(p['ops']))} |"
            )
        lines.append(f"\nmedian paired p50 ratio ours/memcached: {_fmt(_med(probe['ratio']), 3)}")
    threads = data.get("threads")
    if threads:
        lines += [
            "",
            "## Thread count (get90, our generator, one run each)",
            "",
            "| -t | ours ops/s | ours CPU | memcached ops/s | mc CPU | ratio |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for t in threads:
            lines.append(
                f"| {t['threads']} | {_fmt(t['ours'])} | {_fmt(t['cpu_ours'], 2)} "
                f"| {_fmt(t['memcached'])} | {_fmt(t['cpu_memcached'], 2)} "
                f"| {_fmt(t['ours'] / t['memcached'] if t['memcached'] else float('nan'), 3)} |"
            )
    mem = data.get("memory")
    if mem:
        lines += [
            "",
            f"## Memory: churn {mem['target_mb']:,} MB (10^6 B) of distinct "
            f"{mem['value_size']}-byte values through `-m {meta['memory']}`",
            "",
            "| server | values churned MB | complete | sets/s | errors | curr_items "
            "| RSS before MiB | RSS after MiB |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for name in ("ours", "memcached"):
            m = mem.get(name)
            if not m:
                continue
            if "error" in m:
                lines.append(f"| {name} | failed: {m['error']} | | | | | | |")
                continue
            c = m["churn"]
            lines.append(
                f"| {name} | {c['value_bytes'] / 1e6:,.0f} | {c['complete']} "
                f"| {_fmt(c['sets'] / max(c['seconds'], 1e-9))} | {c['errors']:,} "
                f"| {m['curr_items']:,} | {m['rss_before_kib'] / 1024:,.1f} "
                f"| {m['rss_after_kib'] / 1024:,.1f} |"
            )
    if data.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"

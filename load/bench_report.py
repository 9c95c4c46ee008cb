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


METHOD = """\
## Method

- One machine, both servers on 127.0.0.1, started fresh by the bench with the same flags
  (`-t {threads} -m {memory}`), each run alternating which server goes first; every figure
  below is the median over repetitions, and every ratio is the median of *paired* ratios
  (ours / memcached measured back to back), because absolute figures on a shared 2-core
  machine drift from run to run.
- Two load generators: ours (`python -m memcache_server.load run`: verifies every value,
  HDR latency) and memcaslap from libmemcached-tools (a neutral C generator; it cannot
  pipeline and its TPS counts each multi-get key).
- CPU is the server's utime + stime over the run divided by its length (1.0 = one core).
- Regenerate everything: `python -m memcache_server.load.bench` (about 15 minutes; `--quick`
  for a smoke run).
"""

LIMITS = """\
## What limits us

- System calls dominate: per request a non-pipelined client costs a recv and a send. Profiles
  (py-spy, cProfile of a worker) show `send` on loopback as the largest single cost; our per-op
  system time is close to memcached's, our per-op user time (the interpreter running the
  protocol and store code, ~3 us per get and ~7.5 us per set measured in-process) is what
  memcached does not pay.
- The generator shares the 2 cores with the server, so server CPU per op decides throughput:
  memcached's ~10 us of CPU per op against our ~15 us.
- The GIL: Python code cannot run in parallel, so under it one event loop serves every
  connection whatever `-t` says (several loops only added hand-offs: -t 4 served 0.5-0.75 of
  -t 1); {threads_line} A free-threaded Python runs `-t` loops in parallel.
- Pipelining amortises the system calls over many requests, and answering a whole read batch
  with one send is where we beat memcached 1.6.18, which sends each get reply on its own.
- What would move it further: fewer Python calls per request (a specialised get fast path),
  or the parser and store lookup in C.
"""


def render(
    data: dict[str, Any], plots: list[tuple[str, str]] | None = None, assets: str = "benchmarks"
) -> str:
    meta = data["meta"]
    lines = [
        "# Benchmark: our node vs memcached",
        "",
        "## Machine",
        "",
        f"- {meta.get('cpus')} CPUs ({meta.get('cpu_model', 'unknown')}), "
        f"{meta.get('platform', '')}, Python {meta.get('python', '')}",
        "",
        METHOD.format(threads=meta["threads"], memory=meta["memory"]),
        "## This run",
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
    if plots:
        lines += ["", "## Plots", ""]
        for title, name in plots:
            lines += [f"![{title}]({assets}/{name})", ""]
    if data.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    lines += ["", LIMITS.format(threads_line=_threads_line(threads or []))]
    return "\n".join(lines) + "\n"


def _threads_line(threads: list[dict[str, Any]]) -> str:
    """What this run says about -t: each thread count's throughput against the best one.
    (With a GIL, more event loops mean fewer events per wake-up and more hand-offs.)"""
    runs = [t for t in threads if t.get("ours")]
    if not runs:
        return "this run did not measure thread counts."
    best = max(runs, key=lambda t: t["ours"])
    parts = ", ".join(f"`-t {t['threads']}` {t['ours'] / best['ours']:.2f}" for t in runs)
    return f"in this run, throughput relative to the best thread count: {parts}."

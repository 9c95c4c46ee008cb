"""Markdown for the bench's memory section: items held at ``-m 64``, and the memory of each
server's whole process tree after the churn.

Pure: it reads the bench's JSON (``data["memory"]``) and returns lines.  The reference for every
ratio is memcached at its smallest ``-t`` in the run (``-t 1`` in a standard run): memcached is
one process, so its RSS is what it costs; ours is compared by PSS, which counts the segment the
workers share once.
"""

from __future__ import annotations

import statistics
from typing import Any

MIB = 1024.0


def _fmt(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def reference_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """memcached's run at its smallest ``-t`` that finished, or None."""
    mc = [r for r in runs if r["server"] == "memcached" and "error" not in r]
    return min(mc, key=lambda r: r["threads"]) if mc else None


def items_held(run: dict[str, Any]) -> int | None:
    """``curr_items`` when the first eviction was seen, None if the churn never evicted."""
    first = run.get("churn", {}).get("first_eviction")
    return int(first["curr_items"]) if first else None


def worker_median_mib(run: dict[str, Any], field: str) -> float | None:
    """Median of a per-worker figure (``worker_uss_kib``, ``worker_own_kib``) after the churn,
    MiB; None for a tree without workers."""
    xs = run.get("after", {}).get(field) or []
    return statistics.median(xs) / MIB if xs else None


def cost_kib(run: dict[str, Any]) -> int:
    """What a run's tree costs after the churn: PSS for ours (workers share the segment),
    RSS for memcached (one process, as the issue compares it)."""
    after = run["after"]
    return int(after["rss_kib"] if run["server"] == "memcached" else after["pss_kib"])


def pss_per_extra_worker_mib(run: dict[str, Any], runs: list[dict[str, Any]]) -> float | None:
    """(tree PSS at this ``-t`` - tree PSS of the same server at ``-t 1``) / (t - 1), MiB:
    what each worker beyond the first costs, shared pages counted once.  Ours only: memcached's
    threads are not processes."""
    if run["server"] != "ours" or run["threads"] <= 1 or "after" not in run:
        return None
    base = [r for r in runs if r["server"] == run["server"] and r["threads"] == 1 and "after" in r]
    if not base:
        return None
    extra = float(run["after"]["pss_kib"] - base[0]["after"]["pss_kib"])
    return extra / int(run["threads"] - 1) / MIB


def render_memory(mem: dict[str, Any]) -> list[str]:
    runs: list[dict[str, Any]] = mem.get("runs", [])
    ref = reference_run(runs)
    ref_name = f"memcached -t {ref['threads']}" if ref else "memcached"
    ref_items = items_held(ref) if ref else None
    ref_rss = cost_kib(ref) if ref else None
    lines = [
        "",
        f"## Memory at `-m {mem['memory_mb']}`, {mem['value_size']}-byte values",
        "",
        f"### Items held (distinct keys set until the first eviction; ratio vs {ref_name})",
        "",
        "| server | -t | items held | sets until the first eviction | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['server']} | {r['threads']} | failed: {r['error']} | | |")
            continue
        held = items_held(r)
        first = r["churn"].get("first_eviction")
        lines.append(
            f"| {r['server']} | {r['threads']} "
            f"| {_fmt(held) if held is not None else 'no eviction'} "
            f"| {_fmt(first['sets']) if first else 'n/a'} "
            f"| {_fmt(_ratio(held, ref_items), 3)} |"
        )
    lines += [
        "",
        f"### After churning {mem['target_mb']:,} MB (10^6 B) of values",
        "",
        "Memory of the whole process tree from `/proc/PID/smaps_rollup`: PSS counts a page "
        "shared by N processes as 1/N in each, so the shared segment counts once. Per worker "
        "(median): USS = `Private_Clean + Private_Dirty` from smaps_rollup, which also counts "
        "segment pages no other process has touched; own = the same over the worker's private "
        "mappings only (heap, stacks, copied pages), what one more worker costs. Extra PSS per "
        "worker = (PSS at `-t N` - PSS at `-t 1`) / (N - 1). Ratio = our tree's PSS "
        f"(memcached: its RSS) / {ref_name} RSS.",
        "",
        "| server | -t | churned MB | complete | sets/s | curr_items | processes "
        "| PSS MiB | RSS MiB | worker USS MiB | worker own MiB | extra PSS per worker MiB "
        "| ratio |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['server']} | {r['threads']} | failed: {r['error']} |" + " |" * 10)
            continue
        c, after = r["churn"], r["after"]
        lines.append(
            f"| {r['server']} | {r['threads']} | {_fmt(c['value_bytes'] / 1e6)} "
            f"| {c['complete']} | {_fmt(c['sets'] / max(c['seconds'], 1e-9))} "
            f"| {_fmt(r['curr_items'])} | {after['processes']} "
            f"| {_fmt(after['pss_kib'] / MIB, 1)} | {_fmt(after['rss_kib'] / MIB, 1)} "
            f"| {_fmt(worker_median_mib(r, 'worker_uss_kib'), 1)} "
            f"| {_fmt(worker_median_mib(r, 'worker_own_kib'), 1)} "
            f"| {_fmt(pss_per_extra_worker_mib(r, runs), 1)} "
            f"| {_fmt(_ratio(cost_kib(r), ref_rss), 3)} |"
        )
    return lines

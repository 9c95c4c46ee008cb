"""PNG charts for a bench run: what people would rather look at than read.

Drawn from the bench's JSON (never from a live run), so a report can be re-plotted. matplotlib
is imported lazily; without it the report is written without pictures and says so.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def write_plots(data: dict[str, Any], outdir: Path) -> list[tuple[str, str]]:
    """Write the charts into ``outdir``; returns (title, file name) pairs for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []

    rows = data.get("matrix") or []
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"({r['key']}) {r['title']}" for r in rows]
        width = 0.38
        for k, tool in enumerate(("load", "memcaslap")):
            vals = [_med(r.get(tool, {}).get("ratio", [])) for r in rows]
            xs = [i + (k - 0.5) * width for i in range(len(rows))]
            ax.bar(xs, vals, width, label=f"generator: {tool}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        label: str | None = "issue target"
        for i, r in enumerate(rows):
            if r.get("target") is not None:
                span = [i - 0.45, i + 0.45]
                ax.plot(span, [r["target"]] * 2, "r--", linewidth=1, label=label)
                label = None
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("throughput ours / memcached")
        ax.set_title("Throughput ratio (median of paired runs)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "throughput-ratio.png", dpi=100)
        plt.close(fig)
        made.append(("Throughput ratio per workload", "throughput-ratio.png"))

    probe = data.get("latency_probe")
    if probe:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = ["ours", "memcached"]
        for k, pct in enumerate(("p50", "p99")):
            vals = [_med(probe[n][pct]) for n in names]
            ax.bar([i + (k - 0.5) * 0.38 for i in range(2)], vals, 0.38, label=pct)
        ax.set_xticks(range(2), names)
        ax.set_ylabel("latency, microseconds")
        ax.set_title("Low-load latency (1 connection)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(outdir / "latency.png", dpi=100)
        plt.close(fig)
        made.append(("Low-load latency", "latency.png"))

    threads = data.get("threads")
    if threads:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ts = [t["threads"] for t in threads]
        ax.plot(ts, [_med(t["ours"]) for t in threads], marker="o", label="ours")
        ax.plot(ts, [_med(t["memcached"]) for t in threads], marker="o", label="memcached")
        ax.set_xticks(ts)
        ax.set_xlabel("-t")
        ax.set_ylabel("ops/s")
        ax.set_title(f"Throughput by thread count (get90, {threads[0].get('tool', '')})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(outdir / "threads.png", dpi=100)
        plt.close(fig)
        made.append(("Throughput by -t", "threads.png"))

    runs = [r for r in (data.get("memory") or {}).get("runs", []) if "after" in r]
    if runs:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
        labels = [f"{r['server']}\n-t {r['threads']}" for r in runs]
        xs = list(range(len(runs)))
        a1.bar(
            [x - 0.2 for x in xs], [r["after"]["pss_kib"] / 1024 for r in runs], 0.4, label="PSS"
        )
        a1.bar(
            [x + 0.2 for x in xs], [r["after"]["rss_kib"] / 1024 for r in runs], 0.4, label="RSS"
        )
        a1.set_xticks(xs, labels, fontsize=7)
        a1.set_title("process tree after churn, MiB")
        a1.legend(fontsize=7)
        held = [(r["churn"].get("first_eviction") or {}).get("curr_items", 0) for r in runs]
        a2.bar(xs, held)
        a2.set_xticks(xs, labels, fontsize=7)
        a2.set_title("items held at the first eviction")
        fig.tight_layout()
        fig.savefig(outdir / "memory.png", dpi=100)
        plt.close(fig)
        made.append(("Memory at -m 64: PSS/RSS after churn, items held", "memory.png"))
    return made

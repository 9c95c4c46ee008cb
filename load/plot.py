"""PNG plots (and an optional self-contained HTML page) from result JSON files.

matplotlib is imported lazily here only, so ``load run`` works without it; if it is missing,
``PlotUnavailable`` explains how to get it.
"""

from __future__ import annotations

import base64
import html as html_mod
import json
from pathlib import Path
from typing import Any

MIN_SLOT_SECONDS = 0.25  # skip tiny trailing slots: their rate is noise


class PlotUnavailable(RuntimeError):
    """Raised when matplotlib cannot be imported."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "plotting needs matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return plt


def _label(path: Path, result: dict[str, Any]) -> str:
    servers = ",".join(result["config"]["servers"])
    return f"{path.stem} ({result['config']['workload']['name']} @ {servers})"


def plot_results(paths: list[Path], out_dir: Path, html: bool = True) -> list[Path]:
    plt = _pyplot()
    results = [(p, json.loads(p.read_text())) for p in paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for path, res in results:
        pts = [s for s in res["timeseries"] if s["seconds"] >= MIN_SLOT_SECONDS]
        ax.plot([s["t"] + 1 for s in pts], [s["ops_per_s"] for s in pts], label=_label(path, res))
    ax.set(xlabel="time (s)", ylabel="ops/s", title="Throughput over time")
    ax.set_ylim(bottom=0)
    written.append(_save(plt, fig, ax, out_dir / "throughput.png"))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for path, res in results:
        pts = [s for s in res["timeseries"] if s["seconds"] >= MIN_SLOT_SECONDS]
        t = [s["t"] + 1 for s in pts]
        line = ax.plot(t, [s["p99_us"] for s in pts], label=f"p99 {_label(path, res)}")[0]
        ax.plot(t, [s["p50_us"] for s in pts], ls="--", color=line.get_color(), label="p50")
    ax.set(xlabel="time (s)", ylabel="latency (us)", title="Latency over time (p50 dashed)")
    ax.set_yscale("log")
    written.append(_save(plt, fig, ax, out_dir / "latency_time.png"))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for path, res in results:
        dist = [(p, v) for p, v in res["latency_us"]["distribution"] if p < 100.0]
        # x = 1/(1-p) so the tail is spread out, as in HdrHistogram plots
        ax.plot(
            [1.0 / (1.0 - p / 100.0) for p, _ in dist],
            [v for _, v in dist],
            marker="o",
            label=_label(path, res),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [50.0, 90.0, 99.0, 99.9, 99.99]
    ax.set_xticks([1.0 / (1.0 - p / 100.0) for p in ticks], [f"p{p:g}" for p in ticks])
    ax.set(xlabel="percentile", ylabel="latency (us)", title="Latency distribution")
    written.append(_save(plt, fig, ax, out_dir / "latency_percentiles.png"))

    if html:
        written.append(_write_html(results, written, out_dir / "report.html"))
    return written


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> Path:
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_html(results: list[tuple[Path, dict[str, Any]]], pngs: list[Path], out: Path) -> Path:
    rows = []
    for path, res in results:
        lat = res["latency_us"]
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html_mod.escape(str(c))}</td>"
                for c in (
                    path.name,
                    res["config"]["workload"]["name"],
                    f"{res['throughput_ops_s']:,.0f}",
                    res["totals"]["hit_ratio"],
                    res["totals"]["errors_total"],
                    lat["p50"],
                    lat["p99"],
                    lat["p99_9"],
                )
            )
            + "</tr>"
        )
    imgs = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><br>'
        for p in pngs
    )
    out.write_text(
        "<!doctype html><meta charset=utf-8><title>load report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        "<h1>Load report</h1><table><tr><th>file</th><th>workload</th><th>ops/s</th>"
        "<th>hit ratio</th><th>errors</th><th>p50 us</th><th>p99 us</th><th>p99.9 us</th></tr>"
        + "".join(rows)
        + "</table>"
        + imgs
    )
    return out

"""``load plot``: PNGs and HTML from a result file; a clear message without matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from memcache_server.load import plot
from memcache_server.load.hist import Histogram
from memcache_server.load.report import latency_summary


def _result(path: Path) -> Path:
    h = Histogram.of(range(10_000, 2_000_000, 997))
    res = {
        "config": {"servers": ["127.0.0.1:1"], "workload": {"name": "get90"}},
        "throughput_ops_s": 1234.0,
        "totals": {"hit_ratio": 1.0, "errors_total": 0},
        "latency_us": latency_summary(h),
        "timeseries": [
            {"t": t, "seconds": 1.0, "ops_per_s": 1000 + t, "p50_us": 50.0, "p99_us": 90.0}
            for t in range(5)
        ],
    }
    path.write_text(json.dumps(res))
    return path


def test_plot_writes_files(tmp_path: Path) -> None:
    src = _result(tmp_path / "r.json")
    written = plot.plot_results([src], tmp_path / "out")
    names = {p.name for p in written}
    assert names == {
        "throughput.png",
        "latency_time.png",
        "latency_percentiles.png",
        "report.html",
    }
    for p in written:
        assert p.stat().st_size > 1000
    assert (tmp_path / "out" / "throughput.png").read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in (tmp_path / "out" / "report.html").read_text()


def test_missing_matplotlib_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(plot.PlotUnavailable, match="pip install matplotlib"):
        plot.plot_results([_result(tmp_path / "r.json")], tmp_path / "out")

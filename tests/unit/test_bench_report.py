"""The bench's pure parts: smaps_rollup parsing, the tree summary, target verdicts, -t scaling
and the markdown it renders from a saved run (no servers: the input is the bench's JSON)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from memcache_server.load.bench_procmem import (
    ProcMem,
    own_private_kib,
    parse_smaps_rollup,
    proc_mem,
    summarise_tree,
)
from memcache_server.load.bench_report import render, scaling, target_rows, verdict
from memcache_server.load.bench_report_memory import (
    cost_kib,
    items_held,
    pss_per_extra_worker_mib,
    reference_run,
    worker_median_mib,
)

ROLLUP = """\
55d4c1a2e000-7ffd0a5f1000 ---p 00000000 00:00 0                          [rollup]
Rss:               90412 kB
Pss:               40120 kB
Pss_Dirty:         30000 kB
Shared_Clean:       6000 kB
Shared_Dirty:      60000 kB
Private_Clean:       412 kB
Private_Dirty:     24000 kB
Referenced:        90412 kB
THPeligible:    0
"""


def test_smaps_rollup_lines_become_kib_and_the_rest_is_skipped() -> None:
    got = parse_smaps_rollup(ROLLUP)
    assert got["Rss"] == 90412
    assert got["Pss"] == 40120
    assert got["Private_Clean"] == 412 and got["Private_Dirty"] == 24000
    assert "THPeligible" not in got  # no kB unit
    assert not any("rollup" in k or "-" in k for k in got)  # the address-range header line


def test_uss_is_private_clean_plus_private_dirty() -> None:
    p = proc_mem(7, 2, parse_smaps_rollup(ROLLUP), own=300)
    assert p == ProcMem(pid=7, depth=2, rss=90412, pss=40120, uss=24412, own=300)


SMAPS = """\
55d4c1a2e000-55d4c1a4f000 r--p 00000000 fe:00 260368                     /usr/bin/python3.11
Rss:                 132 kB
Private_Clean:         4 kB
Private_Dirty:         0 kB
55d4c2000000-55d4c2400000 rw-p 00000000 00:00 0                          [heap]
Rss:                4096 kB
Private_Clean:         0 kB
Private_Dirty:      3000 kB
7f0000000000-7f0004000000 rw-s 00000000 00:01 1234                       /dev/shm/seg (deleted)
Rss:               65536 kB
Private_Clean:        16 kB
Private_Dirty:     60000 kB
VmFlags: rd wr sh mr mw me ms sd
7ffd0a5d0000-7ffd0a5f1000 rw-p 00000000 00:00 0                          [stack]
Private_Dirty:        20 kB
"""


def test_own_memory_leaves_shared_mappings_out() -> None:
    """The segment's pages that only this worker touched are Private_* in smaps, but they are
    the cache, not the worker: only private mappings count as the worker's own."""
    assert own_private_kib(SMAPS) == 4 + 3000 + 20
    assert own_private_kib("") == 0


def test_tree_summary_sums_pss_once_and_lists_only_workers() -> None:
    procs = [
        ProcMem(1, 0, rss=100, pss=40, uss=30, own=25),  # supervisor
        ProcMem(2, 1, rss=80, pss=20, uss=5, own=4),  # spawner
        ProcMem(3, 2, rss=90, pss=35, uss=12, own=3),  # workers
        ProcMem(4, 2, rss=90, pss=33, uss=10, own=2),
    ]
    got = summarise_tree(procs)
    assert got == {
        "processes": 4,
        "rss_kib": 360,
        "pss_kib": 128,
        "uss_kib": 57,
        "worker_uss_kib": [12, 10],
        "worker_own_kib": [3, 2],
    }
    assert summarise_tree(procs[:1])["worker_uss_kib"] == []  # -t 1, memcached: no workers


@pytest.mark.parametrize(
    ("ratio", "target", "at_most", "want"),
    [
        (0.7, 0.7, False, "met"),
        (0.69, 0.7, False, "missed"),
        (1.5, 1.5, True, "met"),
        (1.51, 1.5, True, "missed"),
        (float("nan"), 0.7, False, "n/a"),
        (0.9, None, False, "n/a"),
    ],
)
def test_verdict(ratio: float, target: float | None, at_most: bool, want: str) -> None:
    assert verdict(ratio, target, at_most) == want


def _cell(ratio: list[float]) -> dict[str, list[float]]:
    return {
        "ours": [70.0],
        "memcached": [100.0],
        "ratio": ratio,
        "cpu_ours": [1.0],
        "cpu_memcached": [1.0],
        "errors": [0],
    }


def _data() -> dict[str, Any]:
    row = {"target_tool": "memcaslap"}
    return {
        "meta": {
            "when": "2000-01-01T00:00:00+00:00",
            "cpus": 2,
            "reps": 3,
            "duration": 7.0,
            "threads": 4,
            "memory": 64,
            "ours_cmd": "x",
            "procs": 1,
            "connections": 8,
            "keys": 1000,
        },
        "matrix": [
            {**row, "key": "a", "title": "get90", "target": 0.7, "memcaslap": _cell([0.8, 0.72])},
            {**row, "key": "b", "title": "get50", "target": 0.6, "memcaslap": _cell([0.5])},
            {**row, "key": "d", "title": "4 KB", "target": None, "memcaslap": _cell([0.1])},
            {
                "key": "e",
                "title": "pipelined gets",
                "target": 1.0,
                "target_tool": "load",
                "load": _cell([1.2]),
                "memcaslap": _cell([0.3]),  # not pipelined: must not decide the target
            },
        ],
        "latency_probe": {
            "ours": {"p50": [90.0], "p99": [200.0], "ops": [9000.0]},
            "memcached": {"p50": [50.0], "p99": [150.0], "ops": [12000.0]},
            "ratio": [1.8],
            "target": 1.5,
            "spinners": 1,
        },
        "threads": [
            {
                "threads": t,
                "tool": "memcaslap",
                "ours": [ours],
                "memcached": [100_000.0],
                "cpu_ours": [0.9],
                "cpu_memcached": [1.0],
                "ratio": [ours / 100_000.0],
            }
            for t, ours in ((1, 40_000.0), (2, 60_000.0), (4, 70_000.0))
        ],
        "memory": {"target_mb": 64, "value_size": 100, "memory_mb": 64, "runs": _mem_runs()},
        "notes": [],
    }


def _run(
    server: str, t: int, held: int | None, pss: int, rss: int, workers: list[int]
) -> dict[str, Any]:
    first = None
    if held is not None:
        first = {"sets": held + 4000, "curr_items": held, "evictions": 3, "seconds": 1.0}
    return {
        "server": server,
        "threads": t,
        "churn": {
            "sets": 640_000,
            "stored": 640_000,
            "errors": 0,
            "value_bytes": 64_000_000,
            "complete": True,
            "seconds": 8.0,
            "first_eviction": first,
        },
        "curr_items": 300_000,
        "evictions": 340_000,
        "after": {
            "processes": 1 if t == 1 else t + 2,
            "rss_kib": rss,
            "pss_kib": pss,
            "uss_kib": pss,
            "worker_uss_kib": workers,
            "worker_own_kib": [w // 4 for w in workers],
        },
    }


def _mem_runs() -> list[dict[str, Any]]:
    return [
        _run("ours", 1, 240_000, pss=102_400, rss=110_000, workers=[]),
        _run("ours", 4, 240_000, pss=133_120, rss=400_000, workers=[8192, 10240, 9216, 9216]),
        _run("memcached", 1, 300_000, pss=70_000, rss=72_704, workers=[]),
        _run("memcached", 4, None, pss=75_000, rss=76_000, workers=[]),
        {"server": "ours", "threads": 2, "error": "boom"},
    ]


def test_targets_use_the_named_tool_and_the_probe_is_an_upper_bound() -> None:
    rows = {
        name.split(")")[0]: (how, ratio, result)
        for name, how, ratio, result in target_rows(_data())
    }
    assert rows["(a"][1:] == (pytest.approx(0.76), "met")  # median of paired ratios
    assert rows["(b"][1:] == (0.5, "missed")
    assert "(d" not in rows  # no target for 4 KB values
    assert rows["(e"] == ("load", 1.2, "met")  # our pipelining generator, not memcaslap's 0.3
    probe = [r for r in target_rows(_data()) if r[0].startswith("one-connection p50")]
    assert probe[0][2:] == (1.8, "missed")


def test_scaling_is_relative_to_the_first_thread_count() -> None:
    got = scaling(_data()["threads"], "ours")
    assert got == pytest.approx([1.0, 1.5, 1.75])
    assert scaling(_data()["threads"], "memcached") == pytest.approx([1.0, 1.0, 1.0])
    zero = [{"ours": [0.0]}, {"ours": [5.0]}]
    assert all(math.isnan(x) for x in scaling(zero, "ours"))


def test_memory_helpers() -> None:
    runs = _mem_runs()
    ref = reference_run(runs)
    assert ref is not None and (ref["server"], ref["threads"]) == ("memcached", 1)
    assert items_held(runs[0]) == 240_000
    assert items_held(runs[3]) is None  # churn ended before any eviction
    assert cost_kib(runs[1]) == 133_120  # ours: PSS
    assert cost_kib(runs[2]) == 72_704  # memcached: RSS
    assert worker_median_mib(runs[1], "worker_uss_kib") == pytest.approx(9.0)  # 8, 10, 9, 9
    assert worker_median_mib(runs[1], "worker_own_kib") == pytest.approx(2.25)
    assert worker_median_mib(runs[0], "worker_uss_kib") is None
    assert pss_per_extra_worker_mib(runs[1], runs) == pytest.approx(10.0)  # 30 MiB over 3
    assert pss_per_extra_worker_mib(runs[0], runs) is None
    assert pss_per_extra_worker_mib(runs[3], runs) is None  # memcached's threads: no processes


def test_render_shows_each_target_with_its_verdict() -> None:
    text = render(_data())
    lines = text.splitlines()
    assert "| (a) get90 >= 0.7x | memcaslap | 0.760 | met |" in lines
    assert "| (b) get50 >= 0.6x | memcaslap | 0.500 | missed |" in lines
    assert "| (e) pipelined gets >= 1.0x | load | 1.200 | met |" in lines
    assert any(
        ln.startswith("| one-connection p50 <= 1.5x |") and "| 1.800 | missed |" in ln
        for ln in lines
    )
    # in the throughput table the verdict sits on the row of the tool that decides it
    (e_load,) = [ln for ln in lines if ln.startswith("| (e) pipelined gets | load |")]
    (e_caslap,) = [ln for ln in lines if ln.startswith("| (e) pipelined gets | memcaslap |")]
    assert ">= 1.0: met" in e_load and ">= 1.0" not in e_caslap
    assert "median paired p50 ratio ours/memcached: 1.800 (target <= 1.5: missed)" in text


def test_render_threads_and_memory_tables() -> None:
    text = render(_data())
    lines = text.splitlines()
    assert "| 4 | 70,000 | 0.90 | 100,000 | 1.00 | 0.700 | 1.75 | 1.00 |" in lines
    assert "our throughput relative to `-t 1`: `-t 1` 1.00, `-t 2` 1.50, `-t 4` 1.75." in text
    # items held, ratio vs memcached -t 1
    assert "| ours | 1 | 240,000 | 244,000 | 0.800 |" in lines
    assert "| memcached | 4 | no eviction | n/a | n/a |" in lines
    # after churn: our -t 4 tree's PSS against memcached -t 1's RSS
    (row,) = [ln for ln in lines if ln.startswith("| ours | 4 | 64 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:] == ["6", "130.0", "390.6", "9.0", "2.2", "10.0", "1.831"]
    (row,) = [ln for ln in lines if ln.startswith("| memcached | 4 | 64 |")]
    assert row.endswith("| 74.2 | n/a | n/a | n/a | 1.045 |")  # RSS against RSS
    assert any(ln.startswith("| ours | 2 | failed: boom |") for ln in lines)

"""Turn a merged run into the JSON result (schema ``load-result/1``) and a human table.

The schema is documented in ``load/README.md``; ``plot`` and ``bench`` read only these fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from memcache_server.load import __version__
from memcache_server.load.hist import Histogram
from memcache_server.load.runner import RunResult, RunSpec

SCHEMA = "load-result/1"
DISTRIBUTION_POINTS = (0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)


def latency_summary(h: Histogram) -> dict[str, Any]:
    """Percentiles in microseconds (floats, 3 decimals)."""

    def us(ns: float) -> float:
        return round(ns / 1000.0, 3)

    return {
        "count": h.total,
        "min": us(h.min_ns),
        "mean": us(h.mean()),
        "p50": us(h.percentile(50)),
        "p90": us(h.percentile(90)),
        "p99": us(h.percentile(99)),
        "p99_9": us(h.percentile(99.9)),
        "max": us(h.max_ns),
        "distribution": [
            [p, us(h.percentile(p) if p > 0 else h.min_ns)] for p in DISTRIBUTION_POINTS
        ],
    }


def build_result(spec: RunSpec, res: RunResult, extra: dict[str, Any]) -> dict[str, Any]:
    t = res.total
    elapsed = res.elapsed or 1e-9
    series = []
    for slot in sorted(res.slots):
        iv = res.slots[slot]
        length = res.slot_lengths.get(slot, 1.0)
        series.append(
            {
                "t": slot,
                "seconds": round(length, 4),
                "ops": iv.ops,
                "ops_per_s": round(iv.ops / length, 1) if length > 0 else 0.0,
                "hits": iv.hits,
                "misses": iv.misses,
                "errors": iv.error_total,
                "p50_us": round(iv.hist.percentile(50) / 1000, 3),
                "p99_us": round(iv.hist.percentile(99) / 1000, 3),
            }
        )
    config = {
        "servers": [f"{h}:{p}" for h, p in spec.servers],
        "hashing": "ketama-md5" if len(spec.servers) > 1 else "single",
        "workload": spec.workload.to_json(),
        "connections_per_server_per_proc": spec.connections,
        "procs": spec.procs,
        "duration_s": spec.duration,
        "requests": spec.requests,
        "timeout_s": spec.timeout,
        "key_prefix": spec.prefix.decode(),
        "seed": spec.seed,
        **extra,
    }
    hr = t.hit_ratio
    return {
        "schema": SCHEMA,
        "tool": f"load {__version__}",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "totals": {
            "ops": t.ops,
            "gets": t.gets,
            "get_keys": t.get_keys,
            "sets": t.sets,
            "hits": t.hits,
            "misses": t.misses,
            "hit_ratio": round(hr, 6) if hr is not None else None,
            "errors": dict(sorted(t.errors.items())),
            "errors_total": t.error_total,
            "worker_errors": res.worker_errors,
            "prefill": res.prefill,
        },
        "elapsed_s": round(elapsed, 4),
        "throughput_ops_s": round(t.ops / elapsed, 1),
        "keys_per_s": round((t.get_keys + t.sets) / elapsed, 1),
        "latency_us": latency_summary(t.hist),
        "histogram": t.hist.to_sparse(),
        "timeseries": series,
    }


def human_table(result: dict[str, Any]) -> str:
    """A short fixed-width summary for the terminal."""
    cfg = result["config"]
    wl = cfg["workload"]
    tot = result["totals"]
    lat = result["latency_us"]
    hr = tot["hit_ratio"]
    rows = [
        ("servers", ", ".join(cfg["servers"])),
        (
            "workload",
            f"{wl['name']}: get {wl['get_ratio']:.0%}, value {wl['value_size']} B, "
            f"keys {wl['keys']:,} {wl['key_dist']}, multiget {wl['multiget']}, "
            f"pipeline {wl['pipeline']}",
        ),
        (
            "clients",
            f"{cfg['procs']} procs x {cfg['connections_per_server_per_proc']} conns/server",
        ),
        ("elapsed", f"{result['elapsed_s']:.2f} s"),
        ("ops", f"{tot['ops']:,} (gets {tot['gets']:,}, sets {tot['sets']:,})"),
        (
            "throughput",
            f"{result['throughput_ops_s']:,.0f} ops/s ({result['keys_per_s']:,.0f} keys/s)",
        ),
        ("hit ratio", f"{hr:.2%}" if hr is not None else "n/a"),
        ("errors", f"{tot['errors_total']:,} {tot['errors'] or ''}".strip()),
        (
            "latency us",
            f"p50 {lat['p50']:,.1f}  p90 {lat['p90']:,.1f}  p99 {lat['p99']:,.1f}  "
            f"p99.9 {lat['p99_9']:,.1f}  max {lat['max']:,.1f}  mean {lat['mean']:,.1f}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

"""The Grafana dashboard only queries series a node (or config node) exports, and shows what
operators asked for. (The Prometheus integration test runs every one of its queries.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import ITEMS_1, SETTINGS, SLAB_1, STATS

from memcache_server.latency import merge, new_recorder
from memcache_server.metrics import StatsSnapshot, build_registry

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "memcache-server.json"
SERIES = re.compile(r"\b((?:memcached|process)_[a-z_]+)\b")


def exported_sample_names() -> set[str]:
    stats = {
        **STATS,
        "cluster_config_version": "3",
        "cluster_nodes": "2",
        "cluster_joins": "2",
        "cluster_leaves": "0",
        "cluster_removals": "0",
        "cluster_heartbeat_failures": "0",
    }
    snap = StatsSnapshot(stats, SETTINGS, {1: SLAB_1}, {1: ITEMS_1}, merge([new_recorder()]))
    text = generate_latest(build_registry(lambda: snap)).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_dashboard_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_sample_names()
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for q in queries for name in SERIES.findall(q)}
    assert used, "no queries found"
    assert used - exported == set()


def test_dashboard_has_the_panels_operators_asked_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    by_title = {
        p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]
    }
    assert 'status="hit"' in by_title["Hit ratio"]
    assert "sum by (command)" in by_title["Operations by command"]
    assert "memcached_items_evicted_total" in by_title["Evictions"]
    assert "sum by (slab)" in by_title["Memory by slab class"]
    assert "memcached_current_connections" in by_title["Connections"]
    latency = by_title["Request latency quantiles (sampled read batches)"]
    assert latency.count("histogram_quantile(") == 3
    assert "memcached_cluster_nodes" in by_title["Cluster membership"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))

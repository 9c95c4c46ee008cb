"""The config node serves /metrics too: memcached_up and the memcached_cluster_* series that
dashboards draw cluster membership from, equal to what its `stats` says."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from cluster_procs import HOST, request, start_config_node
from procs import free_port
from prometheus_client.parser import text_string_to_metric_families


def _scrape(port: int) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def _stats(port: int) -> dict[str, str]:
    reply = request(port, b"stats\r\n").decode()
    return {p[1]: p[2] for p in (line.split(" ") for line in reply.split("\r\n")) if len(p) == 3}


def test_config_node_metrics_follow_its_stats(tmp_path: Path) -> None:
    mport = free_port()
    cfg = start_config_node(tmp_path / "state", "--metrics-listen", f"{HOST}:{mport}")
    try:
        # a config request moves a counter that both `stats` and /metrics show
        request(cfg.port, b"config get cluster\r\n")
        request(cfg.port, b"config get cluster\r\n")
        st = _stats(cfg.port)
        m = _scrape(mport)
        assert m["memcached_up"] == 1
        assert m["memcached_cluster_config_requests_total"] == float(st["cluster_config_requests"])
        assert m["memcached_cluster_config_requests_total"] >= 2
        assert m["memcached_cluster_nodes"] == float(st["cluster_nodes"]) == 0
        assert m["memcached_cluster_config_version"] == float(st["cluster_version"])
    finally:
        assert cfg.stop() == 0

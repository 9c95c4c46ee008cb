"""A real Prometheus server scrapes a node: memcached_up is 1, memcached_commands_total rises with
traffic, the types arrive, and every query of the Grafana dashboard evaluates.

Needs the `prometheus` binary (Debian package `prometheus`), a reference tool (see reference.py
for what its absence does). Prometheus is
started on loopback with a generated config, a 1 s scrape interval and a throwaway data directory,
and stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from metrics_client import metrics_url
from procs import ROOT, ServerProc, free_port, start_node
from pymemcache.client.base import Client
from reference import need_tool

DEADLINE = 45.0


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServerProc]]:
    """A node with metrics, and a Prometheus scraping it every second. Yields (API base, node).
    Shared by the tests of this module: starting Prometheus is the slow part."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    node = start_node("--metrics-listen", "127.0.0.1:0", "-t", "1")
    target = metrics_url(node).removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: memcache\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    prometheus = need_tool("prometheus", "apt-get install prometheus")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield base, node
    finally:
        ServerProc(proc, "", 0).stop(timeout=15)  # by PID, escalating to SIGKILL
        node.stop()


def instant(base: str, query: str) -> list[dict[str, Any]]:
    reply = api(base, "query", query=query)
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def test_prometheus_scrapes_a_node(prometheus: tuple[str, ServerProc]) -> None:
    base, node = prometheus
    stop = threading.Event()

    def load() -> None:
        c = Client(node.address, connect_timeout=5, timeout=5)
        try:
            c.set("k", b"v")
            while not stop.wait(0.02):
                c.get("k")
                c.get("missing")
        finally:
            c.close()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        deadline = time.monotonic() + DEADLINE
        up: list[dict[str, Any]] = []
        while not up and time.monotonic() < deadline:
            up = instant(base, "memcached_up == 1")
            time.sleep(0.3)
        assert up and up[0]["metric"]["job"] == "memcache"
        hits = 'memcached_commands_total{command="get",status="hit"}'
        seen: list[float] = []
        while time.monotonic() < deadline:
            result = instant(base, hits)
            if result:
                v = float(result[0]["value"][1])
                if not seen or v != seen[-1]:
                    seen.append(v)
            if len(seen) >= 3:
                break
            time.sleep(0.3)
        assert len(seen) >= 3 and seen == sorted(seen), seen  # rising with every scrape
        # Prometheus negotiated OpenMetrics with us: the types arrive as declared
        meta = api(base, "metadata")["data"]
        assert meta["memcached_commands"][0]["type"] == "counter"
        assert meta["memcached_current_items"][0]["type"] == "gauge"
        assert meta["memcached_request_duration_seconds"][0]["type"] == "histogram"
        assert instant(base, "memcached_uptime_seconds")  # the untyped exporter name, as is
        rate = instant(base, f"rate({hits}[5s])")
        assert rate and float(rate[0]["value"][1]) > 0
    finally:
        stop.set()
        loader.join(10)


def test_every_dashboard_query_evaluates(prometheus: tuple[str, ServerProc]) -> None:
    base, _ = prometheus
    deadline = time.monotonic() + DEADLINE
    while not instant(base, "memcached_up") and time.monotonic() < deadline:
        time.sleep(0.3)
    dashboard = json.loads((ROOT / "dashboards" / "memcache-server.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    for expr in exprs:
        query = (
            expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")
        )
        instant(base, query)  # a syntax or type error is a failed query
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = var["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
            assert instant(base, match.replace("$job", ".*")), var["name"]

"""A running node's /metrics over HTTP: it moves with real traffic, equals `stats`, negotiates
OpenMetrics, stays on loopback unless told otherwise, and names things as memcached_exporter does
(checked against real memcached's stats pushed through the same collector)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from metrics_client import Samples, get, metrics_url, samples, scrape, stats, value
from procs import ROOT, ServerProc, exchange, free_port, have_memcached, start_memcached, start_node
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from pymemcache.client.base import Client

from memcache_server.latency import SAMPLE_EVERY
from memcache_server.metrics import GENERAL, MemcachedCollector, StatsSnapshot, pairs_from_reply


@pytest.fixture
def mnode() -> Iterator[ServerProc]:
    """A node serving metrics on a port it picks (loopback: no host given), one worker thread."""
    srv = start_node("--metrics-listen", ":0", "-t", "1")
    yield srv
    srv.stop()


def traffic(c: Client) -> None:
    """A known mix: 20 sets, 20 get hits, 5 misses, 3+2 deletes, incr/decr, gets, cas, touch."""
    for i in range(20):
        c.set(f"k{i}", b"v" * (i * 10 + 1))
    for i in range(20):
        assert c.get(f"k{i}") is not None
    for i in range(5):
        assert c.get(f"missing{i}") is None
    for i in range(3):
        assert c.delete(f"k{i}", noreply=False)
    for _ in range(2):
        assert not c.delete("nope", noreply=False)
    c.set("n", b"10")
    assert c.incr("n", 5) == 15
    assert c.decr("n", 1) == 14
    assert c.incr("nope", 1) is None
    _, cas = c.gets("n")
    assert c.cas("n", b"1", cas)
    assert not c.cas("n", b"2", cas)  # bad value
    assert c.touch("n", 100, noreply=False)


def test_counters_equal_stats_and_move_with_traffic(mnode: ServerProc) -> None:
    url = metrics_url(mnode)
    c = Client(mnode.address, connect_timeout=5, timeout=5)
    try:
        before = scrape(url)
        traffic(c)
        after = scrape(url)
        # on the same connection, so connection counts do not move
        s = {k.decode(): v.decode() if isinstance(v, bytes) else v for k, v in c.stats().items()}
    finally:
        c.close()
    # every plain stats field the exporter maps equals `stats` (clock-driven ones may tick)
    for field, name, _, _ in GENERAL:
        if field in ("uptime", "time", "bytes_read") or field not in s:
            continue
        assert value(after, name) == float(s[field]), field
    # `stats` itself was read after the scrape: 7 more bytes ("stats\r\n")
    assert value(after, "memcached_read_bytes_total") == float(s["bytes_read"]) - 7
    for op, hits, misses in (("get", 20 + 1, 5), ("delete", 3, 2), ("incr", 1, 1), ("decr", 1, 0)):
        got = value(after, "memcached_commands_total", command=op, status="hit")
        assert got - value(before, "memcached_commands_total", command=op, status="hit") == hits
        got = value(after, "memcached_commands_total", command=op, status="miss")
        assert got - value(before, "memcached_commands_total", command=op, status="miss") == misses
        assert value(after, "memcached_commands_total", command=op, status="hit") == float(
            s[f"{op}_hits"]
        )
    assert value(after, "memcached_commands_total", command="cas", status="hit") == 1
    assert value(after, "memcached_commands_total", command="cas", status="badval") == 1
    assert value(after, "memcached_commands_total", command="touch", status="hit") == 1
    # 21 sets; the two cas commands counted in cmd_set are subtracted as the exporter does
    assert value(after, "memcached_commands_total", command="set", status="hit") == 21
    assert float(s["cmd_set"]) == 23
    assert value(after, "memcached_current_items") == 18
    assert value(after, "memcached_items_total") == float(s["total_items"])
    assert value(after, "memcached_current_connections") == 1
    assert value(after, "memcached_up") == 1
    assert value(after, "memcached_version", version=s["version"]) == 1
    # slab classes: items spread over several, per-class numbers add up to the totals
    per_class = [v for (n, _), v in after.items() if n == "memcached_slab_current_items"]
    assert len(per_class) > 1 and sum(per_class) == 18
    slab_sets = sum(
        v
        for (n, labels), v in after.items()
        if n == "memcached_slab_commands_total" and ("command", "set") in labels
    )
    assert slab_sets == 21


def test_latency_histogram_samples_batches_by_family(mnode: ServerProc) -> None:
    url = metrics_url(mnode)
    name = "memcached_request_duration_seconds"
    with mnode.connect() as sock:
        assert exchange(sock, b"set hot 0 0 1\r\nx\r\n") == b"STORED\r\n"
        sock.settimeout(10)
        before = scrape(url)
        rounds = 8 * SAMPLE_EVERY
        for _ in range(rounds):  # one request per read batch, all on the node's only worker
            sock.sendall(b"get hot\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                buf += sock.recv(4096)
    after = scrape(url)
    got = value(after, name + "_count", family="get") - value(before, name + "_count", family="get")
    # one worker wake-up in SAMPLE_EVERY times its first read batch; here every wake-up brings
    # one batch (an idle timeout on a stalled machine may shift the phase by one)
    assert abs(got - rounds // SAMPLE_EVERY) <= 1
    assert value(after, name + "_bucket", family="get", le="+Inf") == value(
        after, name + "_count", family="get"
    )
    assert 0 < value(after, name + "_sum", family="get") < 10
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in after.items()
        if n == name + "_bucket" and ("family", "get") in labels
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    families = {dict(labels)["family"] for (n, labels), _ in after.items() if n == name + "_count"}
    assert families == {"get", "gat", "set", "delete", "incr_decr", "touch", "other"}


def test_openmetrics_when_asked_text_otherwise(mnode: ServerProc) -> None:
    url = metrics_url(mnode)
    om = get(url, accept="application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.status == 200
    assert om.content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om.body.endswith("# EOF\n")
    om_names = {f.name for f in parse_openmetrics(om.body)}
    text = get(url)
    assert text.content_type.startswith("text/plain; version=0.0.4")
    text_names = {f.name for f in text_string_to_metric_families(text.body)}
    assert om_names == text_names
    assert {"memcached_commands", "memcached_up", "memcached_request_duration_seconds"} <= om_names


def test_paths_and_methods(mnode: ServerProc) -> None:
    url = metrics_url(mnode)
    root = get(url.removesuffix("metrics"))
    assert root.status == 200 and 'href="/metrics"' in root.body
    assert get(url.removesuffix("metrics") + "nope").status == 404
    assert get(url, method="POST").status == 405


def test_loopback_unless_told_otherwise(mnode: ServerProc) -> None:
    address = stats(mnode, "settings")["metrics_listen"]
    assert address.startswith("127.0.0.1:") and int(address.rsplit(":", 1)[1]) > 0


def test_no_endpoint_and_no_setting_by_default(node: ServerProc) -> None:
    assert "metrics_listen" not in stats(node, "settings")


def test_bad_or_busy_address_refuses_to_start() -> None:
    cli = [sys.executable, str(ROOT / "cli.py"), "-p", "0"]
    bad = subprocess.run(
        [*cli, "--metrics-listen", "127.0.0.1:http"], capture_output=True, timeout=30
    )
    assert bad.returncode == 2 and b"--metrics-listen" in bad.stderr
    v6 = subprocess.run([*cli, "--metrics-listen", "::1:9150"], capture_output=True, timeout=30)
    assert v6.returncode == 2 and b"[::1]:9150" in v6.stderr
    srv = start_node("--metrics-listen", ":0")
    try:
        busy = stats(srv, "settings")["metrics_listen"]
        taken = subprocess.run([*cli, "--metrics-listen", busy], capture_output=True, timeout=30)
        assert taken.returncode == 71
        assert taken.stderr.decode().strip() == (
            f"failed to listen for metrics on {busy}: Address already in use"
        )
    finally:
        srv.stop()


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
def test_promtool_accepts_our_exposition(mnode: ServerProc) -> None:
    c = Client(mnode.address, connect_timeout=5, timeout=5)
    try:
        traffic(c)
    finally:
        c.close()
    body = get(metrics_url(mnode)).body
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""  # not even a lint warning


def _raw_snapshot(srv: ServerProc) -> StatsSnapshot:
    replies = {}
    with srv.connect() as sock:
        for sub in ("", "settings", "slabs", "items"):
            replies[sub] = pairs_from_reply(
                exchange(sock, f"stats {sub}".strip().encode() + b"\r\n", 0.2)
            )
    return StatsSnapshot.from_pairs(
        replies[""], replies["settings"], replies["slabs"], replies["items"]
    )


def _shape(data: Samples) -> dict[str, set[tuple[str, ...]]]:
    """memcached_* sample name -> the label names it carries (our own additions left out)."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for (name, labels), _ in data.items():
        if name.startswith("memcached_") and not name.startswith("memcached_request_duration"):
            out.setdefault(name, set()).add(tuple(k for k, _ in labels))
    return out


@pytest.mark.skipif(not have_memcached(), reason="memcached is not installed")
def test_same_series_as_real_memcached_through_the_same_collector(mnode: ServerProc) -> None:
    """What the exporter's logic makes of memcached 1.6.18's stats is what our node serves."""
    real = start_memcached()
    try:
        for srv in (real, mnode):
            c = Client(srv.address, connect_timeout=5, timeout=5)
            try:
                traffic(c)
            finally:
                c.close()
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        snap = _raw_snapshot(real)
        registry.register(MemcachedCollector(lambda: snap))
        theirs = samples(generate_latest(registry).decode())
    finally:
        real.stop()
    ours = scrape(metrics_url(mnode))
    assert _shape(ours) == _shape(theirs)
    commands = {labels for (n, labels), _ in ours.items() if n == "memcached_commands_total"}
    assert commands == {
        labels for (n, labels), _ in theirs.items() if n == "memcached_commands_total"
    }
    for key in commands:  # same traffic, same command counts
        assert ours[("memcached_commands_total", key)] == theirs[("memcached_commands_total", key)]


def test_the_endpoint_binds_exactly_what_it_is_given() -> None:
    port = free_port()
    srv = start_node("--metrics-listen", f"127.0.0.1:{port}")
    try:
        assert stats(srv, "settings")["metrics_listen"] == f"127.0.0.1:{port}"
        assert get(f"http://127.0.0.1:{port}/metrics").status == 200
    finally:
        srv.stop()


def test_build_info_tells_our_node_apart(mnode: ServerProc) -> None:
    import platform

    import memcache_server

    data = scrape(metrics_url(mnode))
    labels = {
        "version": memcache_server.__version__,
        "memcached_version": stats(mnode)["version"],
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    assert value(data, "memcache_server_build_info", **labels) == 1.0

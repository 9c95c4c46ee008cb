"""A running node's /metrics over HTTP: it moves with real traffic, equals `stats`, negotiates
OpenMetrics, stays on loopback unless told otherwise, and names things as memcached_exporter does
(checked against the metric definitions of a named memcached_exporter release, extracted from its
source into tests/data/memcached_exporter.json)."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest
from metrics_client import get, metrics_url, scrape, stats, value
from procs import ROOT, ServerProc, exchange, free_port, start_node
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from pymemcache.client.base import Client
from reference import need_tool

from memcache_server.latency import SAMPLE_EVERY
from memcache_server.metrics import GENERAL


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
    # every plain stats field the exporter maps equals `stats` (clock-driven ones may tick, and
    # so may the LRU maintainer's, which it moves in the background between two reads)
    background = ("lru_maintainer_juggles", "moves_to_cold", "moves_to_warm", "moves_within_lru")
    for field, name, _, _ in GENERAL:
        if field in ("uptime", "time", "bytes_read", *background) or field not in s:
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
    assert bad.returncode == 1 and b"--metrics-listen" in bad.stderr  # memcached: 1
    v6 = subprocess.run([*cli, "--metrics-listen", "::1:9150"], capture_output=True, timeout=30)
    assert v6.returncode == 1 and b"[::1]:9150" in v6.stderr
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


def test_promtool_accepts_our_exposition(mnode: ServerProc) -> None:
    promtool = need_tool("promtool", "apt-get install prometheus")
    c = Client(mnode.address, connect_timeout=5, timeout=5)
    try:
        traffic(c)
    finally:
        c.close()
    body = get(metrics_url(mnode)).body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""  # not even a lint warning


# memcached_exporter's own definitions, extracted from its source at a named release by
# tests/extract_exporter_metrics.py: the reference, independent of our collector
EXPORTER = json.loads((ROOT / "tests" / "data" / "memcached_exporter.json").read_text())
# What a node serves beyond the exporter's set (docs/metrics.md): the latency histogram.
OUR_ADDITIONS = {"memcached_request_duration_seconds"}


def _exposed(body: str) -> dict[str, tuple[str, set[str]]]:
    """memcached_* metric name as exposed (counters with their _total) -> (type, label names)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for fam in text_string_to_metric_families(body):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        if name.startswith("memcached_"):
            labels = {k for sample in fam.samples for k in sample.labels if k != "le"}
            out[name] = (fam.type, labels)
    return out


def _fields(srv: ServerProc) -> dict[str, dict[str, str]]:
    """The stats fields the exporter reads, per map its client puts them in: per-class fields
    (``3:chunk_size``, ``items:3:age``) by their name alone, and the lines of ``stats slabs``
    without a class (``total_malloced``) with the general stats, as its client does."""
    slabs, items = stats(srv, "slabs"), stats(srv, "items")
    return {
        "stats": stats(srv) | {k: v for k, v in slabs.items() if ":" not in k},
        "settings": stats(srv, "settings"),
        "slabs": {k.split(":", 1)[1]: v for k, v in slabs.items() if ":" in k},
        "items": {k.rsplit(":", 1)[1]: v for k, v in items.items()},
    }


def _emitted(sources: list[dict[str, Any]], fields: dict[str, dict[str, str]]) -> bool:
    """Whether the exporter would emit a metric from these fields: one of its source fields is
    reported, and the field gating it (if any) is present (with the value it asks for)."""
    if not sources:
        return True  # memcached_up, memcached_version
    for src in sources:
        gate = src["when"]
        if gate and (
            gate[1] not in fields[gate[0]] or gate[2:] not in ([], [fields[gate[0]][gate[1]]])
        ):
            continue
        if fnmatch.filter(fields[src["map"]], src["field"]):
            return True
    return False


def test_metrics_match_the_exporter_release_named_in_the_fixture(mnode: ServerProc) -> None:
    """After real traffic, every memcached_* metric we serve has the name, type and labels the
    exporter's source gives it, and every exporter metric whose stats field we report is there."""
    assert EXPORTER["source"].endswith(f"/blob/{EXPORTER['release']}/pkg/exporter/exporter.go")
    reference: dict[str, dict[str, object]] = EXPORTER["metrics"]
    c = Client(mnode.address, connect_timeout=5, timeout=5)
    try:
        traffic(c)
    finally:
        c.close()
    ours = _exposed(get(metrics_url(mnode)).body)
    assert set(ours) - set(reference) == OUR_ADDITIONS
    for name, (kind, labels) in ours.items():
        if name in OUR_ADDITIONS:
            continue
        ref = reference[name]
        types = set(cast(list[str], ref["types"]))
        if not name.endswith("_total") and "counter" in types:
            # prometheus-client forces _total on counters, so a counter the exporter names
            # without it is served untyped under its exact name (docs/metrics.md)
            types.add("unknown")
        assert kind in types, (name, kind, types)
        assert labels == set(cast(list[str], ref["labels"])), (name, labels, ref["labels"])
    fields = _fields(mnode)
    for name, ref in reference.items():
        sources = cast(list[dict[str, Any]], ref["from"])
        assert (name in ours) == _emitted(sources, fields), (name, sources)


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

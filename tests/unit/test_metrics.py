"""The metrics collector against fixed snapshots: memcached_exporter's names, types, labels and
derivations, our own histogram and cluster figures, and both exposition formats."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from memcache_server.latency import FAMILIES, merge, new_recorder, observe
from memcache_server.metrics import (
    MemcachedCollector,
    StatsSnapshot,
    build_registry,
    pairs_from_reply,
)

# A `stats` reply as memcached 1.6.18 prints it (the fields the exporter reads, plus noise).
STATS = {
    "pid": "42",
    "uptime": "3600",
    "time": "1700000000",
    "version": "1.6.18",
    "libevent": "2.1.12-stable",
    "rusage_user": "12.500000",
    "rusage_system": "3.000250",
    "max_connections": "1024",
    "curr_connections": "7",
    "total_connections": "120",
    "rejected_connections": "2",
    "cmd_get": "1000",
    "cmd_set": "400",
    "cmd_flush": "3",
    "cmd_touch": "9",
    "get_hits": "700",
    "get_misses": "300",
    "get_expired": "5",
    "get_flushed": "1",
    "delete_misses": "11",
    "delete_hits": "22",
    "incr_misses": "1",
    "incr_hits": "2",
    "decr_misses": "3",
    "decr_hits": "4",
    "cas_misses": "10",
    "cas_hits": "20",
    "cas_badval": "30",
    "touch_hits": "6",
    "touch_misses": "3",
    "store_too_large": "8",
    "store_no_memory": "9",
    "bytes_read": "123456",
    "bytes_written": "654321",
    "limit_maxbytes": "67108864",
    "accepting_conns": "1",
    "listen_disabled_num": "0",
    "threads": "4",
    "conn_yields": "13",
    "lru_crawler_starts": "17",
    "bytes": "4096",
    "curr_items": "40",
    "total_items": "400",
    "evictions": "14",
    "reclaimed": "15",
    "crawler_reclaimed": "16",
    "crawler_items_checked": "18",
    "moves_to_cold": "19",
    "moves_to_warm": "21",
    "moves_within_lru": "23",
    "direct_reclaims": "24",
    "total_malloced": "2097152",
}
SETTINGS = {
    "maxconns": "1024",
    "lru_crawler": "yes",
    "lru_crawler_sleep": "100",
    "lru_crawler_tocrawl": "0",
    "lru_maintainer_thread": "yes",
    "hot_lru_pct": "20",
    "warm_lru_pct": "40",
    "hot_max_factor": "0.20",
    "warm_max_factor": "2.00",
}
SLAB_1 = {
    "chunk_size": "96",
    "chunks_per_page": "10922",
    "total_pages": "1",
    "total_chunks": "10922",
    "used_chunks": "40",
    "free_chunks": "10882",
    "free_chunks_end": "0",
    "get_hits": "700",
    "cmd_set": "400",
    "delete_hits": "22",
    "incr_hits": "2",
    "decr_hits": "4",
    "cas_hits": "20",
    "cas_badval": "30",
    "touch_hits": "6",
}
ITEMS_1 = {
    "number": "40",
    "number_hot": "1",
    "number_warm": "2",
    "number_cold": "37",
    "age_hot": "5",
    "age_warm": "6",
    "age": "99",
    "mem_requested": "3000",
    "evicted": "14",
    "evicted_nonzero": "1",
    "evicted_time": "77",
    "outofmemory": "0",
    "tailrepairs": "0",
    "reclaimed": "15",
    "expired_unfetched": "3",
    "evicted_unfetched": "4",
    "evicted_active": "0",
    "crawler_reclaimed": "16",
    "crawler_items_checked": "18",
    "lrutail_reflocked": "0",
    "moves_to_cold": "19",
    "moves_to_warm": "21",
    "moves_within_lru": "23",
    "direct_reclaims": "24",
    "hits_to_hot": "100",
    "hits_to_warm": "200",
    "hits_to_cold": "400",
    "hits_to_temp": "0",
}

# memcached_exporter (pkg/exporter/exporter.go) names for everything a node computes, with the
# exporter's type. Counters without `_total` are exposed untyped (see metrics.py).
# ("unknown" is how the parser reads the text format's "untyped".)
EXPORTER_NAMES = {
    "memcached_up": "gauge",
    "memcached_uptime_seconds": "unknown",
    "memcached_time_seconds": "gauge",
    "memcached_version": "gauge",
    "memcached_process_user_cpu_seconds_total": "counter",
    "memcached_process_system_cpu_seconds_total": "counter",
    "memcached_read_bytes_total": "counter",
    "memcached_written_bytes_total": "counter",
    "memcached_current_connections": "gauge",
    "memcached_max_connections": "gauge",
    "memcached_connections_total": "counter",
    "memcached_connections_rejected_total": "counter",
    "memcached_connections_yielded_total": "counter",
    "memcached_connections_listener_disabled_total": "counter",
    "memcached_current_bytes": "gauge",
    "memcached_limit_bytes": "gauge",
    "memcached_commands_total": "counter",
    "memcached_current_items": "gauge",
    "memcached_items_total": "counter",
    "memcached_items_evicted_total": "counter",
    "memcached_items_reclaimed_total": "counter",
    "memcached_item_too_large_total": "counter",
    "memcached_item_no_memory_total": "counter",
    "memcached_direct_reclaims_total": "counter",
    "memcached_lru_crawler_enabled": "gauge",
    "memcached_lru_crawler_sleep": "gauge",
    "memcached_lru_crawler_to_crawl": "gauge",
    "memcached_lru_crawler_maintainer_thread": "gauge",
    "memcached_lru_crawler_hot_percent": "gauge",
    "memcached_lru_crawler_warm_percent": "gauge",
    "memcached_lru_crawler_hot_max_factor": "gauge",
    "memcached_lru_crawler_warm_max_factor": "gauge",
    "memcached_lru_crawler_starts_total": "counter",
    "memcached_lru_crawler_reclaimed_total": "counter",
    "memcached_lru_crawler_items_checked_total": "counter",
    "memcached_lru_crawler_moves_to_cold_total": "counter",
    "memcached_lru_crawler_moves_to_warm_total": "counter",
    "memcached_lru_crawler_moves_within_lru_total": "counter",
    "memcached_malloced_bytes": "gauge",
    "memcached_accepting_connections": "gauge",
    "memcached_slab_current_items": "gauge",
    "memcached_slab_items_age_seconds": "gauge",
    "memcached_slab_items_crawler_reclaimed_total": "counter",
    "memcached_slab_items_evicted_total": "counter",
    "memcached_slab_items_evicted_nonzero_total": "counter",
    "memcached_slab_items_evicted_time_seconds": "unknown",
    "memcached_slab_items_evicted_unfetched_total": "counter",
    "memcached_slab_items_expired_unfetched_total": "counter",
    "memcached_slab_items_outofmemory_total": "counter",
    "memcached_slab_items_reclaimed_total": "counter",
    "memcached_slab_items_tailrepairs_total": "counter",
    "memcached_slab_items_moves_to_cold": "unknown",
    "memcached_slab_items_moves_to_warm": "unknown",
    "memcached_slab_items_moves_within_lru": "unknown",
    "memcached_slab_hot_items": "gauge",
    "memcached_slab_warm_items": "gauge",
    "memcached_slab_cold_items": "gauge",
    "memcached_slab_hot_age_seconds": "gauge",
    "memcached_slab_warm_age_seconds": "gauge",
    "memcached_slab_lru_hits_total": "counter",
    "memcached_slab_mem_requested_bytes": "unknown",
    "memcached_slab_chunk_size_bytes": "gauge",
    "memcached_slab_chunks_per_page": "gauge",
    "memcached_slab_current_pages": "gauge",
    "memcached_slab_current_chunks": "gauge",
    "memcached_slab_chunks_used": "gauge",
    "memcached_slab_chunks_free": "gauge",
    "memcached_slab_chunks_free_end": "gauge",
    "memcached_slab_commands_total": "counter",
}


def snapshot(**changes: object) -> StatsSnapshot:
    fields: dict[str, object] = {
        "stats": STATS,
        "settings": SETTINGS,
        "slabs": {1: SLAB_1},
        "items": {1: ITEMS_1},
    }
    fields.update(changes)
    return StatsSnapshot(**fields)  # type: ignore[arg-type]


def registry_for(snap: StatsSnapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MemcachedCollector(lambda: snap))
    return registry


def text_families(
    registry: CollectorRegistry,
) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """name -> (type, samples) as prometheus-client's own parser reads our text exposition."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = (fam.type, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_up_version_and_process_figures() -> None:
    r = registry_for(snapshot())
    assert value(r, "memcached_up") == 1
    assert value(r, "memcached_version", version="1.6.18") == 1
    assert value(r, "memcached_uptime_seconds") == 3600
    assert value(r, "memcached_time_seconds") == 1700000000
    assert value(r, "memcached_process_user_cpu_seconds_total") == 12.5
    assert value(r, "memcached_process_system_cpu_seconds_total") == pytest.approx(3.00025)
    assert value(r, "memcached_read_bytes_total") == 123456
    assert value(r, "memcached_written_bytes_total") == 654321


def test_connections_memory_and_items() -> None:
    r = registry_for(snapshot())
    assert value(r, "memcached_current_connections") == 7
    assert value(r, "memcached_connections_total") == 120
    assert value(r, "memcached_connections_rejected_total") == 2
    assert value(r, "memcached_connections_yielded_total") == 13
    assert value(r, "memcached_max_connections") == 1024  # from stats settings, not stats
    assert value(r, "memcached_current_bytes") == 4096
    assert value(r, "memcached_limit_bytes") == 67108864
    assert value(r, "memcached_malloced_bytes") == 2097152
    assert value(r, "memcached_current_items") == 40
    assert value(r, "memcached_items_total") == 400
    assert value(r, "memcached_items_evicted_total") == 14
    assert value(r, "memcached_items_reclaimed_total") == 15
    assert value(r, "memcached_item_too_large_total") == 8
    assert value(r, "memcached_item_no_memory_total") == 9


def test_commands_have_exactly_the_exporters_combinations() -> None:
    r = registry_for(snapshot())
    fams = text_families(r)
    combos = {(s[1]["command"], s[1]["status"]) for s in fams["memcached_commands_total"][1]}
    expected = {
        (op, st)
        for op in ("get", "delete", "incr", "decr", "cas", "touch")
        for st in ("hit", "miss")
    }
    expected |= {("cas", "badval"), ("flush", "hit"), ("set", "hit")}
    assert combos == expected
    assert value(r, "memcached_commands_total", command="get", status="hit") == 700
    assert value(r, "memcached_commands_total", command="get", status="miss") == 300
    assert value(r, "memcached_commands_total", command="delete", status="miss") == 11
    assert value(r, "memcached_commands_total", command="cas", status="badval") == 30
    assert value(r, "memcached_commands_total", command="flush", status="hit") == 3
    # memcached counts cas commands again in cmd_set: the exporter subtracts them
    assert value(r, "memcached_commands_total", command="set", status="hit") == 400 - (10 + 20 + 30)


def test_lru_crawler_figures_only_when_the_crawler_is_on() -> None:
    r = registry_for(snapshot())
    assert value(r, "memcached_lru_crawler_enabled") == 1
    assert value(r, "memcached_lru_crawler_sleep") == 100
    assert value(r, "memcached_lru_crawler_maintainer_thread") == 1
    assert value(r, "memcached_lru_crawler_hot_max_factor") == 0.2
    assert value(r, "memcached_lru_crawler_starts_total") == 17
    assert value(r, "memcached_lru_crawler_items_checked_total") == 18
    off = registry_for(snapshot(settings={**SETTINGS, "lru_crawler": "no"}))
    assert value(off, "memcached_lru_crawler_enabled") is None
    assert value(off, "memcached_lru_crawler_sleep") is None
    assert value(off, "memcached_max_connections") == 1024
    assert value(off, "memcached_lru_crawler_starts_total") == 17  # a stats counter, always


def test_slab_family() -> None:
    r = registry_for(snapshot())
    assert value(r, "memcached_slab_current_items", slab="1") == 40
    assert value(r, "memcached_slab_items_age_seconds", slab="1") == 99
    assert value(r, "memcached_slab_items_evicted_total", slab="1") == 14
    assert value(r, "memcached_slab_items_evicted_time_seconds", slab="1") == 77
    assert value(r, "memcached_slab_mem_requested_bytes", slab="1") == 3000
    assert value(r, "memcached_slab_items_moves_to_cold", slab="1") == 19
    assert value(r, "memcached_slab_cold_items", slab="1") == 37
    assert value(r, "memcached_slab_lru_hits_total", slab="1", lru="cold") == 400
    assert value(r, "memcached_slab_lru_hits_total", slab="1", lru="temporary") == 0
    assert value(r, "memcached_slab_chunk_size_bytes", slab="1") == 96
    assert value(r, "memcached_slab_current_chunks", slab="1") == 10922
    assert value(r, "memcached_slab_chunks_used", slab="1") == 40
    labels = {"slab": "1", "command": "set", "status": "hit"}
    assert value(r, "memcached_slab_commands_total", **labels) == 400 - (20 + 30)
    assert value(r, "memcached_slab_commands_total", slab="1", command="cas", status="badval") == 30
    # stats slabs has no misses: the per-slab family has hits (and cas badval) only
    assert value(r, "memcached_slab_commands_total", slab="1", command="get", status="miss") is None
    assert value(r, "memcached_slab_temporary_items", slab="1") is None  # number_temp absent


def test_every_exporter_name_with_its_type_and_nothing_unexpected() -> None:
    fams = text_families(registry_for(snapshot()))
    assert {n: t for n, (t, _) in fams.items()} == EXPORTER_NAMES


def test_untyped_counters_keep_the_exporters_exact_names_in_both_formats() -> None:
    r = registry_for(snapshot())
    text = generate_latest(r).decode()
    assert "# TYPE memcached_uptime_seconds untyped\nmemcached_uptime_seconds 3600.0\n" in text
    assert "memcached_uptime_seconds_total" not in text
    om = generate_openmetrics(r).decode()
    assert "# TYPE memcached_uptime_seconds unknown\nmemcached_uptime_seconds 3600.0\n" in om
    assert "memcached_commands_total{command=" in om


def test_both_expositions_parse_with_prometheus_clients_parsers() -> None:
    rec = new_recorder()
    observe(rec, 0, 5000)
    r = registry_for(snapshot(latency=merge([rec])))
    text_names = {f.name for f in text_string_to_metric_families(generate_latest(r).decode())}
    om_names = {f.name for f in parse_openmetrics(generate_openmetrics(r).decode())}
    assert "memcached_commands" in text_names and "memcached_commands" in om_names
    assert "memcached_request_duration_seconds" in om_names
    assert text_names == om_names


def test_missing_fields_export_nothing_and_the_server_stays_up() -> None:
    # a config node: no item commands, no slabs, its own discovery counters
    snap = StatsSnapshot(
        stats={"pid": "1", "uptime": "5", "version": "1.6.18", "curr_connections": "1"}
    )
    r = registry_for(snap)
    assert value(r, "memcached_up") == 1
    assert value(r, "memcached_uptime_seconds") == 5
    assert value(r, "memcached_current_connections") == 1
    names = set(text_families(r))
    assert names == {
        "memcached_up",
        "memcached_version",
        "memcached_uptime_seconds",
        "memcached_current_connections",
    }


def test_an_unparsable_value_turns_up_to_zero_as_in_the_exporter() -> None:
    r = registry_for(snapshot(stats={**STATS, "bytes": "lots", "rusage_user": "1.2.3"}))
    assert value(r, "memcached_up") == 0
    assert value(r, "memcached_current_bytes") is None
    assert value(r, "memcached_process_user_cpu_seconds_total") is None
    assert value(r, "memcached_current_items") == 40  # the rest is still exported


def test_a_failing_provider_is_a_scrape_that_says_down() -> None:
    def broken() -> StatsSnapshot:
        raise RuntimeError("store gone")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MemcachedCollector(broken))
    assert value(registry, "memcached_up") == 0
    assert [f.name for f in registry.collect()] == ["memcached_up"]


def test_cluster_figures_come_from_whatever_discovery_fields_exist() -> None:
    stats = {
        **STATS,
        "cluster_config_version": "12",
        "cluster_nodes": "3",
        "cluster_joins": "4",
        "cluster_leaves": "1",
        "cluster_heartbeat_failures": "2",
        "cluster_config_requests": "50",
        "cluster_drain_seconds": "5",  # not in the table: exported untyped under its own name
        "cluster_state": "serving",  # text: nothing to export
    }
    r = registry_for(snapshot(stats=stats))
    assert value(r, "memcached_cluster_config_version") == 12
    assert value(r, "memcached_cluster_nodes") == 3
    assert value(r, "memcached_cluster_joins_total") == 4
    assert value(r, "memcached_cluster_leaves_total") == 1
    assert value(r, "memcached_cluster_heartbeat_failures_total") == 2
    assert value(r, "memcached_cluster_config_requests_total") == 50
    assert value(r, "memcached_cluster_drain_seconds") == 5
    assert value(r, "memcached_cluster_removals_total") is None  # absent field: no metric
    assert value(r, "memcached_up") == 1
    assert not any(
        f.name.startswith("memcached_cluster") for f in registry_for(snapshot()).collect()
    )


def test_cluster_field_aliases() -> None:
    r = registry_for(snapshot(stats={"cluster_version": "7", "config_requests": "3"}))
    assert value(r, "memcached_cluster_config_version") == 7
    assert value(r, "memcached_cluster_config_requests_total") == 3


def test_latency_histogram_merges_workers() -> None:
    a, b = new_recorder(), new_recorder()
    get = FAMILIES.index("get")
    stride = len(a) // len(FAMILIES)
    observe(a, get * stride, 1024)  # exactly the first bound: in the first bucket
    observe(a, get * stride, 1025)
    observe(b, get * stride, 3_000_000_000)  # past the last bound: +Inf only
    observe(b, FAMILIES.index("set") * stride, 10_000)
    r = registry_for(snapshot(latency=merge([a, b])))
    name = "memcached_request_duration_seconds"
    assert value(r, name + "_bucket", family="get", le="1.024e-06") == 1
    assert value(r, name + "_bucket", family="get", le="2.048e-06") == 2
    assert value(r, name + "_bucket", family="get", le="1.073741824") == 2
    assert value(r, name + "_bucket", family="get", le="+Inf") == 3
    assert value(r, name + "_count", family="get") == 3
    assert value(r, name + "_sum", family="get") == pytest.approx(3.000002049)
    assert value(r, name + "_count", family="set") == 1
    assert value(r, name + "_count", family="delete") == 0  # every family exists from the start


def test_snapshot_from_pairs_splits_like_the_exporters_client() -> None:
    snap = StatsSnapshot.from_pairs(
        [("uptime", 5), ("version", "1.6.18"), ("accepting_conns", 1)],
        [("lru_crawler", True), ("hot_max_factor", 0.2), ("maxconns", 1024)],
        [("1:chunk_size", 96), ("1:cmd_set", 3), ("active_slabs", 1), ("total_malloced", 1048576)],
        [("items:1:number", 2), ("items:1:age", 0)],
    )
    assert snap.stats["total_malloced"] == "1048576"  # stats slabs lines without a class
    assert snap.settings["lru_crawler"] == "yes"  # formatted exactly as `stats settings` prints
    assert snap.settings["hot_max_factor"] == "0.20"
    assert snap.slabs == {1: {"chunk_size": "96", "cmd_set": "3"}}
    assert snap.items == {1: {"number": "2", "age": "0"}}


def test_pairs_from_reply() -> None:
    reply = b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT 1:chunk_size 96\r\nEND\r\n"
    assert pairs_from_reply(reply) == [("pid", "1"), ("version", "1.6.18"), ("1:chunk_size", "96")]


def test_build_registry_adds_process_figures() -> None:
    r = build_registry(lambda: snapshot())
    assert value(r, "memcached_up") == 1
    assert (value(r, "process_resident_memory_bytes") or 0) > 0

"""The small etcd client against a real etcd: leases, puts, transactions, a watch resumed from a
revision and one asked for compacted history, failover across endpoints, and the heartbeat
cost measurement (load/etcd_heartbeat.py) run briefly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from certs import Certs
from etcd_procs import Etcd
from procs import free_port

from memcache_server.discovery.etcd_client import (
    Compacted,
    EtcdClient,
    EtcdError,
    Op,
    WatchIdle,
    parse_endpoints,
    prefix_end,
)
from memcache_server.load.etcd_heartbeat import latency, through_config_node, throughput


def test_prefix_end_and_endpoints() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"
    assert parse_endpoints("http://e1:2379, e2:2380") == [("e1", 2379), ("e2", 2380)]
    assert parse_endpoints("http://[::1]:2379") == [("::1", 2379)]
    assert parse_endpoints("https://e1:2379,https://e2") == [("e1", 2379), ("e2", 2379)]
    for bad in ("", "ftp://e1:2379", "https://e1,http://e2", "http://e1:2379/v3", "http://e1:x"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


@pytest.fixture
def etcd(tmp_path: Path) -> Etcd:
    e = Etcd(tmp_path / "etcd")
    yield e  # type: ignore[misc]
    e.stop()


def client_of(etcd: Etcd) -> EtcdClient:
    return EtcdClient(parse_endpoints(etcd.url), timeout=2.0)


def test_lease_put_range_and_expiry(etcd: Etcd) -> None:
    c = client_of(etcd)
    lease = c.grant(1)  # etcd raises it to its minimum TTL
    rev = c.put(b"/t/a", b"1", lease)
    c.put(b"/t/b", b"2")
    c.put(b"/u/c", b"3")
    at, kvs = c.range_prefix(b"/t/")
    assert at >= rev
    assert [(kv.key, kv.value, kv.lease == lease) for kv in kvs] == [
        (b"/t/a", b"1", True),
        (b"/t/b", b"2", False),
    ]
    assert c.keepalive(lease) >= 1
    deadline = time.monotonic() + 10
    while [kv.key for kv in c.range_prefix(b"/t/")[1]] != [b"/t/b"]:
        assert time.monotonic() < deadline, "the leased key never expired"
        time.sleep(0.1)
    assert c.keepalive(lease) == 0  # gone: a heartbeat must register again
    c.close()


def test_txn_compares_mod_revision(etcd: Etcd) -> None:
    c = client_of(etcd)
    ok, rev, _ = c.txn([c.mod_revision_is(b"/doc", 0)], [Op.put(b"/doc", b"v1")])
    assert ok
    ok2, _, _ = c.txn([c.mod_revision_is(b"/doc", 0)], [Op.put(b"/doc", b"lost")])
    assert not ok2  # someone wrote it already: compare-and-swap refuses
    ok3, _, responses = c.txn(
        [c.mod_revision_is(b"/doc", rev)], [Op.delete(b"/doc"), Op.put(b"/doc2", b"x")]
    )
    assert ok3 and responses[0]["response_delete_range"]["deleted"] == "1"
    c.close()


def test_watch_resumes_from_a_revision_and_reports_compaction(etcd: Etcd) -> None:
    c = client_of(etcd)
    first = c.put(b"/w/a", b"1")
    c.put(b"/w/b", b"2")
    c.post("kv/deleterange", {"key": "L3cvYQ=="})  # /w/a
    events = []
    with pytest.raises(WatchIdle):
        for batch in c.watch(b"/w/", first, idle=1.0):
            events += [(e.deleted, e.kv.key) for e in batch]
    assert events == [(False, b"/w/a"), (False, b"/w/b"), (True, b"/w/a")]
    last = c.put(b"/w/c", b"3")
    c.post("kv/compaction", {"revision": str(last)})
    with pytest.raises(Compacted):
        for _ in c.watch(b"/w/", first, idle=2.0):
            pass
    c.close()


def test_watch_sees_a_write_made_while_it_streams(etcd: Etcd) -> None:
    c = client_of(etcd)
    start = c.put(b"/s/x", b"0") + 1
    seen: list[bytes] = []

    def write_later() -> None:
        time.sleep(0.3)
        w = client_of(etcd)
        w.put(b"/s/y", b"1")
        w.close()

    t = threading.Thread(target=write_later)
    t.start()
    with pytest.raises(WatchIdle):
        for batch in c.watch(b"/s/", start, idle=1.5):
            seen += [e.kv.key for e in batch]
    t.join()
    assert seen == [b"/s/y"]


def test_fails_over_to_the_next_endpoint(etcd: Etcd) -> None:
    dead = ("127.0.0.1", free_port())
    c = EtcdClient([dead, *parse_endpoints(etcd.url)], timeout=1.0)
    assert c.put(b"/f", b"1") > 0
    assert c.endpoints[c._current] != dead  # it stays with the one that answered
    c.close()
    nobody = EtcdClient([dead], timeout=1.0)
    with pytest.raises(EtcdError, match="unreachable"):
        nobody.grant(5)


def test_tls_needs_the_client_certificate(tmp_path: Path, certs: Certs) -> None:
    etcd = Etcd(tmp_path / "etcd", certs)
    try:
        ok = EtcdClient(parse_endpoints(etcd.url), tls=etcd.client_tls())
        assert ok.put(b"/tls", b"1") > 0
        ok.close()
        bare = EtcdClient(parse_endpoints(etcd.url), tls=certs.client_context())
        with pytest.raises(EtcdError):
            bare.put(b"/tls", b"2")
        plain = EtcdClient(parse_endpoints(etcd.url.replace("https", "http")))
        with pytest.raises(EtcdError):
            plain.put(b"/tls", b"3")
    finally:
        etcd.stop()


def test_heartbeat_cost_measurement_runs(etcd: Etcd) -> None:
    lat = latency(etcd.url, 20)
    assert set(lat) == {"keepalive", "keepalive+put"}
    assert all(len(v) == 20 and min(v) > 0 for v in lat.values())
    assert etcd.proc is not None
    tp = throughput(etcd.url, 2, 0.5, etcd.proc.proc.pid)
    assert tp["keepalive"][0] > 0 and tp["keepalive+put"][0] > 0
    assert tp["keepalive"][1] > 0  # etcd spent CPU on them
    rate, beats = through_config_node(etcd.url, 2, 0.5, 5)
    assert rate > 0 and len(beats) == rate * 0.5
    c = client_of(etcd)
    _, kvs = c.range_prefix(b"/memcache-server/bench-cluster/members/")
    assert len(kvs) == 5  # the five joined nodes, each on its lease
    c.close()

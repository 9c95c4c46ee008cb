"""The client helper: fetching, accepting documents, polling, swapping, failure handling.

Documents come from a loopback endpoint serving exact canonical bytes (``client_endpoint``);
cache traffic goes to real node processes; a "dead" node is a port nothing listens on.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from client_endpoint import Endpoint, encode
from procs import ROOT, ServerProc, free_port, start_node, wait_listening
from pymemcache.exceptions import MemcacheServerError

from memcache_server.discovery.client import (
    CONNECTION_ERRORS,
    ClusterClient,
    ClusterUnavailable,
    fetch_document,
)
from memcache_server.discovery.document import DocumentError
from memcache_server.discovery.ring import HashRing, Node

GOLDEN = encode(
    12, [("node-a.cache.local", "127.0.0.1", 11311), ("node-b.cache.local", "127.0.0.1", 11312)]
)


def triple(name: str, srv: ServerProc | Endpoint | int) -> tuple[str, str, int]:
    port = srv if isinstance(srv, int) else srv.port
    return (f"{name}.cache.local", "127.0.0.1", port)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[list[ServerProc]]:
    """Two real nodes shared by the module's tests (each test uses its own keys)."""
    nodes = [start_node(), start_node()]
    yield nodes
    for srv in nodes:
        srv.stop()


def start_node_on(port: int) -> ServerProc:
    """Our node on a given port (to bring a "dead" address back to life), once it is this
    node that answers there (``stats`` names its pid), not whatever listened there before."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    srv = ServerProc(proc, "127.0.0.1", port)
    wait_listening("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while b"STAT pid %d\r\n" % proc.pid not in _stats_reply(srv):
        if proc.poll() is not None or time.monotonic() > deadline:
            srv.stop()
            raise RuntimeError(f"node on port {port} did not start")
        time.sleep(0.02)
    return srv


def _stats_reply(srv: ServerProc) -> bytes:
    try:
        with srv.connect() as s:
            s.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return b""


def keys_owned_by(client: ClusterClient, node: Node, count: int, prefix: str = "k") -> list[str]:
    found = [f"{prefix}{i}" for i in range(count * 20) if client.owner(f"{prefix}{i}") == node]
    assert len(found) >= count
    return found[:count]


# ------------------------------------------------------------------ fetching


def test_fetch_canonical_split_and_legacy(endpoint: Endpoint) -> None:
    endpoint.document = GOLDEN
    assert fetch_document(endpoint.address) == GOLDEN
    endpoint.mode = "split"  # one byte per send
    assert fetch_document(endpoint.address) == GOLDEN
    endpoint.mode = "legacy"  # ERROR to config get -> the legacy key
    assert fetch_document(endpoint.address) == GOLDEN
    assert endpoint.requests[-2:] == [b"config get cluster", b"get AmazonElastiCache:cluster"]
    endpoint.mode = "end"
    assert fetch_document(endpoint.address) is None


def test_fetch_is_bounded_by_its_timeout(endpoint: Endpoint) -> None:
    endpoint.mode = "silent"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fetch_document(endpoint.address, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fetch_rejects_bad_framing(endpoint: Endpoint) -> None:
    endpoint.mode = "raw"
    endpoint.raw = b"CONFIG cluster 0 5\r\n12\nnode-a|1.2.3.4|1\n\r\nEND\r\n"  # wrong count
    with pytest.raises(DocumentError):
        fetch_document(endpoint.address)
    with pytest.raises(OSError):
        fetch_document(("127.0.0.1", free_port()))


def test_fetch_from_a_node_without_a_document(pair: list[ServerProc]) -> None:
    # a cache node that has no document answers END (or ERROR, then a miss on the legacy key)
    assert fetch_document(pair[0].address) is None


# ------------------------------------------------------------------ accepting documents


def test_only_newer_documents_are_accepted(endpoint: Endpoint) -> None:
    endpoint.set(5, [triple("a", 11311), triple("b", 11312)])
    with ClusterClient(endpoint.spec, background=False) as client:
        assert client.version == 5
        ring = client.ring
        assert client.offer(endpoint.document or b"") == "unchanged"
        # same nodes, other whitespace: the same document
        assert (
            client.offer(b"5\r\nb.cache.local|127.0.0.1|11312\ta.cache.local|127.0.0.1|11311")
            == "unchanged"
        )
        assert client.offer(encode(4, [triple("a", 11311)])) == "stale"
        assert client.offer(b"6\n\n") == "invalid"  # empty
        assert client.offer(b"garbage") == "invalid"
        assert (
            client.offer(encode(6, [triple("a", 1), ("a.cache.local", "127.0.0.2", 1)]))
            == "invalid"
        )
        assert client.ring is ring and client.version == 5
        # equal version, different text: an in-place replacement (libmemcached PR #29)
        assert (
            client.offer(encode(5, [triple("a", 11311), ("b.cache.local", "127.0.0.9", 11312)]))
            == "updated"
        )
        assert client.ring is not ring
        assert client.offer(encode(7, [triple("c", 11313)])) == "updated"
        assert client.version == 7 and [n.hostname for n in client.members] == ["c.cache.local"]
        stats = client.stats()
        assert (stats.updates, stats.unchanged, stats.stale, stats.invalid) == (3, 2, 1, 3)


def test_first_fetch_is_bounded_and_never_raises(endpoint: Endpoint) -> None:
    endpoint.mode = "silent"
    started = time.monotonic()
    client = ClusterClient(endpoint.spec, initial_timeout=0.5, fetch_timeout=0.2, background=False)
    assert time.monotonic() - started < 2
    assert client.version is None and client.members == ()
    with pytest.raises(ClusterUnavailable):
        client.get("k")
    client.ignore_exc = True
    assert client.get("k") is None and client.set("k", b"v") is False
    assert client.get_many(["a", "b"]) == {} and client.set_many({"a": b"1"}) == ["a"]
    client.close()


def test_seeds_serve_when_the_endpoint_does_not(pair: list[ServerProc]) -> None:
    seeds = [f"127.0.0.1:{srv.port}" for srv in pair]
    dead = f"127.0.0.1:{free_port()}"
    with ClusterClient(dead, seeds=seeds, initial_timeout=0.3, background=False) as client:
        assert client.version is None
        assert {n.port for n in client.live_nodes} == {srv.port for srv in pair}
        assert client.set("seeded", b"1") and client.get("seeded") == b"1"
    with ClusterClient(seeds=seeds, background=False) as static:
        assert static.get("seeded") == b"1"


# ------------------------------------------------------------------ polling


def test_polls_alternate_between_endpoint_and_known_nodes() -> None:
    endpoint, node_a, node_b = Endpoint(), Endpoint(), Endpoint()
    try:
        doc = encode(3, [triple("a", node_a), triple("b", node_b)])
        for ep in (endpoint, node_a, node_b):
            ep.document = doc
        client = ClusterClient(endpoint.spec, background=False)
        assert endpoint.count() == 1  # the first fetch
        for _ in range(6):
            assert client.poll() == "unchanged"
        assert endpoint.count() == 1 + 3
        assert node_a.count() + node_b.count() == 3
        assert node_a.count() >= 1 and node_b.count() >= 1  # round-robin over the nodes
        # the endpoint goes away: every poll still gets the document, from a node
        endpoint.close()
        for _ in range(4):
            assert client.poll() == "unchanged"
        assert node_a.count() + node_b.count() == 3 + 4
        assert client.stats().fetch_errors == 2
        client.close()
    finally:
        node_a.close()
        node_b.close()


def test_background_poll_picks_up_a_new_version(endpoint: Endpoint) -> None:
    endpoint.set(1, [triple("a", 11311)])
    with ClusterClient(endpoint.spec, poll_interval=0.2) as client:
        endpoint.set(2, [triple("a", 11311), triple("b", 11312)])
        deadline = time.monotonic() + 5
        while client.version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.version == 2 and len(client.live_nodes) == 2


def test_startup_keeps_retrying_until_a_document_arrives(endpoint: Endpoint) -> None:
    endpoint.mode = "end"
    with ClusterClient(endpoint.spec, initial_timeout=0.2, poll_interval=60) as client:
        assert client.version is None
        endpoint.set(1, [triple("a", 11311)])
        endpoint.mode = "config"
        deadline = time.monotonic() + 5
        while client.version is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.version == 1  # well before the 60 s poll interval


def test_poll_jitter_stays_within_twenty_percent(endpoint: Endpoint) -> None:
    endpoint.set(1, [triple("a", 11311)])
    with ClusterClient(endpoint.spec, background=False, rng=random.Random(3)) as client:
        delays = [client._next_poll_delay() for _ in range(2000)]
    assert 48 <= min(delays) < 50 and 70 < max(delays) <= 72


def test_ring_swaps_are_atomic(endpoint: Endpoint) -> None:
    """Readers racing with updates only ever see one whole document's ring."""
    docs = [[triple(f"n{j}", 11300 + j) for j in range(i % 5 + 1)] for i in range(40)]
    endpoint.set(1, docs[0])
    valid = {frozenset(Node(*t) for t in d) for d in docs}
    seen: list[frozenset[Node]] = []
    stop = threading.Event()
    client = ClusterClient(endpoint.spec, background=False)

    def reader() -> None:
        while not stop.is_set():
            ring = client.ring
            owner = ring.owner("some-key")
            assert owner in ring.nodes
            seen.append(frozenset(ring.nodes))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for version, nodes in enumerate(docs[1:], start=2):
        assert client.offer(encode(version, nodes)) == "updated"
    stop.set()
    for t in threads:
        t.join(5)
    client.close()
    assert seen and set(seen) <= valid


# ------------------------------------------------------------------ failure handling


def test_connection_errors_eject_after_the_limit(
    endpoint: Endpoint, pair: list[ServerProc]
) -> None:
    dead = free_port()
    endpoint.set(1, [triple("a", pair[0]), triple("b", pair[1]), triple("dead", dead)])
    with ClusterClient(endpoint.spec, background=False, failure_limit=2, dead_timeout=60) as client:
        dead_node = Node(*triple("dead", dead))
        key, *others = keys_owned_by(client, dead_node, 5, prefix="ej")
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                client.get(key)
        assert dead_node not in client.live_nodes and dead_node in client.members
        assert client.stats().ejections == 1
        # its keys now go to the ring successor, without an error
        successor = HashRing(n for n in client.members if n != dead_node).owner(key)
        assert client.owner(key) == successor
        assert client.set(key, b"moved") and client.get(key) == b"moved"
        for other in others:
            assert client.owner(other) != dead_node


def test_misses_and_protocol_errors_never_eject(endpoint: Endpoint, pair: list[ServerProc]) -> None:
    grumpy = Endpoint(mode="raw")  # a "node" that answers every request with a server error
    grumpy.raw = b"SERVER_ERROR busy\r\n"
    try:
        endpoint.set(1, [triple("a", pair[0]), triple("grumpy", grumpy)])
        with ClusterClient(endpoint.spec, background=False, failure_limit=2) as client:
            grumpy_node = Node(*triple("grumpy", grumpy))
            key = keys_owned_by(client, grumpy_node, 1, prefix="pe")[0]
            for _ in range(5):
                with pytest.raises(MemcacheServerError):
                    client.get(key)
            missing = keys_owned_by(client, Node(*triple("a", pair[0])), 20, prefix="miss")
            assert all(client.get(k) is None for k in missing)
            assert len(client.live_nodes) == 2 and client.stats().ejections == 0
    finally:
        grumpy.close()


def test_only_consecutive_errors_count(endpoint: Endpoint) -> None:
    port = free_port()
    endpoint.set(1, [triple("flaky", port)])
    with ClusterClient(endpoint.spec, background=False, failure_limit=2) as client:
        for _ in range(3):
            # refused, or closed under the pooled connection the last round left behind
            with pytest.raises(CONNECTION_ERRORS):
                client.get("k")  # one error ...
            srv = start_node_on(port)
            try:
                assert client.get("k") is None  # ... then a success resets the count
            finally:
                srv.stop(9)
        assert client.stats().ejections == 0 and len(client.live_nodes) == 1


def test_ejected_node_is_probed_before_it_returns(
    endpoint: Endpoint, pair: list[ServerProc]
) -> None:
    port = free_port()
    endpoint.set(1, [triple("a", pair[0]), triple("back", port)])
    with ClusterClient(
        endpoint.spec, poll_interval=60, failure_limit=1, dead_timeout=0.3
    ) as client:
        back = Node(*triple("back", port))
        key = keys_owned_by(client, back, 1, prefix="pr")[0]
        with pytest.raises(ConnectionRefusedError):
            client.get(key)
        assert back not in client.live_nodes
        time.sleep(0.8)  # probes after the dead timeout fail: it stays out
        assert back not in client.live_nodes
        srv = start_node_on(port)
        try:
            deadline = time.monotonic() + 5
            while back not in client.live_nodes and time.monotonic() < deadline:
                time.sleep(0.05)
            assert back in client.live_nodes
            assert client.stats().readmissions == 1
            assert client.set(key, b"v") and client.get(key) == b"v"
        finally:
            srv.stop()


def test_a_discovery_update_always_wins(endpoint: Endpoint, pair: list[ServerProc]) -> None:
    dead = free_port()
    endpoint.set(1, [triple("a", pair[0]), triple("dead", dead)])
    with ClusterClient(endpoint.spec, background=False, failure_limit=1) as client:
        dead_node = Node(*triple("dead", dead))
        key = keys_owned_by(client, dead_node, 1, prefix="dw")[0]
        with pytest.raises(ConnectionRefusedError):
            client.get(key)
        assert dead_node not in client.live_nodes
        # the cluster says the node is a member: believe it (it is tried again)
        endpoint.set(2, [triple("a", pair[0]), triple("dead", dead), triple("b", pair[1])])
        assert client.poll() == "updated"
        assert dead_node in client.live_nodes
        # and a document that drops a node drops it, ejected or not
        endpoint.set(3, [triple("a", pair[0])])
        assert client.poll() == "updated"
        assert client.members == (Node(*triple("a", pair[0])),)


def test_ignore_exc_reads_a_dead_node_as_a_miss(endpoint: Endpoint, pair: list[ServerProc]) -> None:
    dead = free_port()
    endpoint.set(1, [triple("a", pair[0]), triple("dead", dead)])
    with ClusterClient(endpoint.spec, background=False, ignore_exc=True) as client:
        dead_node = Node(*triple("dead", dead))
        key = keys_owned_by(client, dead_node, 1, prefix="ie")[0]
        assert client.get(key) is None
        assert client.set(key, b"v") is False
        assert client.get(key) is None  # now ejected: served by the successor
        assert client.set(key, b"v") is True and client.get(key) == b"v"


def test_cache_calls_across_nodes(endpoint: Endpoint, pair: list[ServerProc]) -> None:
    endpoint.set(1, [triple("a", pair[0]), triple("b", pair[1])])
    with ClusterClient(endpoint.spec, background=False) as client:
        values = {f"multi:{i}": str(i).encode() for i in range(50)}
        assert client.set_many(values, expire=60) == []
        assert client.get_many(list(values) + ["multi:absent"]) == values
        assert {client.owner(k) for k in values} == set(client.members)
        assert client.add("multi:0", b"x") is False and client.add("multi:new", b"x") is True
        assert client.replace("multi:1", b"r") and client.get("multi:1") == b"r"
        value, cas = client.gets("multi:2")
        assert value == b"2" and client.cas("multi:2", b"c", cas) is True
        assert client.cas("multi:2", b"d", cas) is False
        assert client.set("counter", b"10") and client.incr("counter", 5) == 15
        assert client.decr("counter", 20) == 0 and client.incr("nope") is None
        assert client.touch("counter", 60) and not client.touch("nope")
        assert client.delete("counter") and not client.delete("counter")
        client.delete_many(list(values))
        assert client.get_many(list(values)) == {}
        assert client.get("ünïcode:key") is None and client.set("ünïcode:key", "välue".encode())
        assert client.get("ünïcode:key") == "välue".encode()

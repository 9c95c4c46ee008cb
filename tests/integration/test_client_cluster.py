"""The client helper against a cluster of real node processes.

The cluster document is served from a loopback endpoint in the test (exact canonical bytes),
so discovery changes are under the test's control; every cache call goes to real nodes. Nodes
are stopped by PID, a "crash" is SIGKILL.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from client_endpoint import Endpoint
from procs import ServerProc, start_node
from pymemcache.client.base import Client

from memcache_server.discovery.client import ClusterClient
from memcache_server.discovery.ring import HashRing, Node

POLL = 0.4  # seconds; the default is 60


def triple(index: int, srv: ServerProc) -> tuple[str, str, int]:
    return (f"node-{index}.cache.local", "127.0.0.1", srv.port)


def wait_for(predicate: object, timeout: float) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


def items_on(srv: ServerProc) -> int:
    client = Client(srv.address, connect_timeout=2, timeout=2)
    try:
        return int(client.stats()[b"curr_items"])
    finally:
        client.close()


@pytest.fixture
def cluster() -> Iterator[tuple[Endpoint, list[ServerProc]]]:
    """Four real nodes; the endpoint lists the first three."""
    nodes = [start_node() for _ in range(4)]
    endpoint = Endpoint()
    endpoint.set(1, [triple(i, srv) for i, srv in enumerate(nodes[:3])])
    yield endpoint, nodes
    endpoint.close()
    for srv in nodes:
        srv.stop()


def test_keys_spread_and_a_new_node_takes_a_quarter(
    cluster: tuple[Endpoint, list[ServerProc]],
) -> None:
    endpoint, nodes = cluster
    keys = {f"user:{i}": f"profile-{i}".encode() for i in range(3000)}
    # no hand-over window: this test is about placement (test_client_handover covers it)
    with ClusterClient(endpoint.spec, poll_interval=POLL, handover_window=0) as client:
        assert client.set_many(keys, expire=300) == []
        # spread: every node holds about a third, exactly the keys the ring gives it
        owners = Counter(client.owner(k).port for k in keys)
        for srv in nodes[:3]:
            assert items_on(srv) == owners[srv.port]
            assert 0.25 < owners[srv.port] / len(keys) < 0.42
        before = {k: client.owner(k) for k in keys}

        endpoint.set(2, [triple(i, srv) for i, srv in enumerate(nodes)])
        took = wait_for(lambda: client.version == 2, timeout=POLL * 1.2 + 3)
        assert len(client.live_nodes) == 4

        new = Node(*triple(3, nodes[3]))
        moved = [k for k in keys if client.owner(k) != before[k]]
        assert all(client.owner(k) == new for k in moved)  # only keys landing on it move
        fraction = len(moved) / len(keys)
        assert 0.15 < fraction < 0.35
        assert fraction == pytest.approx(client.ring.shares()[new], abs=0.03)
        # the moved keys miss (the new node is empty), every other key still hits
        found = client.get_many(list(keys))
        assert set(found) == set(keys) - set(moved)
        assert all(found[k] == keys[k] for k in found)
        print(f"picked up in {took:.2f} s; {fraction:.1%} of {len(keys)} keys moved")


def test_a_killed_node_fails_over_to_its_successors(
    cluster: tuple[Endpoint, list[ServerProc]],
) -> None:
    endpoint, nodes = cluster
    endpoint.set(2, [triple(i, srv) for i, srv in enumerate(nodes)])
    keys = {f"item:{i}": str(i).encode() for i in range(2000)}
    with ClusterClient(endpoint.spec, poll_interval=60, ignore_exc=True) as client:
        assert client.set_many(keys) == []
        victim = nodes[1]
        dead = Node(*triple(1, victim))
        lost = [k for k in keys if client.owner(k) == dead]
        kept = [k for k in keys if k not in set(lost)]
        victim.stop(signal.SIGKILL)

        # reads of the dead node's keys are misses, never errors; the rest all hit
        assert all(client.get(k) is None for k in lost[:5])
        assert dead not in client.live_nodes and client.stats().ejections == 1
        found = client.get_many(list(keys))
        assert set(found) == set(kept)
        # the lost keys now belong to their ring successors, and can be cached again there
        successors = HashRing(n for n in client.members if n != dead)
        assert all(client.owner(k) == successors.owner(k) for k in lost)
        assert client.set_many({k: keys[k] for k in lost}) == []
        assert client.get_many(list(keys)) == keys

        # the cluster drops the node: the document wins, nothing else moves
        endpoint.set(3, [triple(i, srv) for i, srv in enumerate(nodes) if srv is not victim])
        client.poll()
        assert dead not in client.members
        assert client.get_many(list(keys)) == keys


def test_losing_the_endpoint_changes_nothing(cluster: tuple[Endpoint, list[ServerProc]]) -> None:
    endpoint, nodes = cluster
    keys = {f"s:{i}": b"v" for i in range(500)}
    with ClusterClient(endpoint.spec, poll_interval=POLL) as client:
        client.set_many(keys)
        ring = client.ring
        endpoint.close()
        wait_for(lambda: client.stats().fetch_errors >= 2, timeout=POLL * 1.2 * 4 + 3)
        assert client.ring is ring and client.version == 1
        assert client.get_many(list(keys)) == keys


def test_strategies_degrade_to_the_store_during_an_outage(
    cluster: tuple[Endpoint, list[ServerProc]],
) -> None:
    endpoint, nodes = cluster
    store = {f"product:{i}": f"v1-{i}".encode() for i in range(600)}
    loads: Counter[str] = Counter()

    def loader(key: str) -> bytes:
        loads[key] += 1
        return store[key]

    # ignore_exc=False: plain calls would raise, the strategies must not
    with ClusterClient(endpoint.spec, poll_interval=60, dead_timeout=60) as client:
        for key in store:
            assert client.get_or_load(key, lambda k=key: loader(k), ttl=300) == store[key]
        assert sum(loads.values()) == len(store)
        loads.clear()

        victim = nodes[2]
        dead = Node(*triple(2, victim))
        on_dead = {k for k in store if client.owner(k) == dead}
        victim.stop(signal.SIGKILL)
        for key in store:  # every read answers, the dead node's keys from the store
            assert client.get_or_load(key, lambda k=key: loader(k), ttl=300) == store[key]
        assert set(loads) == on_dead and all(n == 1 for n in loads.values())
        assert dead not in client.live_nodes

        def write(key: str, value: bytes) -> None:
            store[key] = value

        for key in list(store):  # write-through during the outage: the store always wins
            client.write_through(key, f"v2-{key}".encode(), lambda v, k=key: write(k, v), 300)
        loads.clear()
        for key in store:
            assert client.get_or_load(key, lambda k=key: loader(k), ttl=300) == f"v2-{key}".encode()
        assert not loads  # everything was written through to a live node

"""The client's hand-over window: two clients switch to a new node list at different moments,
against real nodes; no read returns a value older than the latest acknowledged write.

The endpoint in the test serves the documents; ``background=False`` clients switch exactly when
the test calls ``poll()``, so "one client switched, the other not" is under the test's control.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from client_endpoint import Endpoint
from procs import ServerProc, start_node
from pymemcache.client.base import Client

from memcache_server.discovery.client import ClusterClient

WINDOW = 1.5


def triple(index: int, srv: ServerProc) -> tuple[str, str, int]:
    return (f"node-{index}.cache.local", "127.0.0.1", srv.port)


@pytest.fixture
def nodes() -> Iterator[list[ServerProc]]:
    procs = [start_node() for _ in range(4)]
    yield procs
    for p in procs:
        p.stop()


def raw(srv: ServerProc) -> Client:
    return Client(srv.address, connect_timeout=2, timeout=2)


def test_a_switched_client_reads_old_owners_first_and_invalidates_them(
    nodes: list[ServerProc],
) -> None:
    endpoint = Endpoint()
    endpoint.set(1, [triple(i, n) for i, n in enumerate(nodes[:3])])
    early = ClusterClient(endpoint.spec, background=False, handover_window=WINDOW)
    late = ClusterClient(endpoint.spec, background=False, handover_window=WINDOW)
    try:
        keys = {f"k{i}": b"v1-%d" % i for i in range(400)}
        assert early.set_many(keys) == []
        old_owner = {k: early.owner(k) for k in keys}
        endpoint.set(2, [triple(i, n) for i, n in enumerate(nodes)])
        assert early.poll() == "updated"  # the early client switches, the late one does not
        moved = [k for k in keys if early.owner(k) != old_owner[k]]
        assert moved and all(early.owner(k).port == nodes[3].port for k in moved)

        # the new node is cold: a switched client still hits, on the old owner
        assert early.get_many(keys) == keys
        assert early.get(moved[0]) == keys[moved[0]]

        # a write by the switched client lands on the new owner and is invalidated on the old
        # one, so the client still on the old ring misses rather than reading the old value
        assert early.set(moved[0], b"v2")
        assert raw(nodes[3]).get(moved[0]) == b"v2"
        assert late.get(moved[0]) is None
        assert early.get(moved[0]) == b"v2"

        # a write by the late client lands on the old owner; the new owner holds an older copy
        # (as a warm-up leaves it): the switched client reads the newer one
        assert raw(nodes[3]).set(moved[1], b"old-copy", noreply=False)
        assert late.set(moved[1], b"v3")
        assert early.get(moved[1]) == b"v3"

        # after the window, reads go to the new owner only
        time.sleep(WINDOW + 0.1)
        assert early.get(moved[1]) == b"old-copy"
        assert early.get(moved[2]) is None  # the cold node: a plain miss
    finally:
        early.close()
        late.close()
        endpoint.close()


def test_no_window_reads_the_new_owner_only(nodes: list[ServerProc]) -> None:
    endpoint = Endpoint()
    endpoint.set(1, [triple(i, n) for i, n in enumerate(nodes[:3])])
    client = ClusterClient(endpoint.spec, background=False, handover_window=0)
    try:
        keys = {f"k{i}": b"v%d" % i for i in range(400)}
        assert client.set_many(keys) == []
        endpoint.set(2, [triple(i, n) for i, n in enumerate(nodes)])
        assert client.poll() == "updated"
        moved = [k for k in keys if client.owner(k).port == nodes[3].port]
        found = client.get_many(keys)
        assert set(keys) - set(found) == set(moved)
    finally:
        client.close()
        endpoint.close()


def test_a_departed_old_owner_is_skipped_after_one_failure(nodes: list[ServerProc]) -> None:
    endpoint = Endpoint()
    endpoint.set(1, [triple(i, n) for i, n in enumerate(nodes)])
    client = ClusterClient(endpoint.spec, background=False, handover_window=30.0)
    try:
        keys = {f"k{i}": b"v%d" % i for i in range(400)}
        assert client.set_many(keys) == []
        gone = nodes[3]
        moved = [k for k in keys if client.owner(k).port == gone.port]
        endpoint.set(2, [triple(i, n) for i, n in enumerate(nodes[:3])])
        assert client.poll() == "updated"
        assert client.get_many(moved) == {k: keys[k] for k in moved}  # still on the old owner
        gone.stop()
        # the old owner is gone: reads fall through to the new owners (misses), no error
        assert client.get_many(moved) == {}
        started = time.monotonic()
        for key in moved[:50]:
            client.get(key)
        assert time.monotonic() - started < 5.0
        assert client.stats().ejections == 0
    finally:
        client.close()
        endpoint.close()

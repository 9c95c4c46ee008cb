"""The hand-over's copy against clients writing the same key, each interleaving driven by hand.

Two real nodes: ``old`` (the key's owner before the change) and ``new`` (its owner after). A
``Handover`` copies from ``old`` to ``new``; plain clients play the application: one still on
the old ring writes ``old``, one already switched writes ``new`` and then invalidates ``old``
(what ``ClusterClient`` does in its hand-over window). A connection that runs the clients' steps
right after the copy has read the source, before it stores on the target, puts them exactly
between the copy's read and its write, the window a busy machine opens at random.

The rule under test: a copy never makes a value older than the latest write visible. A miss is
never stale, so "the latest value, or nothing" passes; the copied-over older value fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from procs import ServerProc, start_node
from pymemcache.client.base import Client

from memcache_server.discovery.handover import Address, Handover, Item, MetaConnection


@pytest.fixture
def nodes() -> Iterator[tuple[ServerProc, ServerProc]]:
    old, new = start_node(), start_node()
    yield old, new
    old.stop()
    new.stop()


def client(srv: ServerProc) -> Client:
    return Client(srv.address, connect_timeout=5, timeout=5)


def interposing(source: Address, steps: Callable[[], None]) -> type[MetaConnection]:
    """Connections that run ``steps`` once, right after the first read of items from
    ``source`` (the copy's read) returns, before the copy stores anything."""
    pending = [steps]

    class Interposed(MetaConnection):
        def fetch(self, keys: list[bytes]) -> dict[bytes, Item]:
            found = super().fetch(keys)
            if self.address == source and found and pending:
                pending.pop()()
            return found

    return Interposed


def handover(old: ServerProc, new: ServerProc) -> Handover:
    return Handover([old.address], lambda source, key: new.address)


def visible(old: ServerProc, new: ServerProc, key: str) -> tuple[bytes | None, bytes | None]:
    """What a switched client reads in its window (the old owner, then the new one), and what
    every client reads after it (the new owner alone)."""
    there = client(new).get(key)
    return client(old).get(key) or there, there


def test_a_switched_write_between_the_copys_read_and_its_store_is_not_overwritten(
    nodes: tuple[ServerProc, ServerProc],
) -> None:
    old, new = nodes
    assert client(old).set("k", b"v1", noreply=False)
    assert client(old).set("quiet", b"q1", noreply=False)
    h = handover(old, new)
    h.copy()
    assert client(new).get("k") == b"v1"
    # a client still on the old ring writes; the catch-up pass reads that value ...
    assert client(old).set("k", b"v2", noreply=False)
    assert client(old).set("quiet", b"q2", noreply=False)

    def switched_client_writes() -> None:  # ... and a switched client writes before it stores
        assert client(new).set("k", b"v3", noreply=False)
        assert client(old).delete("k", noreply=False)

    h.connect = interposing(old.address, switched_client_writes)
    h.catch_up(0.0, 0.0)
    assert visible(old, new, "k")[0] in (b"v3", None)
    assert visible(old, new, "k")[1] in (b"v3", None)
    assert client(new).get("quiet") == b"q2"  # a key nobody raced is caught up as before


def test_an_invalidation_still_in_flight_during_the_pass_is_not_overtaken(
    nodes: tuple[ServerProc, ServerProc],
) -> None:
    old, new = nodes
    assert client(old).set("k", b"v1", noreply=False)
    h = handover(old, new)
    h.copy()
    assert client(old).set("k", b"v2", noreply=False)  # the writer, still on the old ring
    assert client(new).set("k", b"v3", noreply=False)  # the writer, switched: new owner first

    def invalidation_lands() -> None:  # its delete on the old owner comes after the copy read
        assert client(old).delete("k", noreply=False)

    h.connect = interposing(old.address, invalidation_lands)
    h.catch_up(0.0, 0.0)
    assert visible(old, new, "k") in ((b"v3", b"v3"), (None, None))


def test_a_switched_delete_between_the_copys_read_and_its_store_is_not_undone(
    nodes: tuple[ServerProc, ServerProc],
) -> None:
    old, new = nodes
    assert client(old).set("k", b"v1", noreply=False)
    h = handover(old, new)
    h.copy()
    assert client(old).set("k", b"v2", noreply=False)

    def switched_client_deletes() -> None:
        client(new).delete("k", noreply=False)
        client(old).delete("k", noreply=False)

    h.connect = interposing(old.address, switched_client_deletes)
    h.catch_up(0.0, 0.0)
    assert visible(old, new, "k") == (None, None)


def test_an_old_ring_write_after_a_switched_one_is_not_hidden(
    nodes: tuple[ServerProc, ServerProc],
) -> None:
    old, new = nodes
    assert client(old).set("k", b"v1", noreply=False)
    h = handover(old, new)
    h.copy()
    assert client(new).set("k", b"v2", noreply=False)  # a switched client writes ...
    assert client(old).delete("k", noreply=False)
    assert client(old).set("k", b"v3", noreply=False)  # ... then one still on the old ring
    h.catch_up(0.0, 0.0)
    # after the clients' window they read the new owner alone: v2 there would be stale
    assert visible(old, new, "k") in ((b"v3", b"v3"), (None, None))


def test_the_bulk_copy_replaces_an_older_leftover_on_the_target(
    nodes: tuple[ServerProc, ServerProc],
) -> None:
    """A target may hold a key from an earlier ring (the old owner of a scale-out keeps its
    copies; when that newcomer later leaves, they are older than what it pushes back)."""
    old, new = nodes
    assert client(new).set("k", b"leftover", noreply=False)
    assert client(old).set("k", b"latest", noreply=False)
    handover(old, new).copy()
    assert client(new).get("k") == b"latest"

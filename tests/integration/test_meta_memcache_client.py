"""End to end through the meta-memcache client: its herd-control patterns need our meta replies
to carry the right win (W), already-won (Z) and stale (X) flags at the right moments.

One node serves the whole module; each test uses its own keys.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from meta_memcache import (
    CacheClient,
    Key,
    LeasePolicy,
    RecachePolicy,
    ServerAddress,
    SetMode,
    StalePolicy,
    connection_pool_factory_builder,
)
from meta_memcache.interfaces.cache_api import CacheApi
from procs import ServerProc, start_node


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    node = start_node("-t", "2")
    yield node
    node.stop()


def client(srv: ServerProc) -> CacheApi:
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress(srv.host, srv.port)],
        connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=5),
    )


def test_basic_verbs(srv: ServerProc) -> None:
    c = client(srv)
    assert c.set("basic:a", b"value", ttl=60)
    assert c.get("basic:a") == b"value"
    assert c.get("basic:missing") is None
    assert c.set("basic:obj", {"x": [1, 2]}, ttl=60)
    assert c.get("basic:obj") == {"x": [1, 2]}
    assert c.multi_get(["basic:a", "basic:missing"]) == {
        Key("basic:a"): b"value",
        Key("basic:missing"): None,
    }
    assert c.touch("basic:a", ttl=120)
    assert not c.touch("basic:missing", ttl=120)
    assert c.delete("basic:a")
    assert not c.delete("basic:a")
    assert c.invalidate("basic:a")


def test_set_modes_and_cas(srv: ServerProc) -> None:
    c = client(srv)
    assert c.refill("cas:a", b"first", ttl=60)
    assert not c.refill("cas:a", b"second", ttl=60)  # ADD mode: already there
    value, token = c.get_cas("cas:a")
    assert value == b"first" and token
    assert not c.set("cas:a", b"racer", ttl=60, cas_token=token + 1)
    new_token = c.set_cas("cas:a", b"third", ttl=60, cas_token=token)
    assert new_token and new_token != token
    assert c.get("cas:a") == b"third"
    assert c.set("cas:a", b"!", ttl=60, set_mode=SetMode.APPEND)
    assert c.set("cas:a", b"<", ttl=60, set_mode=SetMode.PREPEND)
    assert c.get("cas:a") == b"<third!"
    assert not c.set("cas:none", b"x", ttl=60, set_mode=SetMode.REPLACE)


def test_counters(srv: ServerProc) -> None:
    c = client(srv)
    assert c.delta_and_get("ctr:a", 1) is None  # no vivify: a miss
    assert c.delta_initialize_and_get("ctr:a", 5, initial_value=10, initial_ttl=60) == 10
    assert c.delta_and_get("ctr:a", 5) == 15
    assert c.delta_and_get("ctr:a", -20) == 0  # decrement floors at zero
    assert c.delta("ctr:a", 3)
    assert c.delta_and_get("ctr:a", 0) == 3


def test_unusual_keys(srv: ServerProc) -> None:
    c = client(srv)
    for key in ("ключ:üñí", "spaces are fine here", "x" * 400):
        assert c.set(key, b"v-" + key.encode()[:20], ttl=60)
        assert c.get(key) == b"v-" + key.encode()[:20]


def test_lease_on_miss_one_winner(srv: ServerProc) -> None:
    """The first reader of a missing key wins the lease (a miss, so it refills); the others
    wait, and get the value once the winner has written it."""
    winner, loser = client(srv), client(srv)
    policy = LeasePolicy(ttl=30, miss_retries=5, miss_retry_wait=0.01, miss_max_retry_wait=0.01)
    assert winner.get_or_lease("lease:a", policy) is None
    value, token = winner.get_or_lease_cas("lease:b", policy)
    assert value is None and token

    waits: list[float] = []

    def refill_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            assert winner.set("lease:a", b"fresh", ttl=60)

    assert loser.get_or_lease("lease:a", policy, lease_wait_fn=refill_while_waiting) == b"fresh"
    assert len(waits) == 2  # it retried until the winner's value appeared

    # A loser that runs out of retries behaves as a miss, without the placeholder value.
    assert loser.get_or_lease("lease:b", policy, lease_wait_fn=lambda s: None) is None
    # The lease winner writes back with its CAS token.
    assert winner.set("lease:b", b"filled", ttl=60, cas_token=token)
    assert loser.get_or_lease("lease:b", policy) == b"filled"


def test_recache_one_client_refreshes_early(srv: ServerProc) -> None:
    """Below the recache TTL exactly one client gets a miss (to refresh); others keep the value."""
    c1, c2 = client(srv), client(srv)
    assert c1.set("recache:a", b"old", ttl=20)
    recache = RecachePolicy(ttl=30)
    assert c1.get("recache:a", recache_policy=recache) is None  # won: refresh it
    assert c2.get("recache:a", recache_policy=recache) == b"old"
    assert c2.get("recache:a", recache_policy=recache) == b"old"
    assert c1.set("recache:a", b"new", ttl=300)
    assert c2.get("recache:a", recache_policy=recache) == b"new"


def test_stale_while_revalidate_after_delete(srv: ServerProc) -> None:
    """A delete under a stale policy marks the item stale: one reader wins the refresh, the
    others are served the stale value until the new one is written."""
    writer, r1, r2 = client(srv), client(srv), client(srv)
    stale = StalePolicy(mark_stale_on_deletion_ttl=30)
    assert writer.set("swr:a", b"v1", ttl=300)
    assert writer.delete("swr:a", stale_policy=stale)
    assert r1.get("swr:a") is None  # the winner refreshes
    assert r2.get("swr:a") == b"v1"  # served stale meanwhile
    assert r2.get("swr:a") == b"v1"
    assert r1.set("swr:a", b"v2", ttl=300)
    assert r2.get("swr:a") == b"v2"


def test_stale_on_cas_mismatch(srv: ServerProc) -> None:
    """A write with an outdated CAS token is kept as a stale value rather than dropped."""
    c = client(srv)
    stale = StalePolicy(mark_stale_on_cas_mismatch=True)
    assert c.set("casstale:a", b"v1", ttl=300)
    _, token = c.get_cas("casstale:a")
    assert c.set("casstale:a", b"v2", ttl=300)  # someone else writes meanwhile
    assert token is not None
    assert c.set("casstale:a", b"late", ttl=300, cas_token=token, stale_policy=stale)
    assert c.get("casstale:a") is None  # stale: the first reader wins the refresh
    assert c.get("casstale:a") == b"late"

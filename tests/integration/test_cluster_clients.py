"""Real ElastiCache-aware clients from PyPI, unchanged, against our config endpoint and nodes.

django-elastipymemcache (through Django's cache API), emcache's autodiscovery and
elasticache-auto-discovery each discover the node list from the config node and store keys
across the nodes. The packages are test dependencies (``.[test]``): a missing one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import HOST, Cluster, config_get, ports_in, stats_of, wait_for

N_KEYS = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("clients")), timeout=5.0, interval=0.2)
    c.start_config()
    try:
        for _ in range(3):
            c.add_node()
        assert c.config is not None
        cfg = c.config.port
        want = {n.port for n in c.nodes}
        wait_for("three nodes", lambda: ports_in(config_get(cfg)) == want)
        yield c
    finally:
        c.close()


def items_per_node(cluster: Cluster) -> dict[int, int]:
    return {n.port: int(stats_of(n.port)["curr_items"]) for n in cluster.nodes}


def test_django_elastipymemcache(cluster: Cluster) -> None:
    import django_elastipymemcache  # noqa: F401  (a test dependency: its absence fails)
    from django.conf import settings

    assert cluster.config is not None
    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django_elastipymemcache.backend.ElastiPymemcache",
                    "LOCATION": f"{HOST}:{cluster.config.port}",
                    "KEY_PREFIX": "dj",
                    "OPTIONS": {"connect_timeout": 5, "timeout": 5},
                }
            }
        )
    from django.core.cache import caches

    cache = caches["default"]
    try:
        servers = set(cache._cache.clients)  # the node list it discovered: "host:port"
        assert servers == {f"{HOST}:{n.port}" for n in cluster.nodes}
        before = items_per_node(cluster)
        for i in range(N_KEYS):
            cache.set(f"django-{i}", {"i": i}, timeout=300)
        assert cache.get_many([f"django-{i}" for i in range(N_KEYS)]) == {
            f"django-{i}": {"i": i} for i in range(N_KEYS)
        }
        after = items_per_node(cluster)
        added = {p: after[p] - before[p] for p in after}
        assert sum(added.values()) == N_KEYS
        assert all(n > 0 for n in added.values()), added  # spread across every node
    finally:
        cache.close()


def test_emcache_autodiscovery(cluster: Cluster) -> None:
    import emcache

    assert cluster.config is not None
    cfg = cluster.config.port

    async def run() -> tuple[set[int], set[int], dict[bytes, bytes]]:
        client = await emcache.create_client(
            [emcache.MemcachedHostAddress(HOST, cfg)],
            autodiscovery=True,
            autodiscovery_poll_interval=0.2,
            autodiscovery_timeout=5.0,
            timeout=5.0,
        )
        try:
            first = {a.port for a in client.cluster_managment().nodes()}
            for i in range(N_KEYS):
                await client.set(b"emcache-%d" % i, b"v%d" % i)
            got = await client.get_many([b"emcache-%d" % i for i in range(N_KEYS)])
            values = {k: item.value for k, item in got.items()}
            # a node joins: emcache's poller picks up the new version
            newcomer = await asyncio.to_thread(cluster.add_node)
            want = first | {newcomer.port}
            for _ in range(200):
                seen = {a.port for a in client.cluster_managment().nodes()}
                if seen == want:
                    break
                await asyncio.sleep(0.05)
            return first, seen, values
        finally:
            await client.close()

    before = items_per_node(cluster)
    first, later, values = asyncio.run(run())
    assert first == set(before)
    assert later == first | {cluster.nodes[-1].port}
    assert values == {b"emcache-%d" % i: b"v%d" % i for i in range(N_KEYS)}
    after = items_per_node(cluster)
    added = {p: after[p] - before[p] for p in before}
    assert sum(added.values()) == N_KEYS and all(n > 0 for n in added.values()), added


def test_elasticache_auto_discovery(cluster: Cluster) -> None:
    import elasticache_auto_discovery as ead

    assert cluster.config is not None
    found = ead.discover(f"{HOST}:{cluster.config.port}", time_to_timeout=5)
    doc = config_get(cluster.config.port)
    assert doc is not None
    assert found == [[n.hostname.encode(), n.ip.encode(), b"%d" % n.port] for n in doc.nodes]
    # every cache node answers too (clients that poll nodes round-robin), once it has pulled
    # the latest version (a node may just have joined)
    first = cluster.nodes[0].port
    wait_for("the first node on the latest version", lambda: config_get(first) == doc)
    assert ead.discover(f"{HOST}:{first}", time_to_timeout=5) == found

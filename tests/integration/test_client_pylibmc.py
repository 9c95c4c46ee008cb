"""Cross-client agreement: pylibmc (libmemcached, ``ketama_weighted``) and our helper read each
other's keys from the same real nodes.

pylibmc is a reference client, not a package dependency (it builds against libmemcached:
``apt-get install libmemcached-dev`` then ``pip install pylibmc``, which CI does); where it is
not installed the test skips as a missing reference, or fails with ``REQUIRE_REFERENCES=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from procs import ServerProc, start_node
from reference import need_module

from memcache_server.discovery.client import ClusterClient


@pytest.fixture
def nodes() -> Iterator[list[ServerProc]]:
    started = [start_node() for _ in range(3)]
    yield started
    for srv in started:
        srv.stop()


def test_pylibmc_and_the_helper_agree_on_every_key(nodes: list[ServerProc]) -> None:
    pylibmc = need_module("pylibmc", "apt-get install libmemcached-dev; pip install pylibmc")
    servers = [f"127.0.0.1:{srv.port}" for srv in nodes]
    theirs = pylibmc.Client(servers, binary=False, behaviors={"ketama_weighted": True})
    try:
        written = {f"php-or-c:{i}": f"value-{i}".encode() for i in range(1500)}
        assert theirs.set_multi(written) == []
        with ClusterClient(seeds=servers, background=False) as ours:
            # every key pylibmc wrote is found where our ring looks for it
            assert ours.get_many(list(written)) == written
            assert {ours.owner(k).port for k in written} == {srv.port for srv in nodes}
            ours.set_many({f"python:{i}": b"x%d" % i for i in range(1500)})
        for i in range(1500):
            assert theirs.get(f"python:{i}") == b"x%d" % i
    finally:
        theirs.disconnect_all()

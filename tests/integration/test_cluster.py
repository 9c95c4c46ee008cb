"""A config node and cache nodes as real processes on loopback: joins, graceful leaves with a
drain, kills, a frozen node, config node restarts and outages.

A short heartbeat interval keeps it fast (0.2 s); the timeout that removes a silent node is 5 s,
so a node that a loaded machine stalls for a second or two is not removed by accident. Every
wait is a condition polled until a deadline; the assertions are about membership and about
versions rising, not about exact version numbers or counts a spurious re-join would shift.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import (
    Cluster,
    config_get,
    ports_in,
    request,
    stats_of,
    version_of,
    wait_for,
)

from memcache_server.discovery.document import ClusterDocument, parse_config_reply

HEARTBEAT_TIMEOUT = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, timeout=HEARTBEAT_TIMEOUT, interval=0.2)
    c.start_config()
    try:
        yield c
    finally:
        c.close()


def everyone_has(ports: list[int], expect: set[int]) -> ClusterDocument | None:
    """The document every node in ``ports`` serves, if they all serve the same one listing
    exactly ``expect``; each reply must arrive whole in one recv()."""
    docs = set()
    for p in ports:
        raw = request(p, b"config get cluster\r\n")
        doc = parse_config_reply(raw)  # raises if the reply came in pieces
        if doc is None or ports_in(doc) != expect:
            return None
        docs.add(raw)
    if len(docs) != 1:
        return None
    return parse_config_reply(docs.pop())


def test_join_leave_and_kill(cluster: Cluster) -> None:
    assert cluster.config is not None
    cfg = cluster.config.port
    nodes = [cluster.add_node(), cluster.add_node(drain=3.0), cluster.add_node()]
    ports = [n.port for n in nodes]
    doc3 = wait_for("three nodes", lambda: everyone_has(ports + [cfg], set(ports)))
    assert doc3.version >= 3 and all(n.ip == "127.0.0.1" for n in doc3.nodes)

    # a fourth joins: version + 1, and every node answers it within a few heartbeats
    fourth = cluster.add_node()
    t0 = time.monotonic()
    ports.append(fourth.port)
    doc4 = wait_for("the fourth node everywhere", lambda: everyone_has(ports, set(ports)))
    elapsed = time.monotonic() - t0
    assert doc4.version > doc3.version
    assert elapsed < HEARTBEAT_TIMEOUT, f"took {elapsed:.2f}s"
    legacy = request(ports[0], b"get AmazonElastiCache:cluster\r\n")
    assert legacy == b"VALUE AmazonElastiCache:cluster 0 %d\r\n%b\r\nEND\r\n" % (
        len(doc4.encode()),
        doc4.encode(),
    )

    # SIGTERM: removed from the document while it still serves (drain), then exits 0
    leaving = nodes[1]
    os.kill(leaving.proc.pid, signal.SIGTERM)
    doc5 = wait_for(
        "the leave", lambda: (d := config_get(cfg)) and leaving.port not in ports_in(d) and d
    )
    assert doc5.version > doc4.version and ports_in(doc5) == set(ports) - {leaving.port}
    assert request(leaving.port, b"version\r\n") == b"VERSION 1.6.18\r\n"  # still serving
    assert config_get(leaving.port) == doc5  # and already tells pollers the new list
    assert leaving.proc.wait(15) == 0
    ports.remove(leaving.port)
    wait_for("the leave everywhere", lambda: everyone_has(ports, set(ports)))

    # SIGKILL: no leave; the config node removes it after the heartbeat timeout
    killed = nodes[2]
    os.kill(killed.proc.pid, signal.SIGKILL)
    ports.remove(killed.port)
    doc6 = wait_for("the timeout removal", lambda: everyone_has(ports, set(ports)), timeout=30)
    assert doc6.version > doc5.version
    s = stats_of(cfg)
    # a join each, the SIGTERM a leave, the SIGKILL a removal (by the timeout: nobody asked)
    assert int(s["cluster_joins"]) >= 4 and int(s["cluster_leaves"]) >= 1
    assert int(s["cluster_removals"]) >= 1
    ns = stats_of(ports[0])
    assert int(ns["cluster_version"]) >= doc6.version and ns["cluster_nodes"] == "2"
    assert int(ns["cluster_joins"]) >= 1 and int(ns["cluster_heartbeats"]) > 0


def test_frozen_node_is_removed_and_comes_back(cluster: Cluster) -> None:
    """SIGSTOP stands in for a partition: heartbeats stop, the node is removed; once it runs
    again its heartbeats bring it back under a new version."""
    a, b = cluster.add_node(), cluster.add_node()
    both = {a.port, b.port}
    wait_for("two nodes", lambda: everyone_has([a.port, b.port], both))
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        gone = wait_for("the frozen node's removal", lambda: everyone_has([a.port], {a.port}))
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    back = wait_for("its return", lambda: everyone_has([a.port, b.port], both))
    assert back.version > gone.version
    assert cluster.config is not None
    s = stats_of(cluster.config.port)
    # two joins, the removal, and the return as a third join
    assert int(s["cluster_joins"]) >= 3 and int(s["cluster_removals"]) >= 1


def test_config_node_outage_and_restart(cluster: Cluster) -> None:
    assert cluster.config is not None
    a, b = cluster.add_node(), cluster.add_node()
    ports = [a.port, b.port]
    doc = wait_for("two nodes", lambda: everyone_has(ports, set(ports)))

    # the config node is down: nodes keep answering their last document
    assert cluster.config.stop() == 0
    wait_for("a failed heartbeat", lambda: int(stats_of(a.port)["cluster_heartbeat_failures"]) > 0)
    assert everyone_has(ports, set(ports)) == doc

    # it comes back with its state file: same version, members confirmed by heartbeats
    cfg = cluster.start_config().port
    assert config_get(cfg) == doc
    c = cluster.add_node()
    ports.append(c.port)
    doc3 = wait_for("a join after the restart", lambda: everyone_has(ports, set(ports)))
    assert doc3.version > doc.version  # the version kept rising, never repeated

    # it comes back WITHOUT its state file: membership returns through heartbeats, and the
    # version still rises past what the nodes hold
    assert cluster.config.stop() == 0
    cluster.state.unlink()
    cfg = cluster.start_config().port
    rebuilt = wait_for(
        "membership rebuilt from heartbeats",
        lambda: (d := config_get(cfg)) and ports_in(d) == set(ports) and d,
    )
    assert rebuilt.version > doc3.version
    wait_for(
        "nodes on the rebuilt version", lambda: all(version_of(p) == rebuilt.version for p in ports)
    )


def test_second_sigterm_cuts_the_drain_short(cluster: Cluster) -> None:
    assert cluster.config is not None
    cfg = cluster.config.port
    node = cluster.add_node(drain=60.0)
    wait_for("the join", lambda: ports_in(config_get(cfg)) == {node.port})
    os.kill(node.proc.pid, signal.SIGTERM)
    wait_for("the leave", lambda: config_get(cfg) is None)  # the cluster is empty now
    assert request(node.port, b"version\r\n") == b"VERSION 1.6.18\r\n"  # draining, serving
    t0 = time.monotonic()
    os.kill(node.proc.pid, signal.SIGTERM)
    assert node.proc.wait(15) == 0
    assert time.monotonic() - t0 < 10  # not the 60 s drain


def test_no_drain_when_the_leave_cannot_be_published(cluster: Cluster) -> None:
    assert cluster.config is not None
    node = cluster.add_node(drain=60.0)
    wait_for("the join", lambda: ports_in(config_get(cluster.config.port)) == {node.port})
    assert cluster.config.stop() == 0  # nobody can publish the leave now
    t0 = time.monotonic()
    os.kill(node.proc.pid, signal.SIGTERM)
    assert node.proc.wait(15) == 0
    assert time.monotonic() - t0 < 10  # it did not wait out the 60 s drain

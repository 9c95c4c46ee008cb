"""``--warm``: a joining node copies its keys in before it is published, a leaving one pushes
its items to their next owners; a concurrent writer never sees an older value afterwards.

Real processes on loopback: a config node, member nodes, and our ``ClusterClient`` (libketama by
hostname, the placement the nodes compute).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import Cluster, config_get, ports_in, request, stats_of, wait_for

from memcache_server.discovery.client import ClusterClient

WINDOW = 2.0  # the nodes' --drain-seconds: how long catch-up passes run after a change


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, timeout=5.0, interval=0.2)
    c.start_config()
    try:
        for _ in range(3):
            c.add_node("--warm", drain=WINDOW)
        wait_for("three nodes", lambda: len(ports_in(config_get(cfg_port(c)))) == 3)
        yield c
    finally:
        c.close()


def cfg_port(c: Cluster) -> int:
    assert c.config is not None
    return c.config.port


def client_for(c: Cluster) -> ClusterClient:
    return ClusterClient(f"127.0.0.1:{cfg_port(c)}", poll_interval=30.0, background=False)


def meta(port: int, key: str) -> dict[str, str]:
    """``mg <key> f t v`` on one node: flags, remaining TTL and value ({} on a miss)."""
    reply = request(port, f"mg {key} f t v\r\n".encode())
    if not reply.startswith(b"VA "):
        return {}
    head, value = reply.split(b"\r\n")[:2]
    fields = {p[:1].decode(): p[1:].decode() for p in head.split(b" ")[2:]}
    return {**fields, "v": value.decode()}


def test_a_warm_join_is_published_with_its_keys_already_in(cluster: Cluster) -> None:
    keys = {f"user:{i}": b"profile-%d" % i for i in range(3000)}
    with client_for(cluster) as client:
        assert client.set_many(keys, expire=3600) == []
        flagged = [f"flag:{i}" for i in range(200)]
        for i, key in enumerate(flagged):  # client flags, as a serializer sets them
            reply = request(client.owner(key).port, b"ms %b 2 F%d T0\r\nhi\r\n" % (key.encode(), i))
            assert reply == b"HD\r\n"
        newcomer = cluster.add_node("--warm", "-vv", drain=WINDOW)
        # published only once warm: the first document listing it finds its keys in place
        wait_for("four nodes", lambda: len(ports_in(config_get(cfg_port(cluster)))) == 4)
        assert client.poll() == "updated"
        moved = [k for k in keys if client.owner(k).port == newcomer.port]
        assert 0.15 < len(moved) / len(keys) < 0.4
        found = client.get_many(keys)
        assert found == keys  # hit ratio 1.0 right after the switch, every value exact
        s = stats_of(newcomer.port)
        assert int(s["cluster_warm_copied"]) == int(s["cluster_warm_keys"]) >= len(moved)
        assert int(s["cluster_warm_bytes"]) >= sum(len(keys[k]) for k in moved)
        # flags and the remaining TTL travel with the value
        moved_flagged = [k for k in flagged if client.owner(k).port == newcomer.port]
        assert moved_flagged
        for key in moved_flagged:
            assert meta(newcomer.port, key) == {"f": key.split(":")[1], "t": "-1", "v": "hi"}
        sample = meta(newcomer.port, moved[0])
        assert sample["v"] == keys[moved[0]].decode()
        assert 3500 < int(sample["t"]) <= 3600
        wait_for(
            "catch-up done",
            lambda: stats_of(newcomer.port)["cluster_warm_state"] == "done",
            timeout=WINDOW + 15,
        )


def test_catch_up_never_leaves_an_older_value(cluster: Cluster) -> None:
    """A writer rewrites and deletes keys while the node warms up, joins and catches up; its
    clients switch at different moments. When the dust settles every key holds its last
    written value (or nothing, if last deleted): no copy ever replaced a newer write."""
    keys = [f"counter:{i}" for i in range(600)]
    last: dict[str, bytes | None] = {}
    stop = threading.Event()
    writers = [client_for(cluster), client_for(cluster)]  # one switches early, one late

    def write() -> None:
        seq = 0
        while not stop.is_set():
            for i, key in enumerate(keys):
                seq += 1
                client = writers[(seq // 50) % 2]
                if i % 17 == 0 and seq % 3 == 0:
                    client.delete(key)
                    last[key] = None
                else:
                    value = b"%d" % seq
                    assert client.set(key, value, expire=3600)
                    last[key] = value
                if stop.is_set():
                    break

    with writers[0], writers[1]:
        writers[0].set_many({k: b"0" for k in keys}, expire=3600)
        writer = threading.Thread(target=write)
        writer.start()
        try:
            newcomer = cluster.add_node("--warm", drain=WINDOW)
            wait_for("four nodes", lambda: len(ports_in(config_get(cfg_port(cluster)))) == 4)
            time.sleep(0.3)
            assert writers[0].poll() == "updated"  # the early client switches ...
            time.sleep(0.6)
            assert writers[1].poll() == "updated"  # ... the late one a little later
            time.sleep(0.3)
        finally:
            stop.set()
            writer.join(30)
        wait_for(
            "catch-up done",
            lambda: stats_of(newcomer.port)["cluster_warm_state"] == "done",
            timeout=WINDOW + 15,
        )
        s = stats_of(newcomer.port)
        raced = ("updated", "kept", "dropped")
        assert sum(int(s[f"cluster_warm_{n}"]) for n in raced) > 0  # it did race
        with client_for(cluster) as reader:
            assert len(reader.live_nodes) == 4
            got = reader.get_many(keys)
            wrong = {k: (got.get(k), v) for k, v in last.items() if got.get(k) != v}
            assert wrong == {}


def test_a_draining_node_pushes_its_items_to_their_next_owners(cluster: Cluster) -> None:
    keys = {f"item:{i}": b"v%d" % i for i in range(2000)}
    with client_for(cluster) as client:
        assert client.set_many(keys, expire=3600) == []
        leaving = cluster.nodes[1]
        mine = [k for k in keys if client.owner(k).port == leaving.port]
        assert mine
        leaving.proc.send_signal(signal.SIGTERM)
        wait_for(
            "the leaving node unlisted",
            lambda: leaving.port not in ports_in(config_get(cfg_port(cluster))),
        )
        assert client.poll() == "updated"
        assert len(client.live_nodes) == 2
        assert client.get_many(keys) == keys  # every item of the leaving node was handed over
        assert leaving.proc.wait(WINDOW + 30) == 0


def test_a_leftover_on_a_node_that_does_not_own_the_key_is_never_copied(
    cluster: Cluster,
) -> None:
    """A node keeps its copies of the keys a change moved away (only the clients' hand-over
    window invalidates them), so it holds older values of keys it does not own. Neither a
    joining node nor a leaving one may copy those over the owner's value."""
    wait_for(  # the three joined with --warm: their catch-up passes are over
        "catch-up done",
        lambda: all(stats_of(n.port)["cluster_warm_state"] == "done" for n in cluster.nodes),
        timeout=WINDOW + 15,
    )
    keys = {f"user:{i}": b"fresh-%d" % i for i in range(600)}
    with client_for(cluster) as client:
        assert client.set_many(keys, expire=3600) == []
        owner = {k: client.owner(k).port for k in keys}
        for node in cluster.nodes:  # an older value of every key on each node not owning it
            for key in [k for k in keys if owner[k] != node.port]:
                assert request(node.port, b"set %b 0 3600 5\r\nstale\r\n" % key.encode()) == (
                    b"STORED\r\n"
                )
        newcomer = cluster.add_node("--warm", drain=WINDOW)
        wait_for("four nodes", lambda: len(ports_in(config_get(cfg_port(cluster)))) == 4)
        assert client.poll() == "updated"
        moved = [k for k in keys if client.owner(k).port == newcomer.port]
        assert moved
        assert {k: client.get(k) for k in moved} == {k: keys[k] for k in moved}

        leaving = cluster.nodes[1]
        leaving.proc.send_signal(signal.SIGTERM)
        wait_for(
            "the leaving node unlisted",
            lambda: leaving.port not in ports_in(config_get(cfg_port(cluster))),
        )
        assert leaving.proc.wait(WINDOW + 30) == 0
    with client_for(cluster) as reader:  # no hand-over window: the owners alone
        assert reader.get_many(keys) == keys

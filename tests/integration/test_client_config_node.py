"""The client helper against the real config node and nodes that join it.

Every process is stopped by PID. The heartbeat timeout (5 s) is five of the nodes' default
1 s heartbeats, so a node a loaded machine stalls briefly is not removed by accident.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ROOT, ServerProc, free_port, start_node, wait_listening

from memcache_server.discovery.client import ClusterClient

HEARTBEAT_TIMEOUT = 5.0
POLL = 0.5


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def config_node(tmp_path: Path) -> Iterator[ServerProc]:
    port = free_port()
    cmd = [
        sys.executable,
        str(ROOT / "cli.py"),
        "config-node",
        "-p",
        str(port),
        "--state-file",
        str(tmp_path / "cluster-state"),
        "--heartbeat-timeout",
        str(HEARTBEAT_TIMEOUT),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    srv = ServerProc(proc, "127.0.0.1", port)
    try:
        wait_listening("127.0.0.1", port)
        yield srv
    finally:
        srv.stop()


def test_client_follows_a_real_config_node(config_node: ServerProc) -> None:
    join = ("--join", f"127.0.0.1:{config_node.port}")
    nodes: list[ServerProc] = []
    try:
        nodes += [start_node(*join) for _ in range(3)]
        with ClusterClient(
            f"127.0.0.1:{config_node.port}", poll_interval=POLL, ignore_exc=True
        ) as client:
            wait_for(lambda: len(client.members) == 3, timeout=20)
            assert {n.port for n in client.members} == {srv.port for srv in nodes}
            keys = {f"k:{i}": b"v" for i in range(1500)}
            assert client.set_many(keys) == []
            assert {client.owner(k).port for k in keys} == {srv.port for srv in nodes}
            before = {k: client.owner(k).port for k in keys}

            nodes.append(start_node(*join))
            wait_for(lambda: len(client.members) == 4, timeout=20)
            moved = [k for k in keys if client.owner(k).port != before[k]]
            assert all(client.owner(k).port == nodes[3].port for k in moved)
            assert 0.15 < len(moved) / len(keys) < 0.35

            victim = nodes[0]
            victim.stop(signal.SIGKILL)
            wait_for(lambda: victim.port not in {n.port for n in client.members}, timeout=20)
            survivors = [k for k in keys if before[k] != victim.port and k not in set(moved)]
            found = client.get_many(survivors)
            assert set(found) == set(survivors)

            # the endpoint goes away: nodes still answer with their document, calls still work
            config_node.stop()
            polls = client.stats().polls
            wait_for(lambda: client.stats().polls >= polls + 3, timeout=10)
            assert len(client.members) == 3
            assert client.get_many(survivors) == found
    finally:
        for srv in nodes:
            srv.stop()

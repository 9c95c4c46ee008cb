"""A cache node process answering discovery: the golden reply, whole, in one recv()."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_procs import request, wait_for
from procs import ServerProc, exchange, start_node

from memcache_server.app import Node
from memcache_server.config import ServerConfig
from memcache_server.discovery.document import ClusterDocument, NodeAddress, config_reply

GOLDEN_DOC = b"12\nnode-a.cache.local|127.0.0.1|11311 node-b.cache.local|127.0.0.1|11312\n"
GOLDEN_REPLY = b"CONFIG cluster 0 73\r\n" + GOLDEN_DOC + b"\r\nEND\r\n"


@pytest.fixture(scope="module")
def writable() -> Iterator[ServerProc]:
    """A node whose operator allows config writes, holding the golden document."""
    srv = start_node("-t", "2", "-m", "8", "--allow-config-writes")
    try:
        with srv.connect() as s:
            assert exchange(s, b"config set cluster 0 73\r\n" + GOLDEN_DOC + b"\r\n") == (
                b"STORED\r\n"
            )
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "line", [b"config get cluster\r\n", b"config get cluster \r\n", b"config get cluster\n"]
)
def test_golden_reply_in_one_recv(writable: ServerProc, line: bytes) -> None:
    for _ in range(20):
        assert request(writable.port, line) == GOLDEN_REPLY  # 101 bytes, one recv, every time


def test_legacy_get_in_one_recv(writable: ServerProc) -> None:
    got = request(writable.port, b"get AmazonElastiCache:cluster\r\n")
    assert got == b"VALUE AmazonElastiCache:cluster 0 73\r\n" + GOLDEN_DOC + b"\r\nEND\r\n"


def test_pipelined_with_other_commands_in_one_recv(writable: ServerProc) -> None:
    got = request(writable.port, b"version\r\nconfig get cluster\r\nget nothing\r\n")
    assert got == b"VERSION 1.6.18\r\n" + GOLDEN_REPLY + b"END\r\n"


def test_default_node_refuses_writes(node: ServerProc) -> None:
    with node.connect() as s:
        got = exchange(
            s,
            b"config set cluster 0 73\r\n" + GOLDEN_DOC + b"\r\n"
            b"set AmazonElastiCache:cluster 0 0 73\r\n" + GOLDEN_DOC + b"\r\n"
            b"config get cluster\r\nget AmazonElastiCache:cluster\r\nstats\r\n",
            settle=0.3,
        )
    assert got.startswith(
        b"CLIENT_ERROR config writes are not allowed on this node\r\n"
        b"CLIENT_ERROR AmazonElastiCache:cluster is read-only on this node\r\n"
        b"END\r\nEND\r\nSTAT pid "
    )
    assert b"cluster_" not in got  # a standalone node's stats are memcached's


class CountingSocket:
    """A real socket whose send() calls are counted: real bytes still flow over loopback."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends: list[int] = []

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self.sends.append(len(data))  # what the worker hands over, recorded before it leaves
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_one_send_per_read_batch() -> None:
    """Watch the worker's send() calls on a node running in this process: each discovery reply
    (and a pipelined batch of them) is handed to the kernel in one send."""
    doc = ClusterDocument.of(
        7, [NodeAddress(f"node-{i:03d}.cache.local", "10.0.0.1", 11211) for i in range(400)]
    )
    node = Node(ServerConfig(port=0, threads=1, memory_limit_mb=8))
    node.bind()
    node.start()
    try:
        assert node.cluster.offer(doc)
        reply = config_reply(doc.encode())
        assert len(reply) > 14000  # a large document (400 nodes): still one send
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as client:
            conn = wait_for("the connection", lambda: node.connections() or None)[0]
            counting = CountingSocket(conn.sock)
            conn.sock = counting  # type: ignore[assignment]
            for batch in (1, 1, 10):
                counting.sends.clear()
                client.sendall(b"config get cluster\r\n" * batch)
                got = b""
                while len(got) < len(reply) * batch:
                    got += client.recv(1 << 20)
                assert got == reply * batch
                # the whole batch's output went to one send() call (had the kernel taken only
                # part of it, the rest would follow later: back-pressure, not a split reply)
                assert counting.sends[0] == len(got)
    finally:
        node.shutdown()

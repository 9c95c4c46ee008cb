"""Connection-level state is node-wide: a forked child acting as worker 1 of a node.

The node runs in this process (worker 0, the acceptor, real TCP clients). A forked child binds
itself as worker slot 1, as a worker process of ``-t 2`` does, runs a real ``Worker`` loop and
serves one connection (a socket pair, admitted as its acceptor would). What the child's
connection does must show in what the parent's clients read: ``stats conns``, the connection
counters and ``-c``, ``watch`` streams and ``stats detail dump``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from test_ops import ask, stats
from test_watch import read_until

from memcache_server.app import Node
from memcache_server.config import ServerConfig
from memcache_server.server.worker import Worker

CHILD_PEER = "tcp:10.9.8.7:4242"  # the label the child's connection is recorded under


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    extra = getattr(request, "param", {})
    n = Node(ServerConfig(port=0, threads=2, memory_limit_mb=8, **extra))
    n.store.share()  # before any fork: the store's lock must hold across processes
    n.bind()
    n.start()
    try:
        yield n
    finally:
        n.shutdown()


def client(node: Node) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    assert ask(s, b"version\r\n").startswith(b"VERSION")  # admitted and served
    return s


class OtherWorker:
    """A child process serving one connection as worker slot 1 of ``node``: it sends
    ``requests`` through it, reports the connection's fd, holds it until ``finish``, then
    closes it and exits 0 if every step went as expected."""

    def __init__(self, node: Node, requests: bytes, replies_end: bytes) -> None:
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns into pytest
            code = 1
            signal.alarm(30)
            try:
                os.close(report_r)
                code = self._child(node, requests, replies_end, report_w, go_r)
            finally:
                os._exit(code)
        os.close(report_w)
        os.close(go_r)
        self.go = go_w
        with os.fdopen(report_r) as report:
            line = report.readline()
        assert line, "the child worker failed before serving"
        fd, _, reply = line.rstrip("\n").partition(" ")
        self.fd, self.reply = int(fd), bytes.fromhex(reply)

    @staticmethod
    def _child(node: Node, requests: bytes, replies_end: bytes, report_w: int,
               go_r: int) -> int:
        node.bind_worker(1)
        node.worker_turns = threading.Lock()  # the parent's may have been held at fork
        worker = Worker(node, 1)
        worker.start()
        ours, theirs = socket.socketpair()
        assert node.conn_table.admit(1)  # the acceptor's part
        fd = ours.fileno()
        worker.hand_off(ours, CHILD_PEER, node.listeners[0].name)
        theirs.settimeout(10)
        reply = ask(theirs, requests, replies_end) if requests else b""
        while not worker.conns:
            time.sleep(0.01)
        os.write(report_w, b"%d %s\n" % (fd, reply.hex().encode()))
        os.read(go_r, 1)
        theirs.close()
        while worker.conns:  # the worker sees the close and takes it out of the table
            time.sleep(0.01)
        worker.stop()
        worker.join(5)
        return 0

    def finish(self) -> None:
        os.write(self.go, b"x")
        os.close(self.go)
        assert os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1]) == 0


def test_stats_conns_and_counters_list_every_process_connection(node: Node) -> None:
    with client(node) as s:
        before = stats(s)
        other = OtherWorker(node, b"version\r\n", b"\r\n")
        try:
            assert other.reply.startswith(b"VERSION")
            cid = node.conn_table.id_stride + other.fd
            conns = stats(s, b"conns")
            assert conns[f"{cid}:addr"] == CHILD_PEER
            assert conns[f"{cid}:listen_addr"] == node.listeners[0].name
            assert conns[f"{cid}:state"] == "conn_waiting"
            own = s.getsockname()[1]
            mine = [k.split(":")[0] for k, v in conns.items() if v == f"tcp:127.0.0.1:{own}"]
            assert conns[f"{mine[0]}:state"] == "conn_parse_cmd"  # the one asking
            during = stats(s)
            assert int(during["curr_connections"]) == int(before["curr_connections"]) + 1
            assert int(during["total_connections"]) == int(before["total_connections"]) + 1
        finally:
            other.finish()
        after = stats(s)
        assert f"{cid}:addr" not in stats(s, b"conns")
        assert after["curr_connections"] == before["curr_connections"]


@pytest.mark.parametrize("node", [{"max_connections": 2}], indirect=True)
def test_the_connection_limit_counts_every_process(node: Node) -> None:
    first = client(node)
    other = OtherWorker(node, b"", b"")
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as refused:
            assert ask(refused, b"", b"\r\n") == b"ERROR Too many open connections\r\n"
        assert int(stats(first)["rejected_connections"]) == 1
    finally:
        other.finish()
    deadline = time.monotonic() + 5
    while int(stats(first)["curr_connections"]) > 1:  # the child's close is counted
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with client(node):  # room again
        pass
    first.close()


def test_a_watcher_sees_events_of_another_process_with_its_connection_id(node: Node) -> None:
    with client(node) as w, client(node) as s:
        assert ask(w, b"watch connevents fetchers mutations\r\n") == b"OK\r\n"
        other = OtherWorker(node, b"set w:1 0 0 2\r\nhi\r\nget w:1\r\n", b"END\r\n")
        try:
            assert other.reply == b"STORED\r\nVALUE w:1 0 2\r\nhi\r\nEND\r\n"
            cid = node.conn_table.id_stride + other.fd
            conns = stats(s, b"conns")
            watcher = [k.split(":")[0] for k, v in conns.items()
                       if v == f"tcp:127.0.0.1:{w.getsockname()[1]}"][0]
            assert conns[f"{watcher}:state"] == "conn_watch"
        finally:
            other.finish()
        ask(s, b"get w:1\r\n", b"END\r\n")
        own = [k.split(":")[0] for k, v in stats(s, b"conns").items()
               if v == f"tcp:127.0.0.1:{s.getsockname()[1]}"][0]
        # the parent's own get (ring 0), and everything worker 1 logged before it
        buf = read_until(w, rb"(?s)(?=.*type=item_get key=w%3A1 status=found clsid=1 cfd="
                         + own.encode() + rb" )(?=.*conn_close rip=10\.9\.8\.7)")
        ring1 = rb"ts=\d+\.\d+ gid=1\d{12} "  # logged by worker 1: its ring's gids
        assert re.search(ring1 + rb"type=conn_new rip=10\.9\.8\.7 rport=4242 transport=tcp "
                         rb"cfd=%d\n" % cid, buf), buf
        assert re.search(ring1 + rb"type=item_store key=w%%3A1 status=stored cmd=set ttl=0 "
                         rb"clsid=1 cfd=%d size=2\n" % cid, buf), buf
        assert re.search(ring1 + rb"type=item_get key=w%%3A1 status=found clsid=1 cfd=%d "
                         rb"size=2\n" % cid, buf), buf
        assert re.search(ring1 + rb"type=conn_close rip=10\.9\.8\.7 rport=4242 "
                         rb"transport=tcp reason=normal cfd=%d\n" % cid, buf), buf
        assert int(stats(s)["log_watchers"]) == 1


def test_stats_detail_sums_the_prefix_counts_of_every_process(node: Node) -> None:
    with client(node) as s:
        assert ask(s, b"stats detail on\r\n") == b"OK\r\n"
        other = OtherWorker(node, b"set a:1 0 0 1\r\nx\r\nget a:1 a:2\r\ndelete a:1\r\n",
                            b"DELETED\r\n")
        other.finish()
        ask(s, b"get a:3\r\n", b"END\r\n")
        assert ask(s, b"stats detail dump\r\n", b"END\r\n") == (
            b"PREFIX a get 3 hit 1 set 1 del 1\r\nEND\r\n")
        assert ask(s, b"stats detail off\r\n") == b"OK\r\n"
        other = OtherWorker(node, b"get a:1\r\n", b"END\r\n")  # off in every process now
        other.finish()
        assert ask(s, b"stats detail dump\r\n", b"END\r\n") == (
            b"PREFIX a get 3 hit 1 set 1 del 1\r\nEND\r\n")

"""Worker bookkeeping driven by hand (no thread started), over socketpairs.

A connection that yielded (-R) waits in the ready list. If it closes and the next accepted
connection gets the same fd number (the OS hands out the lowest free one), running the ready
list must not mistake the dead connection for the live one. And a request that raises costs
its own connection, not the worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from memcache_server.app import Node
from memcache_server.commands.session import Session
from memcache_server.commands.table import HANDLERS
from memcache_server.config import ServerConfig
from memcache_server.server.worker import Worker


@pytest.fixture
def worker() -> Iterator[Worker]:
    node = Node(ServerConfig(threads=1, reqs_per_event=2))
    w = node.workers[0]
    yield w
    for conn in list(w.conns.values()):
        w._close(conn)
    w.poller.close()
    os.close(w._wake_r)
    os.close(w._wake_w)


def test_a_queued_dead_connection_does_not_touch_its_fds_successor(worker: Worker) -> None:
    server_a, client_a = socket.socketpair()
    worker._add(server_a, "unix:a", "unix:test")
    conn_a = worker.conns[server_a.fileno()]
    fd = conn_a.fd
    client_a.sendall(b"version\r\n" * 10)
    worker._on_readable(conn_a)  # -R 2: two answered, the rest waits in the ready list
    assert worker.ready == [conn_a]
    worker._close(conn_a)  # the client went away before its turn came back
    client_a.close()
    server_b, client_b = socket.socketpair()
    try:
        assert server_b.fileno() == fd  # the successor got the same fd number
        worker._add(server_b, "unix:b", "unix:test")
        conn_b = worker.conns[fd]
        counted = worker.node.counters.curr_connections
        worker._handle([], False)  # runs the ready list
        assert worker.conns.get(fd) is conn_b
        assert worker.node.counters.curr_connections == counted  # nothing closed twice
        client_b.sendall(b"version\r\n")
        worker._on_readable(conn_b)
        client_b.settimeout(2)
        assert client_b.recv(100) == b"VERSION 1.6.18\r\n"
    finally:
        client_b.close()


def test_a_failing_request_costs_its_connection_only(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in one command must not end the worker thread and strand its other clients."""

    def broken(session: Session, tokens: list[bytes]) -> None:
        raise RuntimeError("a bug in a command handler")

    monkeypatch.setitem(HANDLERS, b"broken", broken)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for i, (server, _) in enumerate(pairs):
            worker._add(server, f"unix:{i}", "unix:test")
        (bad_server, bad_client), (good_server, good_client) = pairs
        bad_client.sendall(b"version\r\nbroken\r\nversion\r\n")
        worker._on_readable(worker.conns[bad_server.fileno()])
        bad_client.settimeout(2)
        assert bad_client.recv(100) == b""  # closed, nothing half-written
        assert "a bug in a command handler" in capsys.readouterr().err
        good_client.sendall(b"version\r\n")
        worker._on_readable(worker.conns[good_server.fileno()])
        good_client.settimeout(2)
        assert good_client.recv(100) == b"VERSION 1.6.18\r\n"
    finally:
        for _, client in pairs:
            client.close()


def test_under_the_gil_one_loop_serves_whatever_t_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from memcache_server import report

    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("a free-threaded Python runs -t loops")
    monkeypatch.delenv("MEMCACHE_SERVER_GIL_LOOPS", raising=False)
    node = Node(ServerConfig(threads=4))
    assert len(node.workers) == 1
    assert dict(report.general_stats(node))["threads"] == 4  # stats report -t as given
    settings = dict(report.settings_stats(node))
    assert settings["num_threads"] == 4
    monkeypatch.setenv("MEMCACHE_SERVER_GIL_LOOPS", "3")
    measuring = Node(ServerConfig(threads=4))
    assert len(measuring.workers) == 3
    for w in node.workers + measuring.workers:  # never started: close what they opened
        w.poller.close()
        os.close(w._wake_r)
        os.close(w._wake_w)

"""Helpers for cluster tests: a config node and member nodes as real processes on loopback.

Every process is tracked by a ``Cluster`` and stopped by its PID when the test ends. Waiting is
always bounded (a deadline and a poll interval): the tests run on a shared, loaded machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from procs import ROOT, ServerProc, start_node, wait_listening

from memcache_server.discovery.document import ClusterDocument, parse_config_reply

T = TypeVar("T")
HOST = "127.0.0.1"


def start_config_node(
    state_file: Path | None, *args: str, port: int = 0, timeout: float = 15.0
) -> ServerProc:
    """``memcache-server config-node`` on loopback (``port`` 0: a free one, printed on stdout);
    waits until it accepts connections. No ``state_file``: ``args`` say where membership is."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "config-node", "-l", HOST, "-p", str(port)]
    if state_file is not None:
        cmd += ["--state-file", str(state_file)]
    cmd += args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    if port == 0:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.wait(timeout)
            raise RuntimeError(f"config node did not start: {err}")
        port = int(line)
    wait_listening(HOST, port, timeout)
    return ServerProc(proc, HOST, port)


def request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and return what ONE recv() gives back (the single-send property: a reply
    written with one send arrives whole on loopback)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        return s.recv(1 << 20)


def config_get(port: int) -> ClusterDocument | None:
    return parse_config_reply(request(port, b"config get cluster\r\n"))


def version_of(port: int) -> int:
    try:
        doc = config_get(port)
    except OSError:
        return -1
    return doc.version if doc else 0


def stats_of(port: int) -> dict[str, str]:
    with socket.create_connection((HOST, port), timeout=5.0) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        deadline = time.monotonic() + 5
        while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
            buf += s.recv(65536)
    return {
        f[1]: f[2]
        for line in buf.decode().split("\r\n")
        if (f := line.split(" ", 2)) and f[0] == "STAT"
    }


def wait_for(
    what: str, fn: Callable[[], T | None], timeout: float = 15.0, every: float = 0.05
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def start_member(join: str, interval: float, drain: float, *args: str) -> ServerProc:
    """A small cache node (1 thread, 8 MB) joined to the config node(s) ``join``."""
    return start_node(
        "-t",
        "1",
        "-m",
        "8",
        "--join",
        join,
        "--heartbeat-interval",
        str(interval),
        "--drain-seconds",
        str(drain),
        *args,
    )


def ports_in(doc: ClusterDocument | None) -> set[int]:
    return {n.port for n in doc.nodes} if doc else set()


class Cluster:
    """A config node and its members; ``close()`` stops every process it started, by PID."""

    def __init__(self, tmp: Path, timeout: float = 5.0, interval: float = 0.2) -> None:
        self.tmp = tmp
        self.state = tmp / "cluster.state"
        self.timeout = timeout
        self.interval = interval
        self.config: ServerProc | None = None
        self.nodes: list[ServerProc] = []
        self._all: list[ServerProc] = []

    def start_config(self, *args: str) -> ServerProc:
        """Start the config node; a restart comes back on the same port (nodes know it)."""
        port = self.config.port if self.config else 0
        self.config = start_config_node(
            self.state, "--heartbeat-timeout", str(self.timeout), *args, port=port
        )
        self._all.append(self.config)
        return self.config

    def add_node(self, *args: str, drain: float = 1.0) -> ServerProc:
        assert self.config is not None
        node = start_member(f"{HOST}:{self.config.port}", self.interval, drain, *args)
        self.nodes.append(node)
        self._all.append(node)
        return node

    def close(self) -> None:
        """Stop the nodes together (each drains in parallel), then the config node."""
        nodes = [p for p in self._all if p is not self.config and p.proc.poll() is None]
        for p in nodes:
            try:
                os.kill(p.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self._all:
            p.stop(timeout=10)

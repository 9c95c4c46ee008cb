"""Project-private membership commands, and a small blocking client for them.

These commands exist only on our config node and are deliberately outside the ElastiCache
protocol (the ``cluster_`` prefix is no memcached or ElastiCache command)::

    cluster_join <hostname> <ip|-> <port> <held_version> [<token>]       -> a `config get` reply
    cluster_heartbeat <hostname> <ip|-> <port> <held_version> [<token>]  -> a `config get` reply
    cluster_leave <hostname> <port> [<token>]                            -> a `config get` reply
    cluster_remove <hostname> <port> [<token>]                           -> DELETED | NOT_FOUND
    cluster_nodes                                                        -> CLUSTER/NODE lines, END

Join and heartbeat answer with the current document exactly as ``config get cluster`` does, so
a node learns new versions by pulling: nothing ever writes to a cache node's data port.
``EndpointConnection`` is used by the cache node's membership thread and by the operator CLI;
every call has a connect and read timeout.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from memcache_server.discovery.document import MAX_DOCUMENT, NodeAddress
from memcache_server.protocol.address import split_host_port

__all__ = [
    "JOIN",
    "HEARTBEAT",
    "LEAVE",
    "REMOVE",
    "NODES",
    "register_line",
    "leave_line",
    "remove_line",
    "ReplyError",
    "EndpointConnection",
    "NodeRow",
    "parse_listing",
    "split_host_port",
]

JOIN = b"cluster_join"
HEARTBEAT = b"cluster_heartbeat"
LEAVE = b"cluster_leave"
REMOVE = b"cluster_remove"
NODES = b"cluster_nodes"

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 10_000
ERROR_PREFIXES = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
# replies that run over several lines until END (the rest are one line)
MULTI_LINE = (b"STAT ", b"CLUSTER ", b"NODE ", b"VALUE ", b"CONFIG ")


def _tail(token: str | None) -> bytes:
    return b" " + token.encode("ascii") if token else b""


def register_line(address: NodeAddress, held_version: int, token: str | None, fresh: bool) -> bytes:
    cmd = JOIN if fresh else HEARTBEAT
    ip = address.ip or "-"
    return b"%b %b %b %d %d%b\r\n" % (
        cmd,
        address.hostname.encode("ascii"),
        ip.encode("ascii"),
        address.port,
        held_version,
        _tail(token),
    )


def leave_line(hostname: str, port: int, token: str | None) -> bytes:
    return b"%b %b %d%b\r\n" % (LEAVE, hostname.encode("ascii"), port, _tail(token))


def remove_line(hostname: str, port: int, token: str | None) -> bytes:
    return b"%b %b %d%b\r\n" % (REMOVE, hostname.encode("ascii"), port, _tail(token))


class ReplyError(Exception):
    """The server answered with an error line (or something that is no reply at all)."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line.rstrip(b"\r\n").decode("latin-1"))
        self.line = line


class EndpointConnection:
    """One blocking connection to a config node (or a cache node). Not thread-safe."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self) -> EndpointConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, line: bytes) -> bytes:
        """Send one request line and return its whole reply; raises ReplyError on an error."""
        self.sock.sendall(line)
        return self.read_reply()

    def _line(self) -> bytes:
        line = self.reader.readline(MAX_REPLY_LINE)
        if not line:
            raise ConnectionError("connection closed by the server")
        if not line.endswith(b"\n"):
            raise ReplyError(line[:80])
        return line

    def read_reply(self) -> bytes:
        first = self._line()
        if first.startswith(ERROR_PREFIXES):
            raise ReplyError(first)
        if not first.startswith(MULTI_LINE):
            return first
        parts = [first]
        line = first
        for _ in range(MAX_REPLY_LINES):
            if line.startswith((b"CONFIG ", b"VALUE ")):
                n = line.split(b" ")[-1].strip()
                if not n.isdigit() or int(n) > MAX_DOCUMENT:
                    raise ReplyError(line[:80])
                block = self.reader.read(int(n) + 2)
                if len(block) != int(n) + 2:
                    raise ConnectionError("connection closed inside a data block")
                parts.append(block)
            line = self._line()
            parts.append(line)
            if line == b"END\r\n":
                return b"".join(parts)
        raise ReplyError(b"reply too long")


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One member as `cluster_nodes` lists it."""

    hostname: str
    ip: str
    port: int
    state: str
    age: float


def parse_listing(reply: bytes) -> tuple[int, list[NodeRow]]:
    """Parse a `cluster_nodes` reply into (version, rows)."""
    lines = reply.split(b"\r\n")
    head = lines[0].split(b" ")
    if len(head) != 3 or head[0] != b"CLUSTER" or not head[1].isdigit():
        raise ReplyError(lines[0])
    rows = []
    for line in lines[1:]:
        if line == b"END":
            break
        f = line.decode("ascii").split(" ")
        if len(f) != 6 or f[0] != "NODE":
            raise ReplyError(line)
        rows.append(NodeRow(f[1], "" if f[2] == "-" else f[2], int(f[3]), f[4], float(f[5])))
    return int(head[1]), rows

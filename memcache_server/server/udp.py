"""The UDP port (-U): sockets bound where the node binds its listeners, served by the workers.

The node opens one datagram socket per -l address in ``bind()``, before any worker starts, so
worker processes forked later inherit them. Every worker registers every UDP socket in its own
poller and reads with non-blocking ``recvfrom``: the kernel hands each datagram to one reader and
the others see EAGAIN, so no datagram is served twice and no hand-off between workers is needed.
Each datagram is a complete request batch (``commands/udp.py``); its replies go back to the
sender's address. Rules: an endpoint is used only by the worker that owns it; it never blocks
longer than ``SEND_WAIT`` seconds on a full send buffer and drops the rest of that reply then,
as any UDP hop may.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable, Sequence

from memcache_server.commands.udp import UdpSession
from memcache_server.protocol.address import split_host_port
from memcache_server.protocol.udp import UDP_READ_SIZE, parse_request
from memcache_server.stats import BYTES_READ, BYTES_WRITTEN, ThreadStats

__all__ = ["open_udp_sockets", "UdpEndpoint", "DATAGRAMS_PER_EVENT", "SEND_WAIT"]

DATAGRAMS_PER_EVENT = 20  # datagrams read per readiness event before serving other sockets
SEND_WAIT = 0.1  # seconds a full send buffer is waited for before the rest of a reply is dropped
_SNDBUF_MAX = 1 << 26  # memcached's maximize_sndbuf: the largest buffer the kernel grants

NewSession = Callable[[ThreadStats, int, str], UdpSession]


def open_udp_sockets(listen: Sequence[str], port: int) -> list[socket.socket]:
    """Bind a datagram socket on every -l address at ``port`` (non-blocking). Raises OSError
    with memcached's words when one cannot be bound."""
    out: list[socket.socket] = []
    for entry in listen:
        host, p = split_host_port(entry, port, port_zero=True)
        infos = socket.getaddrinfo(host, p, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, socktype, proto, _, addr = infos[0]
        s = socket.socket(family, socktype, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _maximize_sndbuf(s)
        try:
            s.bind(addr)
        except OSError as exc:
            s.close()
            for other in out:
                other.close()
            raise OSError(
                exc.errno, f"failed to listen on UDP port {p}: {exc.strerror}"
            ) from None
        s.setblocking(False)
        out.append(s)
    return out


def _maximize_sndbuf(s: socket.socket) -> None:
    """A large reply is many datagrams sent back to back: ask for the biggest send buffer the
    kernel allows, as memcached does (it silently caps at net.core.wmem_max)."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_MAX)


class UdpEndpoint:
    """One UDP socket as one worker serves it."""

    __slots__ = ("sock", "stats", "new_session", "reqs", "_buf", "_view")

    def __init__(
        self, sock: socket.socket, stats: ThreadStats, new_session: NewSession, reqs: int
    ) -> None:
        self.sock = sock
        self.stats = stats
        self.new_session = new_session
        self.reqs = reqs  # requests run between sends (-R), a datagram may hold more
        self._buf = bytearray(UDP_READ_SIZE)
        self._view = memoryview(self._buf)

    def serve(self) -> None:
        """Answer the datagrams waiting now (at most ``DATAGRAMS_PER_EVENT``)."""
        for _ in range(DATAGRAMS_PER_EVENT):
            try:
                n, addr = self.sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued by an earlier send: not this datagram's
            if n > 8:
                self.stats[BYTES_READ] += n  # memcached counts the header too
            request = parse_request(self._view[:n].tobytes())
            if request is not None:
                self._answer(request[0], request[1], addr)

    def _answer(self, request_id: int, data: bytes, addr: tuple[str, int]) -> None:
        session = self.new_session(self.stats, request_id, f"udp:{addr[0]}:{addr[1]}")
        session.framer.feed(data)
        while True:
            more = session.process(self.reqs)
            if not self._send(session.take_datagrams(), addr):
                return
            if not more:
                return

    def _send(self, datagrams: list[bytes], addr: tuple[str, int]) -> bool:
        """Send in order; False once the socket stayed full for ``SEND_WAIT`` (rest dropped)."""
        sock = self.sock
        stats = self.stats
        for dg in datagrams:
            for _ in range(2):
                try:
                    sock.sendto(dg, addr)
                except (BlockingIOError, InterruptedError):
                    select.select([], [sock], [], SEND_WAIT)
                    continue
                except OSError:
                    return False  # unreachable peer, message too long: nothing more to do
                stats[BYTES_WRITTEN] += len(dg)
                break
            else:
                return False
        return True

"""Listening sockets and the acceptor thread that hands connections to workers round-robin.

The acceptor is the only thread that calls accept(). Past -c connections it does what memcached
does with maxconns_fast: answer ``ERROR Too many open connections`` and close at once.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import stat
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from memcache_server.protocol.address import split_host_port
from memcache_server.protocol.constants import TOO_MANY_CONNECTIONS

if TYPE_CHECKING:
    from memcache_server.server.connections import ConnectionTable
    from memcache_server.server.worker import Worker


class AcceptorContext(Protocol):
    """What the acceptor needs of its node: the -c check and the workers to deal to."""

    @property
    def workers(self) -> Sequence[Worker]: ...
    @property
    def conn_table(self) -> ConnectionTable: ...

__all__ = ["Acceptor", "open_listeners", "Listener"]


class Listener:
    """A bound, listening socket and the name `stats conns` shows for it.

    ``group``: with worker processes, one ``SO_REUSEPORT`` socket per worker slot bound to the
    same address (``group[0]`` is ``sock``), so the kernel spreads connections evenly over the
    workers by hashing each connection, instead of handing them to whichever process wakes
    first on one shared socket (measured: 50 connections landed 12/3/20/3 on four workers).
    The supervisor and the spawner keep every socket of the group open, so connections
    queued for a worker that died wait for its replacement instead of being refused."""

    __slots__ = ("sock", "name", "group")

    def __init__(self, sock: socket.socket, name: str,
                 group: list[socket.socket] | None = None) -> None:
        self.sock = sock
        self.name = name
        self.group = group if group is not None else [sock]

    def keep_only(self, slot: int) -> None:
        """In worker ``slot``'s process: accept on its own socket of the group, close the rest."""
        if len(self.group) < 2:
            return
        mine = self.group[slot % len(self.group)]
        for other in self.group:
            if other is not mine:
                other.close()
        self.sock = mine
        self.group = [mine]

    def close(self) -> None:
        for sock in self.group:
            with contextlib.suppress(OSError):
                sock.close()


def open_listeners(
    listen: Sequence[str], port: int, unix_socket: str | None, unix_mask: int, backlog: int,
    per_address: int = 1,
) -> list[Listener]:
    """Bind every -l address (or the -s UNIX socket). Raises OSError with a clear message.

    ``per_address`` > 1 (worker processes): that many ``SO_REUSEPORT`` sockets per TCP address
    (see ``Listener``); a UNIX socket stays one socket the workers share."""
    out: list[Listener] = []
    if unix_socket:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(unix_socket).st_mode):
                os.unlink(unix_socket)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(~unix_mask & 0o777)
        try:
            s.bind(unix_socket)
        finally:
            os.umask(old)
        s.listen(backlog)
        return [Listener(s, f"unix:{unix_socket}")]
    chosen = port
    for entry in listen:
        host, p = split_host_port(entry, chosen, port_zero=True)
        infos = socket.getaddrinfo(host, p, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, socktype, proto, _, addr = infos[0]
        group: list[socket.socket] = []
        try:
            if per_address > 1:
                # SO_REUSEPORT would let this node share a port another one (of this user)
                # listens on: a plain bind first proves the address free, as memcached's does
                addr = _probe(family, socktype, proto, addr)
            for _ in range(max(per_address, 1)):
                s = socket.socket(family, socktype, proto)
                group.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if per_address > 1:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr if len(group) == 1 else group[0].getsockname())
                s.listen(backlog)
        except OSError as exc:
            for sock in group:
                sock.close()
            for lst in out:
                lst.close()
            raise OSError(
                exc.errno, f"failed to listen on {entry} port {p}: {exc.strerror}"
            ) from None
        s = group[0]
        bound = s.getsockname()
        if chosen == 0:
            chosen = int(bound[1])  # -p 0: every address shares the port picked for the first
        out.append(
            Listener(
                s,
                f"tcp:{bound[0]}:{bound[1]}"
                if family == socket.AF_INET
                else f"tcp6:[{bound[0]}]:{bound[1]}",
                group,
            )
        )
    return out


class Acceptor(threading.Thread):
    """Accepts on every listener and deals connections to the workers."""

    def __init__(self, node: AcceptorContext, listeners: list[Listener]) -> None:
        super().__init__(name="acceptor", daemon=True)
        self.node = node
        self.listeners = listeners
        self.selector = selectors.DefaultSelector()
        for lst in listeners:
            lst.sock.setblocking(False)
            self.selector.register(lst.sock, selectors.EVENT_READ, lst)
        self._stop_r, self._stop_w = os.pipe()
        self.selector.register(self._stop_r, selectors.EVENT_READ, None)
        self.next_worker = 0
        # Connections taken per wake-up. One, where several processes accept on one socket:
        # each wake-up takes one and leaves the rest to the others woken with it, so a burst
        # is spread instead of drained by whichever process ran first.
        self.batch = 64

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def run(self) -> None:
        node = self.node
        workers = node.workers
        try:
            while True:
                for key, _ in self.selector.select():
                    lst = key.data
                    if lst is None:
                        return
                    self._accept_all(lst, node, workers)
        finally:
            for lst in self.listeners:
                with contextlib.suppress(OSError):
                    lst.sock.close()
            self.selector.close()
            os.close(self._stop_r)
            os.close(self._stop_w)

    def _accept_all(
        self, lst: Listener, node: AcceptorContext, workers: Sequence[Worker]
    ) -> None:
        for _ in range(self.batch):
            try:
                sock, addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and friends: try again on the next event
            worker = workers[self.next_worker]
            if not node.conn_table.admit(worker.index):
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(TOO_MANY_CONNECTIONS)
                sock.close()
                continue
            if isinstance(addr, tuple):
                peer = f"{'tcp' if sock.family == socket.AF_INET else 'tcp6'}:{addr[0]}:{addr[1]}"
            else:
                peer = lst.name
            self.next_worker = (self.next_worker + 1) % len(workers)
            worker.hand_off(sock, peer, lst.name)


def _probe(family: int, socktype: int, proto: int, addr: tuple[Any, ...]) -> tuple[Any, ...]:
    """Bind and listen on ``addr`` without SO_REUSEPORT, then let go: raises OSError when it
    is taken; the address bound (with the port the kernel chose for port 0)."""
    with socket.socket(family, socktype, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(addr)
        probe.listen(1)
        return tuple(probe.getsockname())

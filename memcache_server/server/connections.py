"""The node's open connections and its connection counters.

-c is enforced here at accept time; the set is what `stats conns` lists; opening and closing
a connection feeds the ``connevents`` log stream and the -vv lines. Shared by the acceptor
thread (``admit``) and every worker (``opened``/``closed``): one lock guards the set and the
counters it changes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server import watch

if TYPE_CHECKING:
    from memcache_server.server.worker import Connection
    from memcache_server.stats import ServerCounters

__all__ = ["ConnectionTable"]


class ConnectionTable:
    """Open connections by identity, and memcached's connection counters."""

    def __init__(
        self,
        max_connections: int,
        counters: ServerCounters,
        logger: watch.Logger,
        verbosity: Callable[[], int],
    ) -> None:
        self.max_connections = max_connections
        self.counters = counters
        self.logger = logger
        self.verbosity = verbosity  # read at each open/close: `verbosity` changes it at run time
        self.listeners = 0
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}

    def listening(self, count: int) -> None:
        """memcached counts its listening sockets as connections too."""
        self.listeners = count
        self.counters.total_connections = count
        self.counters.connection_structures = count

    def udp_connections(self, count: int) -> None:
        """memcached opens a connection per worker thread on each UDP socket: they count as
        current, total and structures from the start."""
        with self._lock:
            self.counters.curr_connections += count
            self.counters.total_connections += count
            self.counters.connection_structures += count

    def admit(self) -> bool:
        """Called by the acceptor for each new connection: enforce -c."""
        counters = self.counters
        with self._lock:
            if counters.curr_connections >= self.max_connections:
                counters.rejected_connections += 1
                return False
            counters.curr_connections += 1
            counters.total_connections += 1
            structures = counters.curr_connections + self.listeners
            if structures > counters.connection_structures:
                counters.connection_structures = structures
            return True

    def opened(self, conn: Connection) -> None:
        with self._lock:
            self._conns[id(conn)] = conn
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self.logger, True, conn.peer, conn.fd)
        if self.verbosity() > 1:
            print(f"<{conn.fd} new auto-negotiating client connection", file=sys.stderr)

    def closed(self, conn: Connection) -> None:
        with self._lock:
            self._conns.pop(id(conn), None)
            self.counters.curr_connections -= 1
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self.logger, False, conn.peer, conn.fd)
        if self.verbosity() > 1:
            print(f"<{conn.fd} connection closed.", file=sys.stderr)

    def all(self) -> list[Connection]:
        with self._lock:
            return sorted(self._conns.values(), key=lambda c: c.fd)

    def reset_counts(self) -> None:
        """``stats reset``: the connection totals memcached zeroes."""
        with self._lock:
            self.counters.total_connections = 0
            self.counters.rejected_connections = 0

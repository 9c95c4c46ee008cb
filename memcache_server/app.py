"""Builds a node from its config and wires the parts together; owns start and shutdown.

The command line (``cli.run_node``) calls ``bind()``, ``start()`` (the clock, crawler,
rebalancer and LRU maintainer threads, the workers, the acceptor), then ``wait()`` until a stop
request (SIGTERM/SIGINT or ``shutdown``), then ``shutdown()``. Signal handlers only set a
flag. Shutdown: stop accepting, let workers answer what they already read, exit 0. Handlers
and workers never get the node itself: sessions get its parts (``NodeParts``) and the node as
an ``AdminContext``; workers see it as a ``WorkerContext``. Imported by nothing but the command
line and tests.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from memcache_server import watch
from memcache_server.auth import AuthTable
from memcache_server.commands.admin import OpsState
from memcache_server.commands.auth import AuthSession
from memcache_server.commands.cluster import ClusterView
from memcache_server.commands.context import NodeParts, new_store
from memcache_server.commands.session import Session
from memcache_server.config import EMULATED_VERSION, ServerConfig
from memcache_server.server.connections import ConnectionTable
from memcache_server.server.listener import Acceptor, Listener, open_listeners
from memcache_server.server.tls import TLSServer, TLSWorker
from memcache_server.server.worker import Connection, Worker
from memcache_server.stats import PrefixStats, ServerCounters, ThreadStats
from memcache_server.storage.clock import Clock
from memcache_server.storage.crawler import Crawler
from memcache_server.storage.maintainer import Maintainer
from memcache_server.storage.rebalancer import Rebalancer

if TYPE_CHECKING:
    from memcache_server.metrics_http import MetricsServer

__all__ = ["Node"]


class Node:
    """One cache node: builds its parts, starts and stops them; node-wide operations."""

    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.version = EMULATED_VERSION
        self.verbosity = config.verbosity
        self.store = new_store(config, self.clock)
        self.table = self.store.table
        # the cluster document this node serves; with --join, the command line starts the
        # membership that fills it once the node serves
        cluster = ClusterView(config.allow_config_writes, member=config.join is not None)
        # what item handlers reach (sessions get these parts, never the node)
        self.parts = NodeParts(config, self.clock, self.store, cluster)
        self.meta = self.parts.meta
        self.cluster = cluster
        self.logger = self.parts.logger
        self.counters = ServerCounters()
        self.conn_table = ConnectionTable(
            config.max_connections, self.counters, self.logger, lambda: self.verbosity
        )
        # -Y: connections start unauthenticated (raises AuthError if the file is unusable)
        self.auth = AuthTable(config.auth_file) if config.auth_file else None
        self._reload_requested = False
        # -Z: TCP connections speak TLS (raises TLSError if the certificates are unusable)
        self.tls = TLSServer.from_config(config, self.clock) if config.enable_ssl else None
        # Under a GIL, workers take turns serving batches (see server/worker.py for why), so a
        # second event loop adds no concurrency to request handling, only hand-offs: measured
        # on 2 cores, -t 2 and -t 4 served 0.8 and 0.5-0.75 of -t 1. With the GIL one loop
        # serves every connection whatever -t says (stats still report -t); without it, -t
        # loops run in parallel. MEMCACHE_SERVER_GIL_LOOPS=N overrides, for measuring.
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self.worker_turns: threading.Lock | None = threading.Lock() if gil else None
        loops = config.threads
        if gil:
            wanted = os.environ.get("MEMCACHE_SERVER_GIL_LOOPS", "1")
            loops = min(loops, int(wanted) if wanted.isdigit() and int(wanted) > 0 else 1)
        worker_class = TLSWorker if self.tls is not None else Worker
        self.workers = [worker_class(self, i) for i in range(max(loops, 1))]
        self.listeners: list[Listener] = []
        self.acceptor: Acceptor | None = None
        self.port = config.port
        self.crawler = Crawler(self.store, config.lru_crawler_sleep, enabled=config.lru_crawler)
        self.rebalancer = Rebalancer(
            self.store,
            config.slab_reassign,
            config.slab_automove,
            config.slab_automove_ratio,
            config.slab_automove_window,
            maintainer=config.lru_maintainer,
        )
        # -o lru_maintainer (the default): the segmented LRU's background thread
        self.maintainer = Maintainer(self.store) if config.lru_maintainer else None
        logger = self.logger
        self.rebalancer.on_decision = lambda src, dst: watch.log_slab_move(logger, src, dst)
        self.ops = OpsState(config)
        # Per-prefix stats while `stats detail` is on (or -D given); None keeps them off the
        # request path at the cost of one attribute test.
        self.set_detail(config.detail_enabled)
        self._stop = threading.Event()
        self._graceful = True
        # Set by request_shutdown, which runs inside signal handlers: plain flags, no lock (a
        # second signal landing while a handler holds an Event's lock would deadlock).
        self._stop_requested = False
        self._hurry_requested = False  # a second stop request cuts the drain short
        self.metrics: MetricsServer | None = None  # the /metrics endpoint, when configured

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> None:
        self.listeners = open_listeners(
            self.config.listen,
            self.config.port,
            self.config.unix_socket,
            self.config.unix_mask,
            self.config.backlog,
        )
        if not self.config.unix_socket:
            self.port = int(self.listeners[0].sock.getsockname()[1])
        self.conn_table.listening(len(self.listeners))
        if self.config.metrics_listen is not None and self.metrics is None:
            # imported here: a node without metrics never loads prometheus-client
            from memcache_server.metrics_http import open_node_metrics

            self.metrics = open_node_metrics(self)

    def start(self) -> None:
        if not self.listeners:
            self.bind()
        for w in self.workers:
            w.start()
        self.acceptor = Acceptor(self, self.listeners)
        self.acceptor.start()
        threading.Thread(target=self._ticker, name="clock", daemon=True).start()
        if self.metrics is not None:
            self.metrics.start()
        self.crawler.start()  # idles while disabled, so `lru_crawler enable` can start it
        if self.config.slab_reassign:  # memcached starts no mover without slab_reassign
            self.rebalancer.start()
        if self.maintainer is not None:
            self.maintainer.start()

    def _ticker(self) -> None:
        while not self._stop.wait(1.0):
            self.clock.tick()
            if self._reload_requested:
                self._reload_requested = False
                self.reload_auth()

    def request_reload(self) -> None:
        """SIGHUP: re-read the auth file on the clock thread (a signal handler only sets a flag)."""
        self._reload_requested = True

    def reload_auth(self) -> None:
        if self.auth is None:
            return
        error = self.auth.reload()
        if error is not None:
            print(f"{error}; keeping the previous credentials", file=sys.stderr)

    def request_shutdown(self, graceful: bool = True) -> None:
        """Ask the main thread to stop. Safe in a signal handler: it only sets flags."""
        if self._stop_requested:
            self._hurry_requested = True
        self._graceful = graceful
        self._stop_requested = True

    def wait(self) -> None:
        while not (self._stop_requested or self._stop.is_set()):
            self._stop.wait(0.1)
        self._stop.set()

    @property
    def graceful(self) -> bool:
        """Whether the stop asked for (signal or ``shutdown graceful``) lets clients drain."""
        return self._graceful

    def hurry_requested(self) -> bool:
        """True once a second stop request asked to cut a drain short."""
        return self._hurry_requested

    def shutdown(self) -> None:
        """Stop accepting, finish what workers already read, close everything."""
        self._stop.set()
        if self.acceptor is not None:
            self.acceptor.stop()
            self.acceptor.join(5)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(10)
        self.crawler.stop()
        self.rebalancer.stop()
        if self.maintainer is not None:
            self.maintainer.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.logger.stop()

    @property
    def detail(self) -> PrefixStats | None:
        """The per-prefix counters while ``stats detail`` is on, else None."""
        return self.parts.detail

    def set_detail(self, on: bool) -> None:
        """``stats detail on|off`` (or -D): off keeps what was counted (dump still shows it)."""
        self.parts.detail = self.ops.prefix_stats if on else None
        self.parts.refresh_observed()

    def new_session(self, stats: ThreadStats, peer: str = "", fd: int = -1) -> Session:
        """A connection's session: the node's parts, and the node as its node-wide context."""
        if self.auth is not None:
            return AuthSession(self.parts, stats, peer, fd, self, self.auth)
        return Session(self.parts, stats, peer, fd, self)

    def connections(self) -> list[Connection]:
        """The open connections, by descriptor (``stats conns``)."""
        return self.conn_table.all()

    # ------------------------------------------------------------------ commands

    def set_verbosity(self, level: int) -> None:
        self.verbosity = level

    def log_input(self, fd: int, data: bytes) -> None:
        for line in data.split(b"\n"):
            text = line.rstrip(b"\r").decode("latin-1")
            if text:
                print(f"<{fd} {text}", file=sys.stderr)

    def refresh_certs(self) -> bytes:
        """``refresh_certs``: reload the TLS certificates for new connections."""
        return self.tls.refresh() if self.tls is not None else b"Error TLS not enabled\r\n"

    def hash_power_level(self) -> int:
        n = max(len(self.store.index), 1)
        level = 16
        while (1 << level) * 1.5 < n:
            level += 1
        return level

    def oldest_live_age(self) -> int:
        ol = self.store.oldest_live
        return max(0, self.clock.now - ol) if ol else 0

    def crawler_running(self) -> bool:
        return self.crawler.running

    def crawler_starts(self) -> int:
        return self.crawler.starts

    def reset_stats(self) -> None:
        """``stats reset``: the counters memcached zeroes (not the gauges)."""
        for w in self.workers:
            w.stats.reset()
        self.store.reset_stats()
        self.ops.prefix_stats.clear()
        self.conn_table.reset_counts()

"""Builds a node from its config and wires the parts together; owns start and shutdown.

The main thread calls ``Node.serve_forever()``; it starts the clock/crawler thread, the workers
and the acceptor, then waits for a stop request (SIGTERM/SIGINT or ``shutdown``). Signal handlers
only set a flag. Shutdown: stop accepting, let workers answer what they already read, exit 0.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from discovery.member import WILDCARDS, JoinSettings, MembershipClient, advertised_address
from discovery.scaling import Scaling
from discovery.view import ClusterView
from discovery.wire import split_host_port
from memcache_server import ops, report, watch
from memcache_server.auth import AuthTable
from memcache_server.auth_session import AuthSession
from memcache_server.config import EMULATED_VERSION, ServerConfig
from memcache_server.executor import Session
from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtoul32
from memcache_server.server.listener import Acceptor, Listener, open_listeners
from memcache_server.server.tls import TLSServer, TLSWorker
from memcache_server.server.worker import Connection, Worker
from memcache_server.stats import ServerCounters
from memcache_server.storage.clock import Clock
from memcache_server.storage.crawler import Crawler
from memcache_server.storage.metastore import MetaStore
from memcache_server.storage.rebalancer import Rebalancer
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Store, StoreLimits

if TYPE_CHECKING:
    from memcache_server.metrics_http import MetricsServer

__all__ = ["Node"]


class Node:
    """One cache node: the store, the threads, and the server-wide commands."""

    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.version = EMULATED_VERSION
        self.verbosity = config.verbosity
        self.table = SlabTable.build(
            config.growth_factor,
            config.chunk_size,
            config.effective_chunk_max,
            config.item_size_max,
            config.use_cas,
        )
        self.store = Store(
            self.table,
            StoreLimits(config.memory_limit, not config.disable_evictions, config.use_cas),
            self.clock,
            C.value_header,
        )
        self.store.key_offset = C.VALUE_KEY_OFFSET
        if config.track_sizes:
            self.store.track_sizes(True)
        self.meta = MetaStore(self.store)
        self.counters = ServerCounters()
        # -Y: connections start unauthenticated (raises AuthError if the file is unusable)
        self.auth = AuthTable(config.auth_file) if config.auth_file else None
        self.session_class: type[Session] = AuthSession if self.auth is not None else Session
        self._reload_requested = False
        # -Z: TCP connections speak TLS (raises TLSError if the certificates are unusable)
        self.tls = TLSServer.from_config(config, self.clock) if config.enable_ssl else None
        self._conn_lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
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
            maintainer="no_lru_maintainer" not in config.extended,
        )
        self.rebalancer.on_decision = lambda src, dst: watch.log_slab_move(self, src, dst)
        self.ops = ops.OpsState(self)
        # Per-prefix stats while `stats detail` is on (or -D given); None keeps them off the
        # request path at the cost of one attribute test.
        self.detail: ops.PrefixStats | None = (
            self.ops.prefix_stats if config.detail_enabled else None
        )
        self.logger = watch.Logger(self)
        # True while per-prefix stats or an item log stream is on: the item request paths test
        # only this attribute before doing any of that work.
        self.observed = False
        self.refresh_observed()
        self._stop = threading.Event()
        self._graceful = True
        # cluster discovery: the document this node serves, and its membership (with --join)
        self.cluster = ClusterView(config.allow_config_writes, member=config.join is not None)
        self.membership: MembershipClient | None = None
        self.scaling: Scaling | None = None  # --warm hand-overs around join and leave
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
        # memcached counts its listening sockets as connections too
        self.counters.total_connections = len(self.listeners)
        self.counters.connection_structures = len(self.listeners)
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
        if self.config.join:
            join = self.config.join
            if self.config.warm:
                self.scaling = self._scaling(join)
                self.scaling.warm_then(lambda: self._start_membership(join), self._stop)
            else:
                self._start_membership(join)

    def _scaling(self, join: str) -> Scaling:
        cfg = self.config
        address = advertised_address(cfg.advertise, cfg.listen, self.port)
        local = cfg.listen[0] if cfg.listen and cfg.listen[0] not in WILDCARDS else "127.0.0.1"
        window = cfg.drain_seconds
        return Scaling(
            self.cluster, split_host_port(join), address, (local, self.port), cfg.warm_rate, window
        )

    def _start_membership(self, join: str) -> None:
        """Register with the config node now that the node serves (never before)."""
        cfg = self.config
        host, port = split_host_port(join)
        settings = JoinSettings(
            host, port, cfg.cluster_token, cfg.heartbeat_interval, cfg.drain_seconds
        )
        address = advertised_address(cfg.advertise, cfg.listen, self.port)
        self.membership = MembershipClient(self.cluster, settings, address, cfg.verbosity)
        self.membership.start()

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

    def shutdown(self) -> None:
        """Leave the cluster and drain (members), stop accepting, finish what workers already
        read, close everything."""
        self._stop.set()
        if self.membership is not None:
            drain = self.config.drain_seconds if self._graceful else 0.0
            membership = self.membership

            def leave() -> None:
                membership.leave_and_drain(drain, lambda: self._hurry_requested)

            if self.scaling is not None and drain > 0:
                self.scaling.push_around(leave)
            else:
                leave()
            self.membership = None
        if self.acceptor is not None:
            self.acceptor.stop()
            self.acceptor.join(5)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(10)
        self.crawler.stop()
        self.rebalancer.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.logger.stop()

    def refresh_observed(self) -> None:
        """Recompute ``observed`` and the store's eviction hook after detail/watchers change."""
        self.observed = self.detail is not None or bool(self.logger.mask & watch.ITEM_STREAMS)
        if self.logger.mask & watch.EVICTIONS:
            self.store.on_evict = self._log_eviction
        else:
            self.store.on_evict = None

    def _log_eviction(
        self, key: bytes, fetched: bool, exp: int, atime: int, cid: int, size: int
    ) -> None:
        watch.log_eviction(self, key, fetched, exp, atime, cid, size)

    # ------------------------------------------------------------------ connections

    def admit(self) -> bool:
        """Called by the acceptor for each new connection: enforce -c."""
        with self._conn_lock:
            if self.counters.curr_connections >= self.config.max_connections:
                self.counters.rejected_connections += 1
                return False
            self.counters.curr_connections += 1
            self.counters.total_connections += 1
            structures = self.counters.curr_connections + len(self.listeners)
            if structures > self.counters.connection_structures:
                self.counters.connection_structures = structures
            return True

    def conn_opened(self, conn: Connection) -> None:
        with self._conn_lock:
            self._conns[id(conn)] = conn
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self, True, conn.peer, conn.fd)
        if self.verbosity > 1:
            print(f"<{conn.fd} new auto-negotiating client connection", file=sys.stderr)

    def conn_closed(self, conn: Connection) -> None:
        with self._conn_lock:
            self._conns.pop(id(conn), None)
            self.counters.curr_connections -= 1
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self, False, conn.peer, conn.fd)
        if self.verbosity > 1:
            print(f"<{conn.fd} connection closed.", file=sys.stderr)

    def connections(self) -> list[Connection]:
        with self._conn_lock:
            return sorted(self._conns.values(), key=lambda c: c.fd)

    # ------------------------------------------------------------------ commands

    def set_verbosity(self, level: int) -> None:
        self.verbosity = level

    def log_input(self, fd: int, data: bytes) -> None:
        for line in data.split(b"\n"):
            text = line.rstrip(b"\r").decode("latin-1")
            if text:
                print(f"<{fd} {text}", file=sys.stderr)

    def memory_limit_changed(self, limit: int) -> None:
        pass

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

    def stats_reply(self, args: list[bytes], session: object) -> bytes:
        if not args:
            return report.format_stats(report.general_stats(self))
        sub = args[0]
        if sub == b"settings":
            return report.format_stats(report.settings_stats(self))
        if sub == b"items":
            return report.format_stats(report.items_stats(self))
        if sub == b"slabs":
            return report.format_stats(report.slabs_stats(self))
        if sub == b"sizes":
            counts = self.store.size_counts()
            if counts is None:
                return b"STAT sizes_status disabled\r\nEND\r\n"
            return report.format_stats([(str(size), n) for size, n in counts])
        if sub == b"sizes_enable":  # memcached answers these two with one line and no END
            if not self.config.use_cas:  # it needs CAS to tell old items from new
                return b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n"
            self.store.track_sizes(True)
            return b"STAT sizes_status enabled\r\n"
        if sub == b"sizes_disable":
            self.store.track_sizes(False)
            return b"STAT sizes_status disabled\r\n"
        if sub == b"conns":
            fd = getattr(session, "fd", -1)
            for conn in self.connections():
                conn.state = "conn_parse_cmd" if conn.fd == fd else "conn_waiting"
            return report.format_stats(report.conns_stats(self))
        if sub == b"reset":
            for w in self.workers:
                w.stats.reset()
            self.store.reset_stats()
            self.ops.prefix_stats.clear()
            with self._conn_lock:
                self.counters.total_connections = 0
                self.counters.rejected_connections = 0
            return C.RESET
        if sub == b"cachedump":
            return self._cachedump(args)
        if sub == b"detail":
            return ops.stats_detail(self, args)
        return C.ERROR

    def _cachedump(self, args: list[bytes]) -> bytes:
        if not self.config.dump_enabled:
            return b"CLIENT_ERROR stats cachedump not allowed\r\n"
        if len(args) < 3:
            return b"CLIENT_ERROR bad command line\r\n"
        cid = strtoul32(args[1])
        limit = strtoul32(args[2])
        if cid is None or limit is None:
            return C.BAD_FORMAT
        if cid >= 64:
            return b"CLIENT_ERROR Illegal slab id\r\n"
        lines = [
            b"ITEM %b [%d b; %d s]\r\n" % (key, nbytes, exp)
            for key, nbytes, exp in self.store.dump_class(cid, limit)
        ]
        lines.append(C.END)
        return b"".join(lines)

    def config_reply(self, args: list[bytes]) -> bytes:
        return self.cluster.config_reply(args)

    # ------------------------------------------------------------------ entry point

    def serve_forever(self, announce: bool = False) -> int:
        self.bind()
        self.start()
        if announce:
            print(self.port, flush=True)
        try:
            self.wait()
        finally:
            self.shutdown()
        return 0

    def iter_workers(self) -> Iterator[Worker]:
        return iter(self.workers)


_ = time

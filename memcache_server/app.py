"""Builds a node from its config and wires the parts together; owns start and shutdown.

The command line (``cli.run_node``) calls ``bind()``, ``start()`` (the clock, crawler,
rebalancer and LRU maintainer threads, the workers, the acceptor), then ``wait()`` until a stop
request (SIGTERM/SIGINT or ``shutdown``), then ``shutdown()``. With worker processes
(``supervisor.py``) the supervisor calls ``start_background()`` instead, and each worker process
``become_worker(k)`` and ``start_serving()``; ``on_shutdown_request`` is how a worker's
``shutdown`` reaches it. Signal handlers only set a flag. Shutdown: stop accepting, let workers
answer what they already read, record a clean stop in the ``-e`` file, exit 0. Handlers and
workers never get the node itself: sessions get its parts (``NodeParts``) and the node as an
``AdminContext``; workers see it as a ``WorkerContext``. Imported by nothing but the command
line and tests.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server import watch
from memcache_server.auth import AuthTable
from memcache_server.commands.admin import OpsState
from memcache_server.commands.auth import AuthSession
from memcache_server.commands.cluster import ClusterView
from memcache_server.commands.context import NodeArea, NodeParts, new_store, worker_slots
from memcache_server.commands.session import Session
from memcache_server.commands.udp import UdpSession
from memcache_server.config import EMULATED_VERSION, ServerConfig
from memcache_server.server.connections import ConnectionTable, ConnInfo
from memcache_server.server.listener import Acceptor, Listener, open_listeners
from memcache_server.server.tls_certs import CertArea
from memcache_server.server.udp import open_udp_sockets
from memcache_server.server.worker import Connection, Worker
from memcache_server.stats import PrefixStats, ThreadStats, WorkerCounters
from memcache_server.storage.clock import Clock
from memcache_server.storage.crawler import Crawler
from memcache_server.storage.maintainer import Maintainer
from memcache_server.storage.rebalancer import Rebalancer
from memcache_server.storage.seglock import SegmentLock
from memcache_server.storage.settings import NodeSettings

if TYPE_CHECKING:
    from memcache_server.metrics_http import MetricsServer
    from memcache_server.server.tls import TLSServer

__all__ = ["Node"]

CLUSTER_LOCK_BYTE = 1  # the cluster document's writers lock this byte of the segment file


class Node:
    """One cache node: builds its parts, starts and stops them; node-wide operations."""

    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.main_pid = os.getpid()  # `stats` pid: the process the command line started
        self.version = EMULATED_VERSION
        # One segment holds the store and the node-wide state (counters, settings, clock,
        # cluster document, connections, log rings, prefix counters), so every worker process
        # forked from this node shares them.
        slots = worker_slots(config)
        reserve = ConnectionTable.reserve(config.max_connections, slots)
        if config.enable_ssl:  # the certificates a `refresh_certs` loaded, for every worker
            reserve += CertArea.NBYTES
        self.store = new_store(config, clock or Clock(), reserve)
        self.table = self.store.table
        # What every process of the node must see lives in the segment: counters, settings,
        # the clock (unless the caller brings its own, as tests do), the cluster document.
        self.shared = NodeArea(self.store.segment)
        if clock is None:
            started = self.store.clock.started  # an -e restart brought back the old start
            clock = Clock.in_area(self.shared.clock)
            clock.started = started
            self.store.clock = clock
        self.clock = clock
        self.settings = NodeSettings(self.shared.settings)
        self.settings.verbosity = config.verbosity
        # `shutdown` from a connection: by default this process's stop request; a node whose
        # workers are other processes replaces it (with a signal to the supervisor, say)
        self.on_shutdown: Callable[[bool], None] = self.request_shutdown
        # the cluster document this node serves; with --join, the command line starts the
        # membership that fills it once the node serves
        cluster = ClusterView(
            config.allow_config_writes,
            member=config.join is not None,
            area=self.shared.cluster,
            lock=SegmentLock(self.store.segment.fd, CLUSTER_LOCK_BYTE),
        )
        # what item handlers reach (sessions get these parts, never the node)
        self.parts = NodeParts(config, self.clock, self.store, cluster)
        self.parts.tracing = config.verbosity > 1
        self.meta = self.parts.meta
        self.cluster = cluster
        self.logger = self.parts.logger
        self.conn_table = ConnectionTable(
            config.max_connections, self.logger, lambda: self.verbosity, self.store.segment, slots
        )
        # -Y: connections start unauthenticated (raises AuthError if the file is unusable)
        self.auth = AuthTable(config.auth_file) if config.auth_file else None
        self._reload_requested = False
        # -Z: TCP connections speak TLS (raises TLSError if the certificates are unusable)
        self.tls: TLSServer | None = None
        if config.enable_ssl:
            # imported here: a node without TLS never loads ssl (its libraries cost ~2 MB)
            from memcache_server.server.tls import TLSServer

            self.tls = TLSServer.from_config(config, self.clock, self.store.segment)
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
        worker_class = self._worker_class()
        self.workers = [worker_class(self, i) for i in range(max(loops, 1))]
        self.listeners: list[Listener] = []
        self.udp_sockets: list[socket.socket] = []  # -U: bound with the listeners, read by workers
        self.acceptor: Acceptor | None = None
        self.port = config.port
        self.crawler = Crawler(
            self.store,
            config.lru_crawler_sleep,
            enabled=config.lru_crawler,
            words=self.shared.settings,
        )
        self.rebalancer = Rebalancer(
            self.store,
            config.slab_reassign,
            config.slab_automove,
            config.slab_automove_ratio,
            config.slab_automove_window,
            maintainer=config.lru_maintainer,
            words=self.shared.settings,
        )
        # -o lru_maintainer (the default): the segmented LRU's background thread
        self.maintainer = Maintainer(self.store) if config.lru_maintainer else None
        logger = self.logger
        self.rebalancer.on_decision = lambda src, dst: watch.log_slab_move(logger, src, dst)
        self.ops = OpsState(config, self.parts.prefixes, self.shared.settings)
        # Per-prefix stats while `stats detail` is on (or -D given); off keeps them off the
        # request path at the cost of one shared word read.
        if config.detail_enabled:
            self.set_detail(True)
        self._stop = threading.Event()
        self._graceful = True
        # Set by request_shutdown, which runs inside signal handlers: plain flags, no lock (a
        # second signal landing while a handler holds an Event's lock would deadlock).
        self._stop_requested = False
        self._hurry_requested = False  # a second stop request cuts the drain short
        self.metrics: MetricsServer | None = None  # the /metrics endpoint, when configured
        # In a worker process of the supervisor: its slot, and how a `shutdown` reaches the
        # supervisor (None in a node that serves in its own process).
        self.worker_slot: int | None = None
        self.on_shutdown_request: Callable[[bool], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def bind(self, processes: int = 0) -> None:
        """Open the listening sockets (``processes`` worker processes will serve: a socket per
        worker and address, see ``Listener``), the UDP sockets and the metrics endpoint."""
        self.listeners = open_listeners(
            self.config.listen,
            self.config.port,
            self.config.unix_socket,
            self.config.unix_mask,
            self.config.backlog,
            per_address=processes,
        )
        if not self.config.unix_socket:
            self.port = int(self.listeners[0].sock.getsockname()[1])
        self.conn_table.listening(len(self.listeners))
        if self.config.udp_port and not self.config.unix_socket:  # -s: memcached opens no UDP
            self.udp_sockets = open_udp_sockets(self.config.listen, self.config.udp_port)
            # memcached gives every worker thread its own descriptor per UDP socket and counts
            # each as a connection
            self.conn_table.udp_connections(len(self.udp_sockets) * self.threads_per_udp)
        if self.config.metrics_listen is not None and self.metrics is None:
            # imported here: a node without metrics never loads prometheus-client
            from memcache_server.metrics_http import open_node_metrics

            self.metrics = open_node_metrics(self)

    def start(self) -> None:
        if not self.listeners:
            self.bind()
        self.start_serving()
        self.start_background()

    def start_serving(self) -> None:
        """The workers' event loops and the acceptor on the listening sockets (taking one
        connection per wake-up in a worker process, which shares them with the others)."""
        for w in self.workers:
            w.start()
        self.acceptor = Acceptor(self, self.listeners)
        if self.worker_slot is not None and self.config.unix_socket:
            self.acceptor.batch = 1  # a UNIX socket is one socket all the workers accept on
        self.acceptor.start()

    def _worker_class(self) -> type[Worker]:
        """The event loop class: a TLS one when -Z is on."""
        if self.tls is None:
            return Worker
        from memcache_server.server.tls import TLSWorker

        return TLSWorker

    def become_worker(self, index: int) -> None:
        """In a worker process: serve as worker ``index`` alone (one event loop, no turns to
        take), dropping the loops built for serving in-process (never started)."""
        for w in self.workers:
            w.discard()
        worker_class = self._worker_class()
        self.worker_slot = index
        self.worker_turns = None
        for lst in self.listeners:
            lst.keep_only(index)
        self.workers = [worker_class(self, index)]
        self.bind_worker(index)
        self.shared.counters.set_pid(index, os.getpid())

    def start_background(self) -> None:
        """The clock ticker, metrics endpoint, LRU crawler and slab mover."""
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
        if self.on_shutdown_request is not None:  # a worker process: the supervisor stops
            self.on_shutdown_request(graceful)
            return
        if self._stop_requested:
            self._hurry_requested = True
        self._graceful = graceful
        self._stop_requested = True

    def shutdown_command(self, graceful: bool) -> None:
        """``shutdown`` from a connection of any worker: ask the whole node to stop. Recorded
        in the shared settings (the supervisor's ``wait`` reads them), then ``on_shutdown``."""
        settings = self.settings
        settings.stop_graceful = graceful
        settings.stop_requested += 1
        self.on_shutdown(graceful)

    def wait(self) -> None:
        settings = self.settings
        while not (self._stop_requested or self._stop.is_set()):
            if settings.stop_requested:  # `shutdown` in a worker of another process
                self._graceful = bool(settings.stop_graceful)
                break
            self._stop.wait(0.1)
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for (a signal or ``shutdown``)."""
        return self._stop_requested

    @property
    def graceful(self) -> bool:
        """Whether the stop asked for (signal or ``shutdown graceful``) lets clients drain."""
        return self._graceful

    def hurry_requested(self) -> bool:
        """True once a second stop request asked to cut a drain short."""
        return self._hurry_requested or self.settings.stop_requested > 1

    def shutdown(self) -> None:
        """Stop accepting, finish what workers already read, close everything."""
        self._stop.set()
        if self.acceptor is not None:
            self.acceptor.stop()
            self.acceptor.join(5)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            if w.ident is not None:  # a supervisor's loops were never started
                w.join(10)
        for sock in self.udp_sockets:
            sock.close()
        self.crawler.stop()
        self.rebalancer.stop()
        if self.maintainer is not None:
            self.maintainer.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.logger.stop()
        memory_file = self.store.memory_file
        if memory_file is not None:  # -e: a clean stop, so the next start takes the items back
            memory_file.save(self.store, self.clock.started)

    @property
    def detail(self) -> PrefixStats | None:
        """The per-prefix counters while ``stats detail`` is on, else None."""
        self.follow_settings()
        return self.parts.detail

    def set_detail(self, on: bool) -> None:
        """``stats detail on|off`` (or -D), node-wide: off keeps what was counted (dump still
        shows it)."""
        self.logger.set_detail(on)

    def follow_settings(self) -> None:
        """Bring this process's request-path view in line with the shared settings another
        process may have changed (workers call it when the verbosity word moves)."""
        self.parts.tracing = self.settings.verbosity > 1

    @property
    def verbosity(self) -> int:
        return self.settings.verbosity

    @property
    def worker_counters(self) -> WorkerCounters:
        """Every worker slot's counter block (``stats`` sums the first -t)."""
        return self.shared.counters

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of the node: this process alone when it serves, else
        the supervisor's and every live worker's (read from /proc, 10 ms resolution)."""
        pids = self.shared.counters.pids(self.config.threads)
        if not pids:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            return ru.ru_utime, ru.ru_stime
        user = system = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in (self.main_pid, *pids):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # a worker that just died
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
        return user, system

    def worker_stats(self, index: int) -> ThreadStats:
        """Worker ``index``'s counter block in the segment."""
        return self.shared.counters.block(index)

    @property
    def counters(self) -> ConnectionTable:
        """memcached's connection counters, summed over every worker of the node."""
        return self.conn_table

    def bind_worker(self, slot: int) -> None:
        """In a worker process forked from this node: log and count prefixes as worker
        ``slot`` (its connections are recorded under the index of the worker that serves
        them), and drop the process-local state copied from the parent."""
        self.conn_table.forked(slot)
        self.logger.bind(slot)
        self.parts.prefixes.bind(slot)

    def bind_supervisor(self) -> None:
        """In the process that runs the background threads: their events go to the last
        ring."""
        self.logger.bind(self.logger.rings - 1)

    def reclaim_worker(self, slot: int) -> None:
        """Worker ``slot``'s process died: forget its connections and its watchers."""
        self.conn_table.reclaim(slot)
        self.logger.reclaim(slot)

    def new_session(self, stats: ThreadStats, peer: str = "", fd: int = -1) -> Session:
        """A connection's session: the node's parts, and the node as its node-wide context."""
        if self.auth is not None:
            return AuthSession(self.parts, stats, peer, fd, self, self.auth)
        return Session(self.parts, stats, peer, fd, self)

    def new_udp_session(self, stats: ThreadStats, request_id: int, peer: str) -> UdpSession:
        """The session answering one UDP datagram (no auth: -Y refuses -U at start)."""
        return UdpSession(self.parts, stats, request_id, peer, self)

    @property
    def threads_per_udp(self) -> int:
        """memcached's ``num_threads_per_udp``: one per UDP socket with several -l addresses,
        else one per worker thread."""
        return 1 if len(self.config.listen) > 1 else self.config.threads

    def connections(self) -> list[Connection]:
        """This process's open connections, by descriptor."""
        return self.conn_table.all()

    def set_conn_state(self, cid: int, state: str) -> None:
        """A connection of this process changed role (``watch``): ``stats conns`` shows it."""
        self.conn_table.set_state(cid, state)

    def conn_records(self) -> list[ConnInfo]:
        """Every open connection of the node, whichever process holds it (``stats conns``)."""
        return self.conn_table.records_all()

    # ------------------------------------------------------------------ commands

    def set_verbosity(self, level: int) -> None:
        self.settings.verbosity = level
        self.parts.tracing = level > 1  # sessions log their requests (-vv) from their next batch

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
        return bool(self.crawler.running)

    def crawler_starts(self) -> int:
        return self.crawler.starts

    def reset_stats(self) -> None:
        """``stats reset``: the counters memcached zeroes (not the gauges)."""
        self.shared.counters.reset(self.config.threads)
        self.store.reset_stats()
        self.ops.prefix_stats.clear()
        self.conn_table.reset_counts()

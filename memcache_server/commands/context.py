"""What command handlers may reach: two narrow contexts instead of the node.

``ItemContext`` is what item, meta and cluster-view handlers use (the store, the clock, the
config, the cluster document, the observers of item requests); ``NodeParts`` is its one
implementation, which the node builds and a test builds from a store, a clock and a config.
``AdminContext`` adds the node-wide operations (shutdown, verbosity, stats, the crawler, the
slab mover); only the node implements it, and a session built without one dispatches item
commands only. Handlers never see the node, as gunicorn hands a worker its parts, never the
arbiter.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

from memcache_server.commands.cluster import CLUSTER_AREA_BYTES, ClusterView
from memcache_server.config import ExitCode, StartupError
from memcache_server.protocol import constants as C
from memcache_server.report import StatsSource
from memcache_server.stats import PrefixStats, WorkerCounters, prefix_reserve
from memcache_server.storage.admission import TinyLfu, sketch_bytes
from memcache_server.storage.clock import CLOCK_BYTES
from memcache_server.storage.items import store_bytes
from memcache_server.storage.lru import LruSettings
from memcache_server.storage.metastore import MetaStore
from memcache_server.storage.restart import MemoryFile, restore
from memcache_server.storage.segment import ALIGN, MemoryFileError, Segment
from memcache_server.storage.settings import SETTINGS_BYTES
from memcache_server.storage.slabs import PAGE_SIZE, SlabTable
from memcache_server.storage.store import Store, StoreLimits
from memcache_server.watch import DETAIL, EVICTIONS, Logger, log_eviction
from memcache_server.watch import reserve as log_reserve

if TYPE_CHECKING:
    from memcache_server.commands.admin import OpsState
    from memcache_server.config import ServerConfig
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.crawler import Crawler
    from memcache_server.storage.rebalancer import Rebalancer

__all__ = ["ItemContext", "AdminContext", "NodeParts", "NodeArea", "new_store", "worker_slots"]


class ItemContext(Protocol):
    """The parts item handlers use. ``observed`` is one shared word read on every item request
    (``observed[0]``): nonzero only while per-prefix stats (``detail``) are on or an item log
    stream is watched, anywhere in the node. ``tracing`` is read once per batch of requests:
    True at verbosity 2, when sessions log what memcached -vv logs."""

    config: ServerConfig
    clock: Clock
    store: Store
    meta: MetaStore
    table: SlabTable
    cluster: ClusterView
    logger: Logger
    prefixes: PrefixStats
    observed: memoryview
    tracing: bool

    @property
    def detail(self) -> PrefixStats | None: ...


class AdminContext(StatsSource, Protocol):
    """Node-wide operations, for the admin, slabs and stats families (the node implements it)."""

    crawler: Crawler
    rebalancer: Rebalancer
    ops: OpsState

    def shutdown_command(self, graceful: bool) -> None: ...

    def set_verbosity(self, level: int) -> None: ...

    def refresh_certs(self) -> bytes: ...

    def reset_stats(self) -> None: ...

    def set_detail(self, on: bool) -> None: ...

    def set_conn_state(self, cid: int, state: str) -> None: ...


class NodeParts:
    """The parts of a node that item handlers share (an ``ItemContext``)."""

    __slots__ = (
        "config",
        "clock",
        "store",
        "meta",
        "table",
        "cluster",
        "logger",
        "prefixes",
        "observed",
        "tracing",
    )

    def __init__(
        self,
        config: ServerConfig,
        clock: Clock,
        store: Store,
        cluster: ClusterView | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.meta = MetaStore(store)
        self.table = store.table
        self.cluster = cluster or ClusterView(config.allow_config_writes)
        # node-wide, in the store's segment (new_store reserved their room): one log ring
        # per worker slot and one for the background threads, and the prefix counters
        slots = worker_slots(config)
        self.logger = Logger(config.watcher_logbuf_size, clock, store.segment, slots + 1,
                             config.worker_logbuf_size)
        self.prefixes = PrefixStats(config.prefix_delimiter.encode()[:1] or b":",
                                    store.segment, slots)
        self.observed = self.logger.observed
        self.tracing = False  # -vv (or `verbosity 2`): sessions log as memcached does
        logger = self.logger

        def on_evict(key: bytes, fetched: bool, exp: int, atime: int, cid: int,
                     size: int) -> None:
            # evictions are watched in some process, maybe not this one: one word read
            if logger.mask & EVICTIONS:
                log_eviction(logger, key, fetched, exp, atime, cid, size)

        store.on_evict = on_evict

    @property
    def detail(self) -> PrefixStats | None:
        """The per-prefix counters while ``stats detail`` is on (node-wide), else None."""
        return self.prefixes if self.logger.mask & DETAIL else None


class NodeArea:
    """The node's own areas of the shared segment, carved once when the node is built (before
    any worker process is forked), each bounded by its named size: the workers' counter blocks
    (``WorkerCounters.NBYTES``: ``MAX_WORKERS`` blocks), the run-time settings and requests
    (``SETTINGS_BYTES``), the clock (``CLOCK_BYTES``) and the cluster document
    (``CLUSTER_AREA_BYTES``). ``new_store`` reserves ``NBYTES`` for them."""

    __slots__ = ("counters", "settings", "clock", "cluster")

    SIZES = (WorkerCounters.NBYTES, SETTINGS_BYTES, CLOCK_BYTES, CLUSTER_AREA_BYTES)
    NBYTES = sum(-(-n // ALIGN) * ALIGN for n in SIZES)

    def __init__(self, segment: Segment) -> None:
        counters, settings, clock, cluster = (segment.carve(n)[1] for n in self.SIZES)
        self.counters = WorkerCounters(counters)
        self.settings = settings.cast("q")
        self.clock = clock
        self.cluster = cluster


def worker_slots(config: ServerConfig) -> int:
    """Worker slots the node's shared tables are sized for: -t (one per worker)."""
    return max(config.threads, 1)


def new_store(config: ServerConfig, clock: Clock, reserve: int = 0) -> Store:
    """The item store a config asks for: its slab classes, limits, and the classic protocol's
    ready-made ``VALUE`` header kept with each item (a get hit is then a lookup and an append).

    Its segment also has room for the node's own areas (``NodeArea``), the log rings and
    prefix counters ``NodeParts`` carves, and ``reserve`` more bytes (the connection table).
    With ``-e`` its memory is that file, and the items a clean stop left in it come back when
    the layout settings match (restart.py); what memcached prints about it goes to stderr. A
    file that cannot be opened or mapped raises ``StartupError`` (memcached aborts)."""
    slots = worker_slots(config)
    reserve += NodeArea.NBYTES + log_reserve(slots + 1, config.worker_logbuf_size)
    reserve += prefix_reserve(slots)
    admission = config.lru_admission == "tinylfu"
    if admission:  # carved first out of the reserve, right after the store's own areas
        reserve += sketch_bytes(config.memory_limit)
    table = SlabTable.build(
        config.growth_factor,
        config.chunk_size,
        config.effective_chunk_max,
        config.item_size_max,
        config.use_cas,
    )
    limits = StoreLimits(
        config.memory_limit,
        not config.disable_evictions,
        config.use_cas,
        LruSettings(
            segmented=config.lru_maintainer,
            hot_lru_pct=config.hot_lru_pct,
            warm_lru_pct=config.warm_lru_pct,
            hot_max_factor=config.hot_max_factor,
            warm_max_factor=config.warm_max_factor,
            temp_lru=config.temp_lru,
            temporary_ttl=config.temporary_ttl,
        ),
    )
    memory_file = None
    saved = None
    if config.memory_file is not None:
        size = store_bytes(table, limits.memory_limit, reserve)
        memory_file = MemoryFile(config.memory_file, layout_settings(config, table), size)
    try:
        if memory_file is not None:
            saved, notes = memory_file.load()
            for line in notes:
                print(line, file=sys.stderr)
        store = Store(
            table, limits, clock, C.value_header, config.memory_file, saved is not None, reserve
        )
    except MemoryFileError as exc:
        raise StartupError(str(exc), ExitCode.ABORTED) from None
    store.key_offset = C.VALUE_KEY_OFFSET
    if admission:
        store.admission = TinyLfu.carve(store.segment, config.memory_limit)
    if memory_file is not None:
        store.memory_file = memory_file
    if saved is not None:
        restore(store, saved)
        clock.started = saved.process_started
    if config.track_sizes:
        store.track_sizes(True)
    return store


def layout_settings(config: ServerConfig, table: SlabTable) -> dict[str, str]:
    """The settings that fix how a store's memory is carved, under memcached's names and in its
    order (``PATH.meta``): a restart with any of them changed starts empty."""
    return {
        "slab_config": repr(config.growth_factor),
        "maxbytes": str(config.memory_limit),
        "chunk_size": str(config.chunk_size),
        "item_size_max": str(config.item_size_max),
        "slab_chunk_size_max": str(table.chunk_max),
        "slab_page_size": str(PAGE_SIZE),
        "use_cas": "true" if config.use_cas else "false",
        "slab_reassign": "true" if config.slab_reassign else "false",
    }

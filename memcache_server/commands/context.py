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

from typing import TYPE_CHECKING, Protocol

from memcache_server.commands.cluster import ClusterView
from memcache_server.protocol import constants as C
from memcache_server.report import StatsSource
from memcache_server.stats import PrefixStats, prefix_reserve
from memcache_server.storage.metastore import MetaStore
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Store, StoreLimits
from memcache_server.watch import DETAIL, EVICTIONS, Logger, log_eviction
from memcache_server.watch import reserve as log_reserve

if TYPE_CHECKING:
    from memcache_server.commands.admin import OpsState
    from memcache_server.config import ServerConfig
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.crawler import Crawler
    from memcache_server.storage.rebalancer import Rebalancer

__all__ = ["ItemContext", "AdminContext", "NodeParts", "new_store", "worker_slots"]


class ItemContext(Protocol):
    """The parts item handlers use. ``observed`` is one shared word read on every item request
    (``observed[0]``): nonzero only while per-prefix stats (``detail``) are on or an item log
    stream is watched, anywhere in the node."""

    config: ServerConfig
    clock: Clock
    store: Store
    meta: MetaStore
    table: SlabTable
    cluster: ClusterView
    logger: Logger
    prefixes: PrefixStats
    observed: memoryview

    @property
    def detail(self) -> PrefixStats | None: ...


class AdminContext(StatsSource, Protocol):
    """Node-wide operations, for the admin, slabs and stats families (the node implements it)."""

    crawler: Crawler
    rebalancer: Rebalancer
    ops: OpsState

    def request_shutdown(self, graceful: bool = True) -> None: ...

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


def worker_slots(config: ServerConfig) -> int:
    """Worker slots the node's shared tables are sized for: -t (one per worker)."""
    return max(config.threads, 1)


def new_store(config: ServerConfig, clock: Clock, reserve: int = 0) -> Store:
    """The item store a config asks for: its slab classes, limits, and the classic protocol's
    ready-made ``VALUE`` header kept with each item (a get hit is then a lookup and an append).

    Its segment also has room for the log rings and prefix counters ``NodeParts`` carves, and
    ``reserve`` more bytes (the node's connection table)."""
    slots = worker_slots(config)
    reserve += log_reserve(slots + 1, config.worker_logbuf_size) + prefix_reserve(slots)
    table = SlabTable.build(
        config.growth_factor,
        config.chunk_size,
        config.effective_chunk_max,
        config.item_size_max,
        config.use_cas,
    )
    store = Store(
        table,
        StoreLimits(config.memory_limit, not config.disable_evictions, config.use_cas),
        clock,
        C.value_header,
        reserve,
    )
    store.key_offset = C.VALUE_KEY_OFFSET
    if config.track_sizes:
        store.track_sizes(True)
    return store

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
from memcache_server.storage.lru import LruSettings
from memcache_server.storage.metastore import MetaStore
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Store, StoreLimits
from memcache_server.watch import EVICTIONS, ITEM_STREAMS, Logger, log_eviction

if TYPE_CHECKING:
    from memcache_server.commands.admin import OpsState
    from memcache_server.config import ServerConfig
    from memcache_server.stats import PrefixStats
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.crawler import Crawler
    from memcache_server.storage.rebalancer import Rebalancer

__all__ = ["ItemContext", "AdminContext", "NodeParts", "new_store"]


class ItemContext(Protocol):
    """The parts item handlers use. ``observed`` is read on every item request: True only while
    per-prefix stats (``detail``) are on or an item log stream is watched."""

    config: ServerConfig
    clock: Clock
    store: Store
    meta: MetaStore
    table: SlabTable
    cluster: ClusterView
    logger: Logger
    detail: PrefixStats | None
    observed: bool

    def refresh_observed(self) -> None: ...


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
        "detail",
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
        self.logger = Logger(config.watcher_logbuf_size, clock, self.refresh_observed)
        self.detail: PrefixStats | None = None
        self.observed = False

    def refresh_observed(self) -> None:
        """Recompute ``observed`` and the store's eviction hook after detail/watchers change."""
        logger = self.logger
        self.observed = self.detail is not None or bool(logger.mask & ITEM_STREAMS)
        if logger.mask & EVICTIONS:
            self.store.on_evict = lambda *item: log_eviction(logger, *item)
        else:
            self.store.on_evict = None


def new_store(config: ServerConfig, clock: Clock) -> Store:
    """The item store a config asks for: its slab classes, limits, and the classic protocol's
    ready-made ``VALUE`` header kept with each item (a get hit is then a lookup and an append)."""
    table = SlabTable.build(
        config.growth_factor,
        config.chunk_size,
        config.effective_chunk_max,
        config.item_size_max,
        config.use_cas,
    )
    store = Store(
        table,
        StoreLimits(
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
        ),
        clock,
        C.value_header,
    )
    store.key_offset = C.VALUE_KEY_OFFSET
    if config.track_sizes:
        store.track_sizes(True)
    return store

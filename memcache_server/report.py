"""`stats` replies: memcached's field names, order and number formats, built from snapshots.

One list per reply drives the output (and, later, the metrics collector), so a field is declared
once. Values are computed from a snapshot taken at call time; nothing here is on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from memcache_server.options import settings_values
from memcache_server.storage.slabclass import SLAB_COUNTERS

if TYPE_CHECKING:
    from memcache_server.commands.cluster import ClusterView
    from memcache_server.config import ServerConfig
    from memcache_server.metrics_http import MetricsServer
    from memcache_server.server.connections import ConnInfo
    from memcache_server.server.listener import Listener
    from memcache_server.server.tls import TLSServer
    from memcache_server.server.worker import Worker
    from memcache_server.stats import PrefixStats, WorkerCounters
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.crawler import Crawler
    from memcache_server.storage.rebalancer import Rebalancer
    from memcache_server.storage.slabs import SlabTable
    from memcache_server.storage.store import Store

__all__ = [
    "StatsSource",
    "general_stats",
    "settings_stats",
    "slabs_stats",
    "items_stats",
    "conns_stats",
    "format_stats",
]

Stat = tuple[str, object]


class StatsSource(Protocol):
    """What the stats replies read: the whole node's state, at call time (the node has it)."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def store(self) -> Store: ...
    @property
    def table(self) -> SlabTable: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def counters(self) -> ConnCounters: ...
    @property
    def workers(self) -> Sequence[Worker]: ...
    @property
    def worker_counters(self) -> WorkerCounters: ...
    @property
    def main_pid(self) -> int: ...
    def cpu_times(self) -> tuple[float, float]: ...
    @property
    def listeners(self) -> Sequence[Listener]: ...
    @property
    def version(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def verbosity(self) -> int: ...
    @property
    def threads_per_udp(self) -> int: ...
    @property
    def rebalancer(self) -> Rebalancer: ...
    @property
    def crawler(self) -> Crawler: ...
    @property
    def cluster(self) -> ClusterView: ...
    @property
    def tls(self) -> TLSServer | None: ...
    @property
    def metrics(self) -> MetricsServer | None: ...
    @property
    def detail(self) -> PrefixStats | None: ...
    @property
    def ops(self) -> OpsSettings: ...
    @property
    def logger(self) -> LogCounters: ...

    def hash_power_level(self) -> int: ...
    def oldest_live_age(self) -> int: ...
    def crawler_running(self) -> bool: ...
    def crawler_starts(self) -> int: ...
    def conn_records(self) -> list[ConnInfo]: ...


class OpsSettings(Protocol):
    """The run-time settings `stats settings` shows (``lru_crawler sleep|tocrawl``)."""

    @property
    def crawler_sleep(self) -> int: ...
    @property
    def crawler_tocrawl(self) -> int: ...


class ConnCounters(Protocol):
    """The node-wide connection counters `stats` shows."""

    @property
    def curr_connections(self) -> int: ...
    @property
    def total_connections(self) -> int: ...
    @property
    def rejected_connections(self) -> int: ...
    @property
    def connection_structures(self) -> int: ...
    @property
    def accepting_conns(self) -> int: ...
    @property
    def listen_disabled_num(self) -> int: ...


class LogCounters(Protocol):
    """The log streams' counters `stats` shows."""

    @property
    def written(self) -> int: ...
    @property
    def sent(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def watching(self) -> int: ...


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_stats(pairs: list[Stat]) -> bytes:
    lines = [f"STAT {name} {_fmt(value)}\r\n" for name, value in pairs]
    lines.append("END\r\n")
    return "".join(lines).encode()


def _rusage(t: float) -> str:
    """memcached's ``%ld.%06ld``; rounding to whole microseconds first, so 1.9999996 is 2.000000
    (memcached_exporter rejects anything but one dot between digits)."""
    sec, usec = divmod(round(t * 1_000_000), 1_000_000)
    return f"{sec}.{usec:06d}"


def general_stats(node: StatsSource) -> list[Stat]:
    """`stats`: the fields of memcached 1.6.18's server_stats + get_stats, in its order."""
    cfg = node.config
    store = node.store
    th = node.worker_counters.sum(cfg.threads)  # every worker process's block
    classes = store.class_stats()
    per_class: dict[str, int] = {}
    for cs in classes:
        for name, v in cs.counters.items():
            per_class[name] = per_class.get(name, 0) + v
        for name, v in (cs.lru_counters or {}).items():
            per_class[name] = per_class.get(name, 0) + v
    maintainer = cfg.lru_maintainer  # memcached shows the segmented LRU's lines only then
    user, system = node.cpu_times()  # every process of the node
    now = node.clock.now
    cnt = node.counters
    pairs: list[Stat] = [
        ("pid", node.main_pid),
        ("uptime", now - node.clock.started),
        ("time", now),
        ("version", node.version),
        ("libevent", "none"),
        ("pointer_size", 64),
        ("rusage_user", _rusage(user)),
        ("rusage_system", _rusage(system)),
        ("max_connections", cfg.max_connections),
        ("curr_connections", cnt.curr_connections),
        ("total_connections", cnt.total_connections),
        *([("rejected_connections", cnt.rejected_connections)] if cfg.maxconns_fast else []),
        ("connection_structures", cnt.connection_structures),
        ("response_obj_oom", th["response_obj_oom"]),
        ("response_obj_count", 1),
        ("response_obj_bytes", 65536),
        ("read_buf_count", 8),
        ("read_buf_bytes", 131072),
        ("read_buf_bytes_free", 49152),
        ("read_buf_oom", th["read_buf_oom"]),
        ("reserved_fds", 20),
        ("cmd_get", th["get_cmds"]),
        ("cmd_set", per_class.get("cmd_set", 0)),
        ("cmd_flush", th["flush_cmds"]),
        ("cmd_touch", th["touch_cmds"]),
        ("cmd_meta", th["meta_cmds"]),
        ("get_hits", per_class.get("get_hits", 0)),
        ("get_misses", th["get_misses"]),
        ("get_expired", th["get_expired"]),
        ("get_flushed", th["get_flushed"]),
        ("delete_misses", th["delete_misses"]),
        ("delete_hits", per_class.get("delete_hits", 0)),
        ("incr_misses", th["incr_misses"]),
        ("incr_hits", per_class.get("incr_hits", 0)),
        ("decr_misses", th["decr_misses"]),
        ("decr_hits", per_class.get("decr_hits", 0)),
        ("cas_misses", th["cas_misses"]),
        ("cas_hits", per_class.get("cas_hits", 0)),
        ("cas_badval", per_class.get("cas_badval", 0)),
        ("touch_hits", per_class.get("touch_hits", 0)),
        ("touch_misses", th["touch_misses"]),
        ("store_too_large", th["store_too_large"]),
        ("store_no_memory", th["store_no_memory"]),
        ("auth_cmds", th["auth_cmds"]),
        ("auth_errors", th["auth_errors"]),
        *([("idle_kicks", th["idle_kicks"])] if cfg.idle_timeout else []),
        ("bytes_read", th["bytes_read"]),
        ("bytes_written", th["bytes_written"]),
        ("limit_maxbytes", store.memory_limit),
        ("accepting_conns", cnt.accepting_conns),
        ("listen_disabled_num", cnt.listen_disabled_num),
        ("time_in_listen_disabled_us", 0),
        ("threads", cfg.threads),
        ("conn_yields", th["conn_yields"]),
        ("hash_power_level", node.hash_power_level()),
        ("hash_bytes", 8 << node.hash_power_level()),
        ("hash_is_expanding", 0),
        *(_reassign_stats(node) if cfg.slab_reassign else []),
        *(
            [
                ("lru_crawler_running", int(node.crawler_running())),
                ("lru_crawler_starts", node.crawler_starts()),
            ]
            if node.crawler.enabled
            else []
        ),
        *([("lru_maintainer_juggles", store.lru_maintainer_juggles)] if maintainer else []),
        ("malloc_fails", 0),
        ("log_worker_dropped", 0),
        ("log_worker_written", node.logger.written),
        ("log_watcher_skipped", node.logger.skipped),
        ("log_watcher_sent", node.logger.sent),
        ("log_watchers", node.logger.watching),
        *_tls_stats(node, th["ssl_handshake_errors"]),
        ("unexpected_napi_ids", 0),
        ("round_robin_fallback", 0),
        ("bytes", store.item_bytes),
        ("curr_items", store.curr_items),
        ("total_items", store.total_items),
        ("slab_global_page_pool", store.pool_pages),
        ("expired_unfetched", store.expired_unfetched),
        ("evicted_unfetched", store.evicted_unfetched),
        *([("evicted_active", per_class["evicted_active"])] if maintainer else []),
        ("evictions", store.evictions),
        ("reclaimed", store.reclaimed),
        ("crawler_reclaimed", store.crawler_reclaimed),
        ("crawler_items_checked", store.crawler_items_checked),
        ("lrutail_reflocked", 0),
        *(
            [
                ("moves_to_cold", per_class["moves_to_cold"]),
                ("moves_to_warm", per_class["moves_to_warm"]),
                ("moves_within_lru", per_class["moves_within_lru"]),
                ("direct_reclaims", per_class["direct_reclaims"]),
                ("lru_bumps_dropped", 0),  # fetched COLD items move at once: none is dropped
            ]
            if maintainer
            else []
        ),
        *_admission_stats(node),
    ]
    pairs += node.cluster.stats()  # cluster members only: see ClusterView.stats
    return pairs


def _reassign_stats(node: StatsSource) -> list[Stat]:
    """The page mover's lines of `stats`, present only with slab_reassign (memcached's rule)."""
    moves = node.store.moves
    return [
        ("slab_reassign_rescues", moves.rescues),
        ("slab_reassign_chunk_rescues", moves.chunk_rescues),
        ("slab_reassign_evictions_nomem", moves.evictions_nomem),
        ("slab_reassign_inline_reclaim", 0),
        ("slab_reassign_busy_items", 0),
        ("slab_reassign_busy_deletes", 0),
        # a queued move counts as running, so a poll right after OK never reads a finished move
        ("slab_reassign_running", int(node.rebalancer.running)),
        ("slabs_moved", moves.slabs_moved),
    ]


def _tls_stats(node: StatsSource, handshake_errors: int) -> list[Stat]:
    """memcached's TLS lines of `stats`, present only when -Z is on."""
    tls = node.tls
    if tls is None:
        return []
    return [
        ("ssl_handshake_errors", handshake_errors),
        ("time_since_server_cert_refresh", node.clock.now - tls.refreshed_at),
    ]


# `stats settings`, in memcached 1.6.18's order (its TLS/extstore lines included). Lines that
# show a setting as the config holds it come from the options table (options.py); the others
# are computed in ``_settings_not_in_table`` (values that change at run time, or read several
# settings) or are memcached's constants for features this server does not have.
SETTINGS_ORDER: tuple[str, ...] = (
    "maxbytes", "maxconns", "tcpport", "udpport", "inter", "verbosity", "oldest", "evictions",
    "domain_socket", "umask", "shutdown_command", "growth_factor", "chunk_size", "num_threads",
    "num_threads_per_udp", "stat_key_prefix", "detail_enabled", "reqs_per_event", "cas_enabled",
    "tcp_backlog", "binding_protocol", "auth_enabled_sasl", "auth_enabled_ascii",
    "item_size_max", "maxconns_fast", "hashpower_init", "slab_reassign", "slab_automove",
    "slab_automove_ratio", "slab_automove_window", "slab_chunk_max", "lru_crawler",
    "lru_crawler_sleep", "lru_crawler_tocrawl", "tail_repair_time", "flush_enabled",
    "dump_enabled", "hash_algorithm", "lru_maintainer_thread", "lru_segmented", "hot_lru_pct",
    "warm_lru_pct", "hot_max_factor", "warm_max_factor", "temp_lru", "temporary_ttl",
    "idle_timeout", "watcher_logbuf_size", "worker_logbuf_size", "read_buf_mem_limit",
    "track_sizes", "inline_ascii_response", "ext_item_size", "ext_item_age", "ext_low_ttl",
    "ext_recache_rate", "ext_wbuf_size", "ext_compact_under", "ext_drop_under", "ext_max_sleep",
    "ext_max_frag", "slab_automove_freeratio", "ext_drop_unread", "ssl_enabled",
    "ssl_chain_cert", "ssl_key", "ssl_verify_mode", "ssl_keyformat", "ssl_ciphers",
    "ssl_ca_cert", "ssl_wbuf_size", "ssl_session_cache", "ssl_kernel_tls", "ssl_min_version",
    "num_napi_ids", "memory_file",
)  # fmt: skip
# memcached's values for what this server does not have (extstore, UDP, SASL, NAPI).
_SETTINGS_CONSTANTS: dict[str, object] = {
    "auth_enabled_sasl": False,
    "inline_ascii_response": False,
    "ext_item_size": 512,
    "ext_item_age": 4294967295,
    "ext_low_ttl": 0,
    "ext_recache_rate": 2000,
    "ext_wbuf_size": 4194304,
    "ext_compact_under": 0,
    "ext_drop_under": 0,
    "ext_max_sleep": 1000000,
    "ext_max_frag": 0.8,
    "slab_automove_freeratio": "0.010",
    "ext_drop_unread": False,
    "ssl_keyformat": 1,
    "ssl_wbuf_size": 16384,
    "ssl_session_cache": False,
    "ssl_kernel_tls": False,
    "num_napi_ids": "(null)",
}


def settings_stats(node: StatsSource) -> list[Stat]:
    """`stats settings`: the options table's lines, the run-time ones, memcached's constants."""
    values = {**_SETTINGS_CONSTANTS, **settings_values(node.config), **_settings_not_in_table(node)}
    return (
        [(name, values[name]) for name in SETTINGS_ORDER]
        + _admission_settings(node)
        + _metrics_settings(node)
    )


def _settings_not_in_table(node: StatsSource) -> dict[str, object]:
    """Lines whose value changes at run time or reads more than one setting."""
    c = node.config
    ext = c.extended
    return {
        "maxbytes": node.store.memory_limit,  # cache_memlimit changes it
        "tcpport": node.port if not c.unix_socket else 0,  # -p 0: the port picked
        "inter": ",".join(c.listen) if not c.unix_socket else "NULL",
        "verbosity": node.verbosity,
        "num_threads_per_udp": node.threads_per_udp,
        "oldest": node.oldest_live_age(),
        "detail_enabled": node.detail is not None,
        "hashpower_init": int(ext.get("hashpower") or 0),
        "slab_automove": node.rebalancer.automove,
        "slab_automove_ratio": node.rebalancer.ratio,
        "slab_chunk_max": node.table.chunk_max,
        "lru_crawler": bool(node.crawler.enabled),
        "lru_crawler_sleep": node.ops.crawler_sleep,
        "lru_crawler_tocrawl": node.ops.crawler_tocrawl,
        "track_sizes": node.store.sizes is not None,
        "ssl_chain_cert": ext.get("ssl_chain_cert") or "(null)",
        "ssl_key": ext.get("ssl_key") or "(null)",
        "ssl_verify_mode": int(ext.get("ssl_verify_mode") or 0),
        "ssl_ciphers": ext.get("ssl_ciphers") or "NULL",
        "ssl_ca_cert": ext.get("ssl_ca_cert") or "NULL",
        "ssl_min_version": node.tls.settings.min_version_name if node.tls else "tlsv1.2",
    }


def _admission_settings(node: StatsSource) -> list[Stat]:
    """``lru_admission`` (not memcached's), only when a policy is on: with the default the
    reply keeps memcached's lines exactly."""
    policy = node.config.lru_admission
    return [("lru_admission", policy)] if policy != "none" else []


def _admission_stats(node: StatsSource) -> list[Stat]:
    """The admission policy's counters in `stats`, only while it is on (see admission.py):
    COLD tail items kept (moved to WARM) for being used more often than HOT's tail, the
    evictions of HOT's tail instead of a COLD item, and how often the sketch was aged."""
    policy = node.store.admission
    if policy is None:
        return []
    return [
        ("lru_admission_kept", policy.kept),
        ("lru_admission_rejected", policy.rejected),
        ("lru_admission_resets", policy.resets),
    ]


def _metrics_settings(node: StatsSource) -> list[Stat]:
    """Where /metrics is served (only when it is): how a caller of ``--metrics-listen :0``
    learns the port that was picked."""
    server = node.metrics
    return [("metrics_listen", server.address)] if server is not None else []


def slabs_stats(node: StatsSource) -> list[Stat]:
    out: list[Stat] = []
    classes = [c for c in node.store.class_stats() if c.total_pages]
    for c in classes:
        p = f"{c.cid}:"
        out += [
            (p + "chunk_size", c.chunk_size),
            (p + "chunks_per_page", c.chunks_per_page),
            (p + "total_pages", c.total_pages),
            (p + "total_chunks", c.total_pages * c.chunks_per_page),
            (p + "used_chunks", c.used_chunks),
            (p + "free_chunks", c.free_chunks),
            (p + "free_chunks_end", 0),
        ]
        out += [(p + name, c.counters[name]) for name in SLAB_COUNTERS]
    out.append(("active_slabs", len(classes)))
    out.append(("total_malloced", node.store.malloced))
    return out


def items_stats(node: StatsSource) -> list[Stat]:
    """`stats items`: memcached 1.6.18's item_stats, with the segmented LRU's lines only while
    the maintainer runs (number_temp only with the TEMP LRU)."""
    out: list[Stat] = []
    maintainer = node.config.lru_maintainer
    temp = node.config.temp_lru
    for c in node.store.class_stats():
        if not c.items:
            continue
        p = f"items:{c.cid}:"
        k = c.counters
        lru = c.lru_counters or {}
        hot, warm, cold, temp_n = c.lru_sizes
        out.append((p + "number", c.items))
        if maintainer:
            out += [(p + "number_hot", hot), (p + "number_warm", warm), (p + "number_cold", cold)]
            if temp:
                out.append((p + "number_temp", temp_n))
            out += [(p + "age_hot", c.age_hot), (p + "age_warm", c.age_warm)]
        out += [
            (p + "age", c.age),
            (p + "mem_requested", c.mem_requested),
            (p + "evicted", k["evicted"]),
            (p + "evicted_nonzero", k["evicted_nonzero"]),
            (p + "evicted_time", k["evicted_time"]),
            (p + "outofmemory", k["outofmemory"]),
            (p + "tailrepairs", 0),
            (p + "reclaimed", k["reclaimed"]),
            (p + "expired_unfetched", k["expired_unfetched"]),
            (p + "evicted_unfetched", k["evicted_unfetched"]),
        ]
        if maintainer:
            out.append((p + "evicted_active", lru.get("evicted_active", 0)))
        out += [
            (p + "crawler_reclaimed", k["crawler_reclaimed"]),
            (p + "crawler_items_checked", k["crawler_items_checked"]),
            (p + "lrutail_reflocked", 0),
        ]
        if maintainer:
            out += [
                (p + name, lru.get(name, 0))
                for name in (
                    "moves_to_cold", "moves_to_warm", "moves_within_lru", "direct_reclaims",
                    "hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp",
                )
            ]
    return out


def conns_stats(node: StatsSource, asking: int = -1) -> list[Stat]:
    """`stats conns`: the listeners, then every connection of the node by id; ``asking`` (the
    id of the connection that asked) is the one in conn_parse_cmd."""
    out: list[Stat] = []
    now = node.clock.now
    for lst in node.listeners:
        fd = lst.sock.fileno()
        out += [
            (f"{fd}:addr", lst.name),
            (f"{fd}:state", "conn_listening"),
            (f"{fd}:secs_since_last_cmd", 0),
        ]
    for conn in node.conn_records():
        cid = conn.cid
        out += [
            (f"{cid}:addr", conn.peer),
            (f"{cid}:listen_addr", conn.listen_addr),
            (f"{cid}:state", "conn_parse_cmd" if cid == asking else conn.state),
            (f"{cid}:secs_since_last_cmd", max(0, now - conn.last_active)),
        ]
    return out


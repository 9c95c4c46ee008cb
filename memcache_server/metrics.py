"""Prometheus metrics: a Collector that turns a stats snapshot into metric families at scrape time.

Why: operators already have dashboards and alerts on memcached_exporter's metric names, so a node
exposes exactly those names, types and labels, computed the way the exporter computes them from
``stats``, ``stats settings``, ``stats slabs`` and ``stats items``. The snapshot holds the very
text those commands print (formatted by ``report``), so ``/metrics`` and ``stats`` cannot
disagree, and memcached_exporter itself can scrape a node and get the same numbers.

Rules: nothing here runs on the request path. The collector only calls a *snapshot provider*
(any callable returning a ``StatsSnapshot``), so the config node reuses it with its own provider.
Each scrape builds fresh metric families (no prometheus-client metric objects live between
scrapes, no locks are taken on behalf of requests). Registries are our own, never the global one.

Deviations from the exporter, all deliberate:
- Six exporter counters have no ``_total`` suffix (``memcached_uptime_seconds``,
  ``memcached_slab_items_evicted_time_seconds``, ``memcached_slab_items_moves_to_cold``,
  ``..._moves_to_warm``, ``..._moves_within_lru``, ``memcached_slab_mem_requested_bytes``).
  prometheus-client (and OpenMetrics) force ``_total`` on counters, so these are exposed
  *untyped* under the exporter's exact names: queries and dashboards see the same series.
- A missing field is skipped everywhere (the exporter sets ``memcached_up 0`` when ``cmd_set`` or
  the cas fields are missing); a config node has no item commands and is still up.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from memcache_server import __version__, report
from memcache_server.config import EMULATED_VERSION
from memcache_server.latency import SAMPLE_EVERY, LatencySnapshot, merge

# The formatter `stats` itself uses, so the text of every value is identical to the reply.
from memcache_server.report import _fmt as stat_text

if TYPE_CHECKING:
    from memcache_server.report import StatsSource

__all__ = [
    "StatsSnapshot",
    "SnapshotProvider",
    "MemcachedCollector",
    "build_registry",
    "node_snapshot",
    "pairs_from_reply",
    "CLUSTER_METRICS",
]

COUNTER = "counter"
GAUGE = "gauge"
UNTYPED = "unknown"  # exposed as "untyped" in the text format

Pairs = Iterable[tuple[str, object]]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """What the stats commands would print right now, as text, split the way
    memcached_exporter's client splits it (``STAT 3:field`` -> slab 3, ``STAT items:3:field``
    -> items of class 3; lines of ``stats slabs`` without a class land in ``stats``)."""

    stats: Mapping[str, str]
    settings: Mapping[str, str] = field(default_factory=dict)
    slabs: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    items: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    latency: LatencySnapshot | None = None

    @classmethod
    def from_pairs(
        cls,
        stats: Pairs,
        settings: Pairs = (),
        slabs: Pairs = (),
        items: Pairs = (),
        latency: LatencySnapshot | None = None,
    ) -> StatsSnapshot:
        """Build from the (name, value) lists that ``report`` produces for each command."""
        general = {k: stat_text(v) for k, v in stats}
        per_slab: dict[int, dict[str, str]] = {}
        for k, v in slabs:
            cid, sep, name = k.partition(":")
            if sep and cid.isdigit():
                per_slab.setdefault(int(cid), {})[name] = stat_text(v)
            else:
                general[k] = stat_text(v)  # active_slabs, total_malloced
        per_items: dict[int, dict[str, str]] = {}
        for k, v in items:
            parts = k.split(":")
            if len(parts) == 3 and parts[1].isdigit():
                per_items.setdefault(int(parts[1]), {})[parts[2]] = stat_text(v)
        return cls(
            stats=general,
            settings={k: stat_text(v) for k, v in settings},
            slabs=per_slab,
            items=per_items,
            latency=latency,
        )


SnapshotProvider = Callable[[], StatsSnapshot]


def pairs_from_reply(reply: bytes) -> list[tuple[str, str]]:
    """``STAT name value`` lines of a stats reply (any server) as pairs; stops at ``END``."""
    out: list[tuple[str, str]] = []
    for line in reply.split(b"\r\n"):
        if line == b"END":
            break
        if line.startswith(b"STAT "):
            _, name, value = line.decode("latin-1").split(" ", 2)
            out.append((name, value))
    return out


def node_snapshot(node: StatsSource) -> StatsSnapshot:
    """A cache node's snapshot: the four stats replies plus the workers' latency histograms."""
    recorders = [w.latency for w in node.workers if w.latency is not None]
    return StatsSnapshot.from_pairs(
        report.general_stats(node),
        report.settings_stats(node),
        report.slabs_stats(node),
        report.items_stats(node),
        latency=merge(recorders) if recorders else None,
    )


# ---------------------------------------------------------------------------------------------
# The exporter's mapping, as tables: (stats field, metric name, type, help)

GENERAL: tuple[tuple[str, str, str, str], ...] = (
    ("uptime", "memcached_uptime_seconds", UNTYPED, "Number of seconds since the server started."),
    ("time", "memcached_time_seconds", GAUGE, "Current UNIX time according to the server."),
    ("bytes", "memcached_current_bytes", GAUGE, "Current number of bytes used to store items."),
    ("limit_maxbytes", "memcached_limit_bytes", GAUGE, "Bytes this server may use for items."),
    ("curr_items", "memcached_current_items", GAUGE, "Current number of items stored."),
    ("total_items", "memcached_items_total", COUNTER, "Items stored since the server started."),
    ("bytes_read", "memcached_read_bytes_total", COUNTER, "Bytes read from the network."),
    ("bytes_written", "memcached_written_bytes_total", COUNTER, "Bytes sent to the network."),
    ("curr_connections", "memcached_current_connections", GAUGE, "Open client connections."),
    ("total_connections", "memcached_connections_total", COUNTER, "Connections opened."),
    (
        "rejected_connections",
        "memcached_connections_rejected_total",
        COUNTER,
        "Connections rejected at the -c limit.",
    ),
    (
        "conn_yields",
        "memcached_connections_yielded_total",
        COUNTER,
        "Times a connection yielded at the -R limit.",
    ),
    (
        "listen_disabled_num",
        "memcached_connections_listener_disabled_total",
        COUNTER,
        "Times the listener was disabled at the connection limit.",
    ),
    ("evictions", "memcached_items_evicted_total", COUNTER, "Valid items evicted to free memory."),
    (
        "reclaimed",
        "memcached_items_reclaimed_total",
        COUNTER,
        "Times an item was stored in memory freed from an expired item.",
    ),
    (
        "store_too_large",
        "memcached_item_too_large_total",
        COUNTER,
        "Items refused for exceeding the max item size.",
    ),
    (
        "store_no_memory",
        "memcached_item_no_memory_total",
        COUNTER,
        "Items refused for lack of memory.",
    ),
    (
        "lru_crawler_starts",
        "memcached_lru_crawler_starts_total",
        COUNTER,
        "Times an LRU crawler was started.",
    ),
    (
        "direct_reclaims",
        "memcached_direct_reclaims_total",
        COUNTER,
        "Times worker threads had to directly reclaim or evict items.",
    ),
    (
        "crawler_items_checked",
        "memcached_lru_crawler_items_checked_total",
        COUNTER,
        "Items examined by the LRU crawler.",
    ),
    (
        "crawler_reclaimed",
        "memcached_lru_crawler_reclaimed_total",
        COUNTER,
        "Items freed by the LRU crawler.",
    ),
    (
        "moves_to_cold",
        "memcached_lru_crawler_moves_to_cold_total",
        COUNTER,
        "Items moved from HOT/WARM to COLD.",
    ),
    (
        "moves_to_warm",
        "memcached_lru_crawler_moves_to_warm_total",
        COUNTER,
        "Items moved from COLD to WARM.",
    ),
    (
        "moves_within_lru",
        "memcached_lru_crawler_moves_within_lru_total",
        COUNTER,
        "Items reshuffled within HOT or WARM.",
    ),
    ("total_malloced", "memcached_malloced_bytes", GAUGE, "Bytes allocated to slab pages."),
    # ours, present only with -o lru_admission=tinylfu (stats has the fields only then)
    (
        "lru_admission_kept",
        "memcached_lru_admission_kept_total",
        COUNTER,
        "COLD tail items the admission policy found used more than the candidate: to WARM.",
    ),
    (
        "lru_admission_rejected",
        "memcached_lru_admission_rejected_total",
        COUNTER,
        "Candidates (HOT's tail) the admission policy evicted instead of a COLD item.",
    ),
    (
        "lru_admission_resets",
        "memcached_lru_admission_resets_total",
        COUNTER,
        "Times the admission policy's frequency sketch halved its counters.",
    ),
    (
        "accepting_conns",
        "memcached_accepting_connections",
        GAUGE,
        "Whether the server is accepting new connections.",
    ),
)

TIMEVALS: tuple[tuple[str, str, str], ...] = (
    ("rusage_user", "memcached_process_user_cpu_seconds_total", "User CPU time of the process."),
    (
        "rusage_system",
        "memcached_process_system_cpu_seconds_total",
        "System CPU time of the process.",
    ),
)

# Settings metrics the exporter emits only when `lru_crawler yes`. (field, name, is_bool, help)
LRU_SETTINGS: tuple[tuple[str, str, bool, str], ...] = (
    ("lru_crawler", "memcached_lru_crawler_enabled", True, "Whether the LRU crawler is enabled."),
    ("lru_crawler_sleep", "memcached_lru_crawler_sleep", False, "Microseconds between crawls."),
    (
        "lru_crawler_tocrawl",
        "memcached_lru_crawler_to_crawl",
        False,
        "Max items to crawl per slab per run.",
    ),
    (
        "lru_maintainer_thread",
        "memcached_lru_crawler_maintainer_thread",
        True,
        "Split LRU mode and background threads.",
    ),
    ("hot_lru_pct", "memcached_lru_crawler_hot_percent", False, "Percent of slab memory for HOT."),
    (
        "warm_lru_pct",
        "memcached_lru_crawler_warm_percent",
        False,
        "Percent of slab memory for WARM.",
    ),
    (
        "hot_max_factor",
        "memcached_lru_crawler_hot_max_factor",
        False,
        "Idle age of HOT as a factor of COLD age.",
    ),
    (
        "warm_max_factor",
        "memcached_lru_crawler_warm_max_factor",
        False,
        "Idle age of WARM as a factor of COLD age.",
    ),
)

ITEMS: tuple[tuple[str, str, str, str], ...] = (
    ("number", "memcached_slab_current_items", GAUGE, "Items stored in this slab class."),
    ("age", "memcached_slab_items_age_seconds", GAUGE, "Age of the oldest item in the class."),
    (
        "crawler_reclaimed",
        "memcached_slab_items_crawler_reclaimed_total",
        COUNTER,
        "Items freed by the LRU crawler.",
    ),
    ("evicted", "memcached_slab_items_evicted_total", COUNTER, "Items evicted before expiring."),
    (
        "evicted_nonzero",
        "memcached_slab_items_evicted_nonzero_total",
        COUNTER,
        "Items with an explicit expiry evicted before expiring.",
    ),
    (
        "evicted_time",
        "memcached_slab_items_evicted_time_seconds",
        UNTYPED,
        "Seconds since last access of the most recently evicted item.",
    ),
    (
        "evicted_unfetched",
        "memcached_slab_items_evicted_unfetched_total",
        COUNTER,
        "Items evicted and never fetched.",
    ),
    (
        "expired_unfetched",
        "memcached_slab_items_expired_unfetched_total",
        COUNTER,
        "Items expired and never fetched.",
    ),
    (
        "outofmemory",
        "memcached_slab_items_outofmemory_total",
        COUNTER,
        "Times the class failed to store an item for lack of memory.",
    ),
    ("reclaimed", "memcached_slab_items_reclaimed_total", COUNTER, "Items reclaimed."),
    (
        "tailrepairs",
        "memcached_slab_items_tailrepairs_total",
        COUNTER,
        "Times the LRU tail needed repairing.",
    ),
    (
        "mem_requested",
        "memcached_slab_mem_requested_bytes",
        UNTYPED,
        "Bytes the items of this class take up.",
    ),
    (
        "moves_to_cold",
        "memcached_slab_items_moves_to_cold",
        UNTYPED,
        "Items moved from HOT or WARM into COLD.",
    ),
    (
        "moves_to_warm",
        "memcached_slab_items_moves_to_warm",
        UNTYPED,
        "Items moved from COLD into WARM.",
    ),
    (
        "moves_within_lru",
        "memcached_slab_items_moves_within_lru",
        UNTYPED,
        "Items bumped within HOT or WARM.",
    ),
    ("number_hot", "memcached_slab_hot_items", GAUGE, "Items in the HOT LRU."),
    ("number_warm", "memcached_slab_warm_items", GAUGE, "Items in the WARM LRU."),
    ("number_cold", "memcached_slab_cold_items", GAUGE, "Items in the COLD LRU."),
    ("number_temp", "memcached_slab_temporary_items", GAUGE, "Items in the TEMPORARY LRU."),
    ("age_hot", "memcached_slab_hot_age_seconds", GAUGE, "Age of the oldest item in HOT."),
    ("age_warm", "memcached_slab_warm_age_seconds", GAUGE, "Age of the oldest item in WARM."),
)

LRU_HITS: tuple[tuple[str, str], ...] = (
    ("hits_to_hot", "hot"),
    ("hits_to_warm", "warm"),
    ("hits_to_cold", "cold"),
    ("hits_to_temp", "temporary"),
)

SLABS: tuple[tuple[str, str, str], ...] = (
    ("chunk_size", "memcached_slab_chunk_size_bytes", "Bytes of each chunk in this class."),
    ("chunks_per_page", "memcached_slab_chunks_per_page", "Chunks in one page of this class."),
    ("total_pages", "memcached_slab_current_pages", "Pages allocated to this class."),
    ("total_chunks", "memcached_slab_current_chunks", "Chunks allocated to this class."),
    ("used_chunks", "memcached_slab_chunks_used", "Chunks holding an item."),
    ("free_chunks", "memcached_slab_chunks_free", "Chunks not holding an item."),
    (
        "free_chunks_end",
        "memcached_slab_chunks_free_end",
        "Free chunks at the end of the last page.",
    ),
)

HIT_MISS_OPS = ("get", "delete", "incr", "decr", "cas", "touch")

# Discovery figures (ours): (metric name, type, help, stats fields accepted, first present wins).
# Any other numeric `cluster_*` field of `stats` is exported untyped as memcached_<field>.
CLUSTER_METRICS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "memcached_cluster_config_version",
        GAUGE,
        "Version of the cluster document this process serves.",
        ("cluster_config_version", "cluster_version", "config_version"),
    ),
    (
        "memcached_cluster_nodes",
        GAUGE,
        "Nodes in the cluster document this process serves.",
        ("cluster_nodes", "cluster_node_count", "cluster_members"),
    ),
    ("memcached_cluster_joins_total", COUNTER, "Nodes that joined.", ("cluster_joins",)),
    ("memcached_cluster_leaves_total", COUNTER, "Nodes that left gracefully.", ("cluster_leaves",)),
    (
        "memcached_cluster_removals_total",
        COUNTER,
        "Nodes removed after missing heartbeats or by hand.",
        ("cluster_removals",),
    ),
    ("memcached_cluster_heartbeats_total", COUNTER, "Heartbeats.", ("cluster_heartbeats",)),
    (
        "memcached_cluster_heartbeat_failures_total",
        COUNTER,
        "Heartbeats that failed.",
        ("cluster_heartbeat_failures",),
    ),
    (
        "memcached_cluster_config_requests_total",
        COUNTER,
        "Cluster document requests answered (config get cluster and the legacy get).",
        ("cluster_config_requests", "config_requests"),
    ),
)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class _Families:
    """Metric families of one scrape, created on first use so each name is yielded once."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}
        self.errors = 0

    def add(
        self, name: str, typ: str, doc: str, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        m = self.by_name.get(name)
        if m is None:
            base = name[:-6] if typ == COUNTER and name.endswith("_total") else name
            m = self.by_name[name] = Metric(base, doc, typ)
        m.add_sample(name, dict(labels or {}), value)

    def number(self, text: str | None) -> float | None:
        """The exporter's parse: a float, or an error that turns memcached_up to 0."""
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            self.errors += 1
            return None

    def boolean(self, text: str | None) -> float | None:
        if text is None:
            return None
        if text in ("yes", "no"):
            return 1.0 if text == "yes" else 0.0
        self.errors += 1
        return None

    def timeval(self, text: str | None) -> float | None:
        """memcached prints rusage as ``sec.usec``; the exporter insists on exactly one dot."""
        if text is None:
            return None
        sec, dot, usec = text.partition(".")
        if not dot or "." in usec or not sec.isdigit() or not usec.isdigit():
            self.errors += 1
            return None
        return int(sec) + int(usec) / 1e6


class MemcachedCollector(Collector):
    """memcached_exporter's metrics (and ours) from whatever the provider returns."""

    def __init__(self, provider: SnapshotProvider) -> None:
        self._provider = provider

    def collect(self) -> Iterator[Metric]:
        up = Metric("memcached_up", "Could the server be reached.", GAUGE)
        try:
            snap = self._provider()
        except Exception:  # a failing snapshot is a scrape saying "down", not an HTTP 500
            up.add_sample("memcached_up", {}, 0.0)
            yield up
            return
        fam = _Families()
        _general(fam, snap.stats)
        _settings(fam, snap.settings)
        for cid in sorted(snap.items):
            _items(fam, str(cid), snap.items[cid])
        for cid in sorted(snap.slabs):
            _slab(fam, str(cid), snap.slabs[cid])
        _cluster(fam, snap.stats)
        up.add_sample("memcached_up", {}, 0.0 if fam.errors else 1.0)
        yield up
        yield from fam.by_name.values()
        if snap.latency is not None:
            yield _latency(snap.latency)


def _general(fam: _Families, s: Mapping[str, str]) -> None:
    if "version" in s:
        fam.add(
            "memcached_version",
            GAUGE,
            "The version of this server.",
            1.0,
            {"version": s["version"]},
        )
    doc = "Requests by command and status, as memcached_exporter derives them from stats."
    name = "memcached_commands_total"
    for op in HIT_MISS_OPS:
        for suffix, status in (("_hits", "hit"), ("_misses", "miss")):
            v = fam.number(s.get(op + suffix))
            if v is not None:
                fam.add(name, COUNTER, doc, v, {"command": op, "status": status})
    for field_name, command, status in (
        ("cas_badval", "cas", "badval"),
        ("cmd_flush", "flush", "hit"),
    ):
        v = fam.number(s.get(field_name))
        if v is not None:
            fam.add(name, COUNTER, doc, v, {"command": command, "status": status})
    # memcached counts cas commands again in cmd_set
    sets = fam.number(s.get("cmd_set"))
    cas = [fam.number(s.get(k)) for k in ("cas_misses", "cas_hits", "cas_badval")]
    if sets is not None and all(c is not None for c in cas):
        fam.add(
            name,
            COUNTER,
            doc,
            sets - sum(c or 0.0 for c in cas),
            {"command": "set", "status": "hit"},
        )
    for key, metric, typ, help_text in GENERAL:
        v = fam.number(s.get(key))
        if v is not None:
            fam.add(metric, typ, help_text, v)
    for key, metric, help_text in TIMEVALS:
        v = fam.timeval(s.get(key))
        if v is not None:
            fam.add(metric, COUNTER, help_text, v)


def _settings(fam: _Families, settings: Mapping[str, str]) -> None:
    v = fam.number(settings.get("maxconns"))
    if v is not None:
        fam.add("memcached_max_connections", GAUGE, "Maximum number of clients allowed.", v)
    if settings.get("lru_crawler") != "yes":
        return
    for key, metric, is_bool, help_text in LRU_SETTINGS:
        text = settings.get(key)
        v = fam.boolean(text) if is_bool else fam.number(text)
        if v is not None:
            fam.add(metric, GAUGE, help_text, v)


def _items(fam: _Families, slab: str, u: Mapping[str, str]) -> None:
    labels = {"slab": slab}
    for key, metric, typ, help_text in ITEMS:
        v = fam.number(u.get(key))
        if v is not None:
            fam.add(metric, typ, help_text, v, labels)
    for key, lru in LRU_HITS:
        v = fam.number(u.get(key))
        if v is not None:
            fam.add(
                "memcached_slab_lru_hits_total",
                COUNTER,
                "Hits to each LRU of the class.",
                v,
                {"slab": slab, "lru": lru},
            )


def _slab(fam: _Families, slab: str, v: Mapping[str, str]) -> None:
    name = "memcached_slab_commands_total"
    doc = "Requests by command and status, per slab class."
    for op in HIT_MISS_OPS:
        n = fam.number(v.get(f"{op}_hits"))
        if n is not None:
            fam.add(name, COUNTER, doc, n, {"slab": slab, "command": op, "status": "hit"})
    n = fam.number(v.get("cas_badval"))
    if n is not None:
        fam.add(name, COUNTER, doc, n, {"slab": slab, "command": "cas", "status": "badval"})
    sets = fam.number(v.get("cmd_set"))
    cas = [fam.number(v.get(k)) for k in ("cas_hits", "cas_badval")]
    if sets is not None and all(c is not None for c in cas):
        labels = {"slab": slab, "command": "set", "status": "hit"}
        fam.add(name, COUNTER, doc, sets - sum(c or 0.0 for c in cas), labels)
    for key, metric, help_text in SLABS:
        n = fam.number(v.get(key))
        if n is not None:
            fam.add(metric, GAUGE, help_text, n, {"slab": slab})


def _cluster(fam: _Families, s: Mapping[str, str]) -> None:
    used: set[str] = set()
    for metric, typ, help_text, fields in CLUSTER_METRICS:
        for key in fields:
            if key in s:
                used.add(key)
                v = fam.number(s[key])
                if v is not None:
                    fam.add(metric, typ, help_text, v)
                break
    for key, text in s.items():
        if not key.startswith("cluster_") or key in used:
            continue
        name = "memcached_" + key
        if name in fam.by_name or not _METRIC_NAME.match(name):
            continue
        try:
            value = float(text)
        except ValueError:
            continue  # text fields (addresses, states) have no number to export
        fam.add(name, UNTYPED, f"The `{key}` field of stats.", value)


def _latency(lat: LatencySnapshot) -> HistogramMetricFamily:
    h = HistogramMetricFamily(
        "memcached_request_duration_seconds",
        "Time to process a read batch and hand its replies to the kernel, by the family of its "
        f"first command (sampled: one event-loop wake-up in {SAMPLE_EVERY} times its first batch).",
        labels=["family"],
    )
    for name, hist in lat.families.items():
        h.add_metric([name], hist.cumulative(), hist.sum_ns / 1e9)
    return h


def build_info(registry: CollectorRegistry) -> None:
    """``memcache_server_build_info``: tells our node apart from a real memcached on a dashboard.

    memcached_exporter's ``memcached_version`` says the protocol version we emulate; this series
    says what actually runs (our release and the interpreter), as Prometheus' own
    ``prometheus_build_info`` does.
    """
    labels = {
        "version": __version__,
        "memcached_version": EMULATED_VERSION,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    # a gauge fixed at 1, as prometheus_build_info is, so both exposition formats name it alike
    info = Gauge(
        "memcache_server_build_info",
        "Which memcache-server release this is; always 1.",
        list(labels),
        registry=registry,
    )
    info.labels(**labels).set(1)


def build_registry(provider: SnapshotProvider, process_metrics: bool = True) -> CollectorRegistry:
    """A registry of our own with the memcached collector (and the process's CPU/RSS/fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MemcachedCollector(provider))
    build_info(registry)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry

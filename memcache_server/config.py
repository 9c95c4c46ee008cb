"""ServerConfig: every tunable of a node, with memcached's default, validated once at start.

Defaults, the -o sub-options and each setting's own check come from the options table
(``options.py``); this module adds the checks that read several settings. The CLI (and tests)
build one ``ServerConfig``; everything else only reads it. A bad value raises
``ConfigError`` with a message in memcached's spirit, so the node refuses to start instead of
running with a setting the user did not ask for.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field, replace

from memcache_server.options import (
    DEFAULTS,
    EXTENDED,
    KB,
    MB,
    OPTIONS,
    ConfigError,
    ExitCode,
    Option,
    parse_size,
)
from memcache_server.protocol.address import split_host_port

__all__ = [
    "ConfigError",
    "StartupError",
    "ServerConfig",
    "ExitCode",
    "parse_size",
    "parse_extended",
    "KB",
    "MB",
]

EMULATED_VERSION = "1.6.18"
D = DEFAULTS  # each field's default, from the options table


class StartupError(Exception):
    """A resource named by the config (auth file, certificates) that cannot be used at start.

    Carries the exit status memcached uses for that failure.
    """

    def __init__(self, message: str, exit_code: int = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Fields a sub-option's implied value never overrides once they were given: memcached's
# no_modern keeps an earlier slab_chunk_max (its slab_chunk_size_changed).
STICKY = frozenset({"slab_chunk_max"})


def parse_extended(items: list[str]) -> dict[str, str | None]:
    """Split ``-o a,b=1`` options (possibly given several times) into a dict in the order they
    apply (see ``ServerConfig.with_extended``); unknown names fail."""
    out: dict[str, str | None] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            kind = EXTENDED.get(name)
            if kind is None:
                raise ConfigError(f'Illegal suboption "{part}"')
            if kind == "flag" and sep:
                raise ConfigError(f'Illegal suboption "{part}"')
            if kind in ("int", "float", "str") and not sep:
                raise ConfigError(f'Missing value for suboption "{name}"')
            if kind in ("int", "int?") and sep:
                try:
                    int(value)
                except ValueError:
                    raise ConfigError(f'Invalid value for suboption "{name}": {value}') from None
            if kind == "float":
                try:
                    float(value)
                except ValueError:
                    raise ConfigError(f'Invalid value for suboption "{name}": {value}') from None
            out.pop(name, None)  # a repeated one counts where it was given last
            out[name] = value if sep else None
    return out


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every setting of a node. Defaults are memcached 1.6's, except ``listen`` (loopback)."""

    port: int = D["port"]
    listen: tuple[str, ...] = D["listen"]
    unix_socket: str | None = D["unix_socket"]
    unix_mask: int = D["unix_mask"]
    udp_port: int = D["udp_port"]
    memory_limit_mb: int = D["memory_limit_mb"]
    disable_evictions: bool = D["disable_evictions"]
    max_connections: int = D["max_connections"]
    threads: int = D["threads"]
    reqs_per_event: int = D["reqs_per_event"]
    item_size_max: int = D["item_size_max"]
    growth_factor: float = D["growth_factor"]
    chunk_size: int = D["chunk_size"]
    use_cas: bool = D["use_cas"]
    flush_enabled: bool = D["flush_enabled"]
    shutdown_enabled: bool = D["shutdown_enabled"]
    dump_enabled: bool = D["dump_enabled"]
    watch_enabled: bool = D["watch_enabled"]
    backlog: int = D["backlog"]
    protocol: str = D["protocol"]
    verbosity: int = D["verbosity"]
    user: str | None = D["user"]
    daemonize: bool = D["daemonize"]
    pidfile: str | None = D["pidfile"]
    lock_memory: bool = D["lock_memory"]
    large_pages: bool = D["large_pages"]
    coredumps: bool = D["coredumps"]
    auth_file: str | None = D["auth_file"]
    memory_file: str | None = D["memory_file"]  # -e: item memory in this file (restartable)
    enable_ssl: bool = D["enable_ssl"]
    prefix_delimiter: str = D["prefix_delimiter"]
    detail_enabled: bool = D["detail_enabled"]
    extended: dict[str, str | None] = field(default_factory=dict)
    # Set from `extended` by `with_extended` (the -o rows of the options table), so the hot
    # path reads plain attributes.
    idle_timeout: int = D["idle_timeout"]
    slab_chunk_max: int = D["slab_chunk_max"]
    lru_crawler: bool = D["lru_crawler"]
    lru_crawler_sleep: int = D["lru_crawler_sleep"]
    lru_crawler_tocrawl: int = D["lru_crawler_tocrawl"]
    maxconns_fast: bool = D["maxconns_fast"]
    hash_algorithm: str = D["hash_algorithm"]
    tail_repair_time: int = D["tail_repair_time"]
    temporary_ttl: int = D["temporary_ttl"]
    read_buf_mem_limit: int = D["read_buf_mem_limit"]
    track_sizes: bool = D["track_sizes"]
    slab_reassign: bool = D["slab_reassign"]
    slab_automove: int = D["slab_automove"]
    slab_automove_ratio: float = D["slab_automove_ratio"]
    slab_automove_window: int = D["slab_automove_window"]
    watcher_logbuf_size: int = D["watcher_logbuf_size"]
    worker_logbuf_size: int = D["worker_logbuf_size"]
    hot_lru_pct: int = D["hot_lru_pct"]
    warm_lru_pct: int = D["warm_lru_pct"]
    hot_max_factor: float = D["hot_max_factor"]
    warm_max_factor: float = D["warm_max_factor"]
    lru_maintainer: bool = D["lru_maintainer"]  # the segmented LRU and its maintainer thread
    temp_lru: bool = D["temp_lru"]
    lru_admission: str = D["lru_admission"]  # "none" or "tinylfu" (storage/admission.py)
    # Project settings.
    max_line: int = 2048
    max_output_buffer: int = 4 * MB
    print_port: bool = False
    # Cluster membership (discovery/member.py): the config node to join, if any.
    join: str | None = D["join"]
    advertise: str | None = D["advertise"]
    cluster_token: str | None = D["cluster_token"]
    heartbeat_interval: float = D["heartbeat_interval"]
    drain_seconds: float = D["drain_seconds"]
    # --warm: copy this node's keys in before joining, push them out on a graceful leave
    warm: bool = D["warm"]
    warm_rate: int = D["warm_rate"]  # items per second a hand-over copies at most (0: any)
    allow_config_writes: bool = D["allow_config_writes"]
    debug_time: bool = D["debug_time"]  # accept `debugtime <seconds>` (moves the clock; for tests)
    # HOST:PORT for the Prometheus /metrics endpoint (metrics_http.parse_listen); None: off.
    metrics_listen: str | None = D["metrics_listen"]

    @property
    def memory_limit(self) -> int:
        return self.memory_limit_mb * MB

    @property
    def item_header_size(self) -> int:
        """sizeof(item) in memcached 1.6 on 64-bit, plus the CAS field when CAS is on."""
        return 48 + (8 if self.use_cas else 0)

    def with_extended(self) -> ServerConfig:
        """Apply the -o options to the typed fields (called once by the CLI), as the options
        table says, in the order they were given, as memcached's getsubopt loop applies them:
        a later sub-option wins over what an earlier one set or implied (``lru_maintainer,
        no_modern`` leaves the maintainer off, ``no_modern,lru_maintainer`` on). The one
        exception is memcached's too: ``no_modern`` keeps a ``slab_chunk_max`` given before it."""
        ext = self.extended
        by_sub: dict[str, list[Option]] = {}
        for o in OPTIONS:
            if o.sub:
                by_sub.setdefault(o.sub, []).append(o)
        changes: dict[str, object] = {}
        for sub, value in ext.items():
            for o in by_sub.get(sub, ()):
                for name, implied in o.implies.items():
                    if name not in STICKY or name not in changes:
                        changes[name] = implied
                if o.name:
                    changes[o.name] = o.parse(value)
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Refuse what memcached refuses at start, with a clear message: each setting's own
        check from the options table, then the checks that look at several settings."""
        for o in OPTIONS:
            if o.name:
                refusal = o.check(getattr(self, o.name))
                if refusal is not None:
                    raise ConfigError(refusal, o.refusal)
        if self.item_size_max > self.memory_limit // 2:
            raise ConfigError(
                "Cannot set item size limit higher than 1/2 of memory max.", ExitCode.USAGE
            )
        if self.slab_chunk_max > self.item_size_max // 2 and self.item_size_max >= 2 * KB:
            if "slab_chunk_max" in self.extended:
                raise ConfigError(
                    "slab_chunk_max cannot be larger than half of the item size max", ExitCode.USAGE
                )
        if self.auth_file and self.udp_port:
            raise ConfigError(
                "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
                ExitCode.USAGE,
            )
        if self.hot_lru_pct + self.warm_lru_pct > 80:
            raise ConfigError(
                "hot_lru_pct + warm_lru_pct cannot be more than 80% combined", ExitCode.USAGE
            )
        if self.temp_lru and not self.lru_maintainer:
            raise ConfigError("temporary_ttl requires lru_maintainer to be enabled",
                              ExitCode.USAGE)
        if self.lru_admission != "none" and not self.lru_maintainer:
            raise ConfigError("lru_admission requires lru_maintainer to be enabled",
                              ExitCode.USAGE)
        for addr in self.listen:
            check_listen_address(addr, ",".join(self.listen))
        self._validate_cluster()

    def _validate_cluster(self) -> None:
        if self.join is not None and not all(
            _is_host_port(part, need_port=True) for part in self.join.split(",")
        ):
            raise ConfigError(f"--join expects HOST:PORT[,HOST:PORT...], got {self.join!r}")
        if self.advertise is not None and not _is_host_port(self.advertise, need_port=False):
            raise ConfigError(f"--advertise expects HOST[:PORT], got {self.advertise!r}")
        if self.join and self.unix_socket and not (self.advertise and ":" in self.advertise):
            raise ConfigError("--join with a UNIX socket needs --advertise HOST:PORT")
        if self.warm and not self.join:
            raise ConfigError("--warm needs --join (it copies keys from the cluster's nodes)")
        if self.warm and self.unix_socket:
            raise ConfigError("--warm needs a TCP listener (the hand-over speaks to this node)")

    @property
    def effective_chunk_max(self) -> int:
        """The largest slab chunk: slab_chunk_max (512 KB), which may not exceed -I."""
        return min(self.slab_chunk_max, self.item_size_max)


def check_listen_address(addr: str, every: str) -> None:
    """A -l entry must be an IP address or a resolvable host name (memcached fails at bind,
    naming ``every`` address it was given, comma separated, as it keeps them)."""
    unknown = ConfigError(
        "getaddrinfo(): Name or service not known\n"
        f"failed to listen on one of interface(s) {every}: Success",
        ExitCode.OS_ERROR,
    )
    try:
        host, _ = split_host_port(addr, 0, port_zero=True)
    except ValueError:
        raise unknown from None
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        raise unknown from None


def _is_host_port(text: str, need_port: bool) -> bool:
    try:
        host, _ = split_host_port(text, None if need_port else 0)
    except ValueError:
        return False
    return " " not in host

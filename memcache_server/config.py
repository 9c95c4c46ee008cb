"""ServerConfig: every tunable of a node, with memcached's default, validated once at start.

The CLI (and tests) build one ``ServerConfig``; everything else only reads it. A bad value raises
``ConfigError`` with a message in memcached's spirit, so the node refuses to start instead of
running with a setting the user did not ask for.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field, replace

__all__ = ["ConfigError", "StartupError", "ServerConfig", "parse_size", "parse_extended"]

EMULATED_VERSION = "1.6.18"
KB = 1024
MB = 1024 * 1024


class ConfigError(ValueError):
    """A setting that memcached would refuse at start."""


class StartupError(Exception):
    """A resource named by the config (auth file, certificates) that cannot be used at start.

    Carries the exit status memcached uses for that failure.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Extended options (-o) memcached accepts. Value kinds: "flag" (no value), "int", "float", "str".
# Options we honour change behaviour; the others are accepted (memcached's names) and reported in
# `stats settings` so scripts that pass them keep working.
EXTENDED_OPTIONS: dict[str, str] = {
    "maxconns_fast": "flag",
    "no_maxconns_fast": "flag",
    "hashpower": "int",
    "tail_repair_time": "int",
    "hash_algorithm": "str",
    "lru_crawler": "flag",
    "no_lru_crawler": "flag",
    "lru_crawler_sleep": "int",
    "lru_crawler_tocrawl": "int",
    "lru_maintainer": "flag",
    "no_lru_maintainer": "flag",
    "hot_lru_pct": "int",
    "warm_lru_pct": "int",
    "hot_max_factor": "float",
    "warm_max_factor": "float",
    "temporary_ttl": "int",
    "idle_timeout": "int",
    "slab_chunk_max": "int",
    "slab_reassign": "flag",
    "no_slab_reassign": "flag",
    "slab_automove": "int?",
    "slab_automove_ratio": "float",
    "slab_automove_window": "int",
    "watcher_logbuf_size": "int",
    "worker_logbuf_size": "int",
    "read_buf_mem_limit": "int",
    "track_sizes": "flag",
    "no_hashexpand": "flag",
    "modern": "flag",
    "no_modern": "flag",
    "inline_ascii_resp": "flag",
    "no_inline_ascii_resp": "flag",
    "sock_cookie_id": "int",
    "ssl_chain_cert": "str",
    "ssl_key": "str",
    "ssl_keyformat": "int",
    "ssl_verify_mode": "int",
    "ssl_ciphers": "str",
    "ssl_ca_cert": "str",
    "ssl_wbuf_size": "int",
    "ssl_session_cache": "flag",
    "ssl_kernel_tls": "flag",
    "ssl_min_version": "int",
    "slab_automove_freeratio": "float",
    "temp_lru": "flag",
    "no_temp_lru": "flag",
}

HASH_ALGORITHMS = ("murmur3", "jenkins", "xxh3")


def parse_size(text: str) -> int:
    """Parse memcached's -I value: a byte count with an optional k/m suffix (``1m``, ``512k``)."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = KB, t[:-1]
    elif t.endswith("m"):
        mult, t = MB, t[:-1]
    if not t.isdigit():
        raise ConfigError(f"Invalid size: {text!r}")
    return int(t) * mult


def parse_extended(items: list[str]) -> dict[str, str | None]:
    """Split ``-o a,b=1`` options (possibly given several times) into a dict; unknown names fail."""
    out: dict[str, str | None] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            kind = EXTENDED_OPTIONS.get(name)
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
            out[name] = value if sep else None
    return out


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every setting of a node. Defaults are memcached 1.6's, except ``listen`` (loopback)."""

    port: int = 11211
    listen: tuple[str, ...] = ("127.0.0.1",)
    unix_socket: str | None = None
    unix_mask: int = 0o700
    udp_port: int = 0
    memory_limit_mb: int = 64
    disable_evictions: bool = False
    max_connections: int = 1024
    threads: int = 4
    reqs_per_event: int = 20
    item_size_max: int = 1 * MB
    growth_factor: float = 1.25
    chunk_size: int = 48
    use_cas: bool = True
    flush_enabled: bool = True
    shutdown_enabled: bool = False
    dump_enabled: bool = True
    watch_enabled: bool = True
    backlog: int = 1024
    protocol: str = "auto"
    verbosity: int = 0
    user: str | None = None
    daemonize: bool = False
    pidfile: str | None = None
    lock_memory: bool = False
    large_pages: bool = False
    coredumps: bool = False
    auth_file: str | None = None
    enable_ssl: bool = False
    prefix_delimiter: str = ":"
    detail_enabled: bool = False
    extended: dict[str, str | None] = field(default_factory=dict)
    # Derived from `extended` by `from_extended` so the hot path reads plain attributes.
    idle_timeout: int = 0
    slab_chunk_max: int = 512 * KB
    lru_crawler: bool = True
    lru_crawler_sleep: int = 100
    lru_crawler_tocrawl: int = 0
    maxconns_fast: bool = True
    hash_algorithm: str = "murmur3"
    tail_repair_time: int = 0
    temporary_ttl: int = 61
    read_buf_mem_limit: int = 0
    track_sizes: bool = False
    slab_reassign: bool = True
    slab_automove: int = 1
    slab_automove_ratio: float = 0.8
    slab_automove_window: int = 30
    watcher_logbuf_size: int = 256 * KB
    worker_logbuf_size: int = 64 * KB
    hot_lru_pct: int = 20
    warm_lru_pct: int = 40
    hot_max_factor: float = 0.2
    warm_max_factor: float = 2.0
    # Project settings.
    max_line: int = 2048
    max_output_buffer: int = 4 * MB
    print_port: bool = False
    # Cluster membership (discovery/member.py): the config node to join, if any.
    join: str | None = None
    advertise: str | None = None
    cluster_token: str | None = None
    heartbeat_interval: float = 1.0
    drain_seconds: float = 5.0
    # --warm: copy this node's keys in before joining, push them out on a graceful leave
    warm: bool = False
    warm_rate: int = 20_000  # items per second a hand-over copies at most (0: no bound)
    allow_config_writes: bool = False
    debug_time: bool = False  # accept `debugtime <seconds>` (moves the clock; for tests)
    # HOST:PORT for the Prometheus /metrics endpoint (metrics_http.parse_listen); None: off.
    metrics_listen: str | None = None

    @property
    def memory_limit(self) -> int:
        return self.memory_limit_mb * MB

    @property
    def item_header_size(self) -> int:
        """sizeof(item) in memcached 1.6 on 64-bit, plus the CAS field when CAS is on."""
        return 48 + (8 if self.use_cas else 0)

    def with_extended(self) -> ServerConfig:
        """Apply the -o options to the typed fields (called once by the CLI)."""
        ext = self.extended
        changes: dict[str, object] = {}

        def num(name: str) -> int:
            return int(ext[name] or 0)

        if "idle_timeout" in ext:
            changes["idle_timeout"] = num("idle_timeout")
        if "slab_chunk_max" in ext:
            # memcached takes kilobytes here (it also accepts a byte count >= 1 MB's worth).
            # memcached 1.6.18 takes this value in bytes (its help text says kilobytes)
            changes["slab_chunk_max"] = num("slab_chunk_max")
        if "no_lru_crawler" in ext:
            changes["lru_crawler"] = False
        if "lru_crawler" in ext:
            changes["lru_crawler"] = True
        if "lru_crawler_sleep" in ext:
            changes["lru_crawler_sleep"] = num("lru_crawler_sleep")
        if "lru_crawler_tocrawl" in ext:
            changes["lru_crawler_tocrawl"] = num("lru_crawler_tocrawl")
        if "no_maxconns_fast" in ext:
            changes["maxconns_fast"] = False
        if "hash_algorithm" in ext:
            changes["hash_algorithm"] = ext["hash_algorithm"] or ""
        if "tail_repair_time" in ext:
            changes["tail_repair_time"] = num("tail_repair_time")
        if "temporary_ttl" in ext:
            changes["temporary_ttl"] = num("temporary_ttl")
        if "read_buf_mem_limit" in ext:
            changes["read_buf_mem_limit"] = num("read_buf_mem_limit") * MB
        if "track_sizes" in ext:
            changes["track_sizes"] = True
        if "no_slab_reassign" in ext:
            changes["slab_reassign"] = False
        if "slab_automove" in ext:
            v2 = ext["slab_automove"]
            changes["slab_automove"] = 1 if v2 is None else int(v2)
        if "slab_automove_ratio" in ext:
            changes["slab_automove_ratio"] = float(ext["slab_automove_ratio"] or 0)
        if "slab_automove_window" in ext:
            changes["slab_automove_window"] = num("slab_automove_window")
        if "watcher_logbuf_size" in ext:
            changes["watcher_logbuf_size"] = num("watcher_logbuf_size") * KB
        if "worker_logbuf_size" in ext:
            changes["worker_logbuf_size"] = num("worker_logbuf_size") * KB
        for name in ("hot_lru_pct", "warm_lru_pct"):
            if name in ext:
                changes[name] = num(name)
        for name in ("hot_max_factor", "warm_max_factor"):
            if name in ext:
                changes[name] = float(ext[name] or 0)
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Refuse what memcached refuses at start, with a clear message."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"Invalid port: {self.port}")
        if self.udp_port != 0:
            raise ConfigError("UDP is not supported by this server: use -U 0 (the default)")
        if self.threads <= 0:
            raise ConfigError("Number of threads must be greater than 0")
        if self.threads > 64:
            raise ConfigError("Number of threads must not exceed 64")
        if self.max_connections <= 0:
            raise ConfigError("Maximum connections must be greater than 0")
        if self.memory_limit_mb <= 0:
            raise ConfigError("Memory limit must be greater than 0")
        if self.reqs_per_event <= 0:
            raise ConfigError("Number of requests per event must be greater than 0")
        if self.item_size_max < KB:
            raise ConfigError("Item max size cannot be less than 1024 bytes.")
        if self.item_size_max > 1024 * MB:
            raise ConfigError("Cannot set item size limit higher than 1/2 of memory max.")
        if self.item_size_max > self.memory_limit // 2:
            raise ConfigError("Cannot set item size limit higher than 1/2 of memory max.")
        if self.growth_factor <= 1.0:
            raise ConfigError("Factor must be greater than 1")
        if self.chunk_size <= 0:
            raise ConfigError("Chunk size must be greater than 0")
        if self.backlog <= 0:
            raise ConfigError("Listen backlog must be greater than 0")
        if self.protocol not in ("auto", "ascii", "binary"):
            raise ConfigError(f"Invalid value for binding protocol: {self.protocol}")
        if self.protocol == "binary":
            raise ConfigError("The binary protocol is not supported by this server: use -B ascii")
        if self.hash_algorithm not in HASH_ALGORITHMS:
            raise ConfigError(f"Unknown hash_algorithm option: {self.hash_algorithm}")
        if self.slab_chunk_max > self.item_size_max // 2 and self.item_size_max >= 2 * KB:
            if "slab_chunk_max" in self.extended:
                raise ConfigError("slab_chunk_max cannot be larger than half of the item size max")
        if self.idle_timeout < 0:
            raise ConfigError("idle_timeout must be >= 0")
        if self.slab_automove not in (0, 1, 2):
            raise ConfigError("slab_automove must be between 0 and 2")
        for addr in self.listen:
            check_listen_address(addr)
        self._validate_cluster()

    def _validate_cluster(self) -> None:
        if not 0.01 <= self.heartbeat_interval <= 3600:
            raise ConfigError("--heartbeat-interval must be between 0.01 and 3600 seconds")
        if not 0 <= self.drain_seconds <= 86400:
            raise ConfigError("--drain-seconds must be between 0 and 86400")
        if self.warm and not self.join:
            raise ConfigError("--warm needs --join (it copies keys from the cluster's nodes)")
        if self.warm and self.unix_socket:
            raise ConfigError("--warm needs a TCP listener (the hand-over speaks to this node)")
        if not 0 <= self.warm_rate <= 10_000_000:
            raise ConfigError("--warm-rate must be between 0 and 10000000 items per second")
        if self.cluster_token is not None and not _is_token(self.cluster_token):
            raise ConfigError("--cluster-token must be 1-250 printable ASCII characters, no spaces")
        for name, text in (("--join", self.join), ("--advertise", self.advertise)):
            if text is not None and not _is_host_port(text, need_port=name == "--join"):
                raise ConfigError(f"{name} expects HOST:PORT, got {text!r}")
        if self.join and self.unix_socket and not (self.advertise and ":" in self.advertise):
            raise ConfigError("--join with a UNIX socket needs --advertise HOST:PORT")

    @property
    def effective_chunk_max(self) -> int:
        """The largest slab chunk: slab_chunk_max (512 KB), which may not exceed -I."""
        return min(self.slab_chunk_max, self.item_size_max)


def check_listen_address(addr: str) -> None:
    """A -l entry must be an IP address or a resolvable host name (memcached fails at bind)."""
    host = addr
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        raise ConfigError(f"getaddrinfo(): Name or service not known: {addr}") from None


def _is_token(text: str) -> bool:
    """A cluster token travels as one protocol token: printable ASCII, no spaces."""
    return 0 < len(text) <= 250 and text.isascii() and text.isprintable() and " " not in text


def _is_host_port(text: str, need_port: bool) -> bool:
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or " " in host or (need_port and not port):
        return False
    return not port or (port.isdigit() and 0 < int(port) <= 65535)

"""The one options table: every setting's name, flags, parser, default, help, check and
``stats settings`` name, declared once.

Everything else derives from it, as gunicorn's ``Setting`` classes drive its command line and
config: the click options of ``memcache-server`` (cli.py), ``ServerConfig``'s defaults and
per-setting validation (config.py), the ``-o`` sub-options memcached accepts, and the
``stats settings`` lines shown as the config holds them (report.py adds the ones that change at
run time, in memcached's order). Pure data and small functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "Option",
    "OPTIONS",
    "DEFAULTS",
    "EXTENDED",
    "ConfigError",
    "ExitCode",
    "KB",
    "MB",
    "parse_size",
    "settings_values",
]

KB = 1024
MB = 1024 * 1024


class ExitCode(IntEnum):
    """The process exit statuses, memcached's (sysexits.h where it uses them)."""

    OK = 0
    FAILURE = 1  # most refusals at start, an unknown flag, a failed operator command
    USAGE = 64  # EX_USAGE: memcached's item-size and protocol refusals, unusable TLS certificates
    NO_INPUT = 66  # EX_NOINPUT: a state file that cannot be read
    OS_ERROR = 71  # EX_OSERR: cannot listen (address in use, permission, unknown host)
    # memcached abort()s when the -e file cannot be opened or mapped: the process dies of
    # SIGABRT, which a shell reports as 128 + 6 (the command line raises the signal itself).
    ABORTED = 134


class ConfigError(ValueError):
    """A setting that memcached would refuse at start, with the status memcached exits with."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_size(text: str) -> int:
    """Parse memcached's -I value: a byte count with an optional k/m suffix (``1m``, ``512k``)."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = KB, t[:-1]
    elif t.endswith("m"):
        mult, t = MB, t[:-1]
    if not t.isdigit():
        raise ConfigError(f"Invalid size: {text!r}", ExitCode.USAGE)
    return int(t) * mult


_UNSET: Any = object()  # no command-line default of its own: the config's default is shown


def _same(value: Any) -> Any:
    return value


def _ok(value: Any) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Option:
    """One setting.

    ``name`` is the ServerConfig field it sets ("" for a flag accepted only to be refused
    or ignored). ``flags`` are its command-line spellings (none for a ``-o`` sub-option, which
    is named by ``sub`` and read as ``kind``: flag, int, int? (optional int), float or str).
    ``parse`` turns what was given into the config's value; ``check`` returns memcached's
    refusal for a bad value, or None. ``stat`` names its ``stats settings`` lines, each shown
    through ``show``; ``refusal`` is the status memcached exits with when ``check`` refuses
    (EXIT_FAILURE for most, EX_USAGE for a few). ``cli`` holds click's extras (type, is_flag,
    count, multiple, envvar, metavar) and ``cli_default`` the default as spelled on the command
    line when it differs from the config's (``-I 1m``, ``-a 700``). ``param`` is the click
    parameter when several entries read one flag (``-D`` sets the delimiter and turns
    per-prefix stats on). ``implies`` holds other fields a sub-option sets too (``no_modern``
    turns several off), each unless that field's own sub-option is given as well.
    """

    name: str
    flags: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    stat: tuple[str, ...] = ()
    show: Callable[[Any], object] = _same
    parse: Callable[[Any], Any] = _same
    check: Callable[[Any], str | None] = _ok
    cli: Mapping[str, Any] = field(default_factory=dict)
    cli_default: Any = _UNSET
    param: str = ""
    sub: str = ""
    kind: str = ""
    refusal: ExitCode = ExitCode.FAILURE
    implies: Mapping[str, Any] = field(default_factory=dict)

    @property
    def click_name(self) -> str:
        return self.param or self.name

    @property
    def click_default(self) -> Any:
        """The default as the command line spells it."""
        return self.default if self.cli_default is _UNSET else self.cli_default


def _refuse(message: str) -> Callable[[Any], Any]:
    """A flag accepted by name only to be refused, with memcached-style words."""

    def parse(value: Any) -> Any:
        if value:
            raise ConfigError(message)
        return value

    return parse


def _not(value: Any) -> bool:
    return not value


def _listen(entries: tuple[str, ...]) -> tuple[str, ...]:
    """``-l`` may be repeated and comma separated; loopback when not given."""
    out: list[str] = []
    for entry in entries or ("127.0.0.1",):
        out += [a for a in entry.split(",") if a]
    return tuple(out)


def _between(low: float, high: float, message: str) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else message


def _above(low: float, message: str) -> Callable[[Any], str | None]:
    return lambda v: None if v > low else message


def _int(value: str | None) -> int:
    return int(value or 0)


def _float(value: str | None) -> float:
    return float(value or 0)


def _is_token(text: str | None) -> str | None:
    """A cluster token travels as one protocol token: printable ASCII, no spaces."""
    if text is None:
        return None
    if 0 < len(text) <= 250 and text.isascii() and text.isprintable() and " " not in text:
        return None
    return "--cluster-token must be 1-250 printable ASCII characters, no spaces"


_BINARY = "The binary protocol is not supported by this server: use -B ascii"


def _octal(text: str) -> int:
    """``-a``, read as memcached's ``strtol(optarg, NULL, 8)``: the leading octal digits, else 0."""
    digits = re.match(r"\s*([+-]?[0-7]*)", text)
    try:
        return int(digits.group(1), 8) if digits else 0
    except ValueError:
        return 0


def _protocol(value: str) -> str | None:
    if value not in ("auto", "ascii", "binary"):
        return f"Invalid value for binding protocol: {value}"
    return _BINARY if value == "binary" else None


def _item_size(value: int) -> str | None:
    if value < KB:
        return "Item max size cannot be less than 1024 bytes."
    if value > 1024 * MB:
        return "Cannot set item size limit higher than 1/2 of memory max."
    return None


def _threads(value: int) -> str | None:
    if value <= 0:
        return "Number of threads must be greater than 0"
    return "Number of threads must not exceed 64" if value > 64 else None


# The command line, in `memcache-server -h` order, then the -o sub-options.
OPTIONS: tuple[Option, ...] = (
    Option(
        "port",
        ("-p", "--port"),
        11211,
        "TCP port to listen on; 0 picks a free port and prints it on stdout.",
        check=lambda v: None if 0 <= v <= 65535 else f"Invalid port: {v}",
        cli={"type": int},
    ),
    Option(
        "udp_port",
        ("-U", "--udp-port"),
        0,
        "UDP port to listen on (default: 0, off).",
        stat=("udpport",),
        check=lambda v: None if 0 <= v <= 65535 else f"Invalid port: {v}",
        cli={"type": int},
    ),
    Option(
        "unix_socket",
        ("-s", "--unix-socket"),
        None,
        "UNIX socket to listen on (disables TCP).",
        stat=("domain_socket",),
        show=lambda v: v or "NULL",
    ),
    Option(
        "unix_mask",
        ("-a", "--unix-mask"),
        0o700,
        "Access mask for the UNIX socket, in octal.",
        stat=("umask",),
        show=lambda v: f"{v:o}",
        parse=_octal,
        cli_default="700",
    ),
    Option(
        "shutdown_enabled",
        ("-A", "--enable-shutdown"),
        False,
        'Enable the ascii "shutdown" command.',
        stat=("shutdown_command",),
        cli={"is_flag": True},
    ),
    Option(
        "listen",
        ("-l", "--listen"),
        ("127.0.0.1",),
        "Interface(s) to listen on, comma separated (default: 127.0.0.1).",
        parse=_listen,
        cli={"multiple": True},
    ),
    Option("daemonize", ("-d", "--daemon"), False, "Run as a daemon.", cli={"is_flag": True}),
    Option(
        "coredumps",
        ("-r", "--enable-coredumps"),
        False,
        "Accepted for compatibility.",
        cli={"is_flag": True},
    ),
    Option("user", ("-u", "--user"), None, "Assume the identity of USER (when root)."),
    Option(
        "memory_limit_mb",
        ("-m", "--memory-limit"),
        64,
        "Item memory in megabytes (bounds the process's real memory).",
        check=_above(0, "Memory limit must be greater than 0"),
        cli={"type": int},
    ),
    Option(
        "disable_evictions",
        ("-M", "--disable-evictions"),
        False,
        "Return an error on memory exhausted instead of evicting.",
        stat=("evictions",),
        show=lambda v: "off" if v else "on",
        cli={"is_flag": True},
    ),
    Option(
        "max_connections",
        ("-c", "--conn-limit"),
        1024,
        "Max simultaneous connections.",
        stat=("maxconns",),
        check=_above(0, "Maximum connections must be greater than 0"),
        cli={"type": int},
    ),
    Option(
        "lock_memory",
        ("-k", "--lock-memory"),
        False,
        "Accepted for compatibility (no effect).",
        cli={"is_flag": True},
    ),
    Option(
        "verbosity",
        ("-v", "--verbose"),
        0,
        "Verbose; -vv also logs client commands.",
        cli={"count": True},
    ),
    Option("pidfile", ("-P", "--pidfile"), None, "Save PID in FILE (with -d)."),
    Option(
        "growth_factor",
        ("-f", "--slab-growth-factor"),
        1.25,
        "Chunk size growth factor.",
        stat=("growth_factor",),
        check=_above(1.0, "Factor must be greater than 1"),
        cli={"type": float},
    ),
    Option(
        "chunk_size",
        ("-n", "--slab-min-size"),
        48,
        "Min space used for key+value+flags.",
        stat=("chunk_size",),
        check=_above(0, "Chunk size must be greater than 0"),
        cli={"type": int},
    ),
    Option(
        "large_pages",
        ("-L", "--enable-largepages"),
        False,
        "Accepted for compatibility.",
        cli={"is_flag": True},
    ),
    Option(
        "prefix_delimiter",
        ("-D",),
        ":",
        "Delimiter between key prefixes and ids for per-prefix stats.",
        stat=("stat_key_prefix",),
        parse=lambda v: v or ":",
        cli_default=None,  # given or not: -D also turns per-prefix stats on
        param="delimiter",
    ),
    Option("detail_enabled", (), False, parse=lambda v: v is not None, param="delimiter"),
    Option(
        "threads",
        ("-t", "--threads"),
        4,
        "Number of worker threads.",
        stat=("num_threads",),
        check=_threads,
        cli={"type": int},
    ),
    Option(
        "reqs_per_event",
        ("-R", "--max-reqs-per-event"),
        20,
        "Max requests served per connection before yielding to others.",
        stat=("reqs_per_event",),
        check=_above(0, "Number of requests per event must be greater than 0"),
        cli={"type": int},
    ),
    Option(
        "use_cas",
        ("-C", "--disable-cas"),
        True,
        "Disable use of CAS.",
        stat=("cas_enabled",),
        parse=_not,
        cli={"is_flag": True},
        cli_default=False,
        param="disable_cas",
    ),
    Option(
        "backlog",
        ("-b", "--listen-backlog"),
        1024,
        "Listen backlog.",
        stat=("tcp_backlog",),
        check=_above(0, "Listen backlog must be greater than 0"),
        cli={"type": int},
    ),
    Option(
        "protocol",
        ("-B", "--protocol"),
        "auto",
        "ascii or auto (the binary protocol is not supported).",
        stat=("binding_protocol",),
        show=lambda v: {"auto": "auto-negotiate", "ascii": "ascii"}.get(v, v),
        check=_protocol,
        refusal=ExitCode.USAGE,
    ),
    Option(
        "item_size_max",
        ("-I", "--max-item-size"),
        1 * MB,
        "Max item size (k/m suffixes; min 1k, max 1024m).",
        stat=("item_size_max",),
        parse=parse_size,
        check=_item_size,
        refusal=ExitCode.USAGE,
        cli_default="1m",
    ),
    Option(
        "",
        ("-S", "--enable-sasl"),
        False,
        "Not supported (use -Y).",
        parse=_refuse("SASL (-S) is not supported: use -Y for ASCII authentication"),
        cli={"is_flag": True},
        param="enable_sasl",
    ),
    Option(
        "flush_enabled",
        ("-F", "--disable-flush-all"),
        True,
        "Disable flush_all.",
        stat=("flush_enabled",),
        parse=_not,
        cli={"is_flag": True},
        cli_default=False,
        param="disable_flush_all",
    ),
    Option(
        "dump_enabled",
        ("-X", "--disable-dumping"),
        True,
        "Disable stats cachedump and lru_crawler metadump.",
        stat=("dump_enabled",),
        parse=_not,
        cli={"is_flag": True},
        cli_default=False,
        param="disable_dumping",
    ),
    Option(
        "watch_enabled",
        ("-W", "--disable-watch"),
        True,
        "Disable watch commands.",
        parse=_not,
        cli={"is_flag": True},
        cli_default=False,
        param="disable_watch",
    ),
    Option(
        "auth_file",
        ("-Y", "--auth-file"),
        None,
        "ASCII authentication file (user:pass).",
        stat=("auth_enabled_ascii",),
        show=lambda v: v or False,
    ),
    Option(
        "memory_file",
        ("-e", "--memory-file"),
        None,
        "mmap this file for item memory: a restartable cache (a stop by SIGTERM, SIGINT or "
        "SIGUSR1 keeps the items for the next start with the same memory settings). Use a "
        "RAM disk (/dev/shm).",
        stat=("memory_file",),
        show=lambda v: v or "(null)",
    ),
    Option(
        "enable_ssl",
        ("-Z", "--enable-ssl"),
        False,
        "Enable TLS.",
        stat=("ssl_enabled",),
        cli={"is_flag": True},
    ),
    Option(
        "",
        ("-N", "--napi-ids"),
        None,
        "Accepted for compatibility.",
        cli={"type": int},
        param="napi_ids",
    ),
    Option(
        "extended",
        ("-o", "--extended"),
        {},
        "Comma separated extended options (memcached's names).",
        cli={"multiple": True},
    ),
    Option("join", ("--join",), None,
           "Join the cluster of these config nodes (any one will do; fails over between them).",
           cli={"metavar": "HOST:PORT[,HOST:PORT...]"}),
    Option("advertise", ("--advertise",), None, "HOST[:PORT] published for this node."),
    Option(
        "cluster_token",
        ("--cluster-token",),
        None,
        "Shared secret for joining (or set MEMCACHE_CLUSTER_TOKEN).",
        check=_is_token,
        cli={"envvar": "MEMCACHE_CLUSTER_TOKEN"},
    ),
    Option(
        "heartbeat_interval",
        ("--heartbeat-interval",),
        1.0,
        "Seconds.",
        check=_between(0.01, 3600, "--heartbeat-interval must be between 0.01 and 3600 seconds"),
        cli={"type": float},
    ),
    Option(
        "drain_seconds",
        ("--drain-seconds",),
        5.0,
        "After leaving on SIGTERM, keep serving this long.",
        check=_between(0, 86400, "--drain-seconds must be between 0 and 86400"),
        cli={"type": float},
    ),
    Option(
        "warm",
        ("--warm",),
        False,
        "With --join: copy this node's keys from their owners before joining, and push them "
        "to the next owners before a graceful leave.",
        cli={"is_flag": True},
    ),
    Option(
        "warm_rate",
        ("--warm-rate",),
        5_000,
        "Items per second --warm copies at most (0: no bound).",
        check=_between(0, 10_000_000, "--warm-rate must be between 0 and 10000000 items/s"),
        cli={"type": int},
    ),
    Option(
        "allow_config_writes",
        ("--allow-config-writes",),
        False,
        "Accept config set/delete and writes to AmazonElastiCache:cluster.",
        cli={"is_flag": True},
    ),
    Option(
        "debug_time",
        ("--debug-time",),
        False,
        "Accept 'debugtime <seconds>' to move the server clock (for tests of expiry).",
        cli={"is_flag": True},
    ),
    Option(
        "metrics_listen",
        ("--metrics-listen",),
        None,
        "Serve Prometheus metrics at http://HOST:PORT/metrics (no HOST: 127.0.0.1; port 0 "
        "picks one, shown in `stats settings` as metrics_listen).",
        cli={"metavar": "HOST:PORT"},
    ),
    # -o sub-options that set a field (memcached's names). Later entries win where two set one
    # field (``-o no_lru_crawler,lru_crawler`` leaves the crawler on).
    Option("idle_timeout", default=0, stat=("idle_timeout",), parse=_int, sub="idle_timeout",
           help="timeout in seconds for idle connections (default: 0, no timeout)",
           kind="int", check=lambda v: None if v >= 0 else "idle_timeout must be >= 0"),
    # memcached 1.6.18 takes slab_chunk_max in bytes (its help text says kilobytes)
    Option("slab_chunk_max", default=512 * KB, parse=_int, sub="slab_chunk_max",
           help="maximum slab chunk size in bytes (default: 524288)",
           kind="int"),
    Option("lru_crawler", parse=lambda v: False, sub="no_lru_crawler",
           help="disable the LRU crawler background thread",
           kind="flag"),
    Option("lru_crawler", default=True, parse=lambda v: True, sub="lru_crawler",
           help="enable the LRU crawler background thread (default)",
           kind="flag"),
    Option("lru_crawler_sleep", default=100, parse=_int, sub="lru_crawler_sleep",
           help="microseconds to sleep between items (default: 100)",
           kind="int"),
    Option("lru_crawler_tocrawl", default=0, parse=_int, sub="lru_crawler_tocrawl",
           help="max items to crawl per slab per run (default: 0, unlimited)",
           kind="int"),
    Option("maxconns_fast", default=True, stat=("maxconns_fast",), parse=lambda v: False,
           sub="no_maxconns_fast",
           help="queue connections past -c instead of refusing them at once",
           kind="flag"),
    Option("maxconns_fast", parse=lambda v: True, sub="maxconns_fast",
           help="refuse connections past -c at once (default)",
           kind="flag"),
    Option("hash_algorithm", default="murmur3", stat=("hash_algorithm",),
           parse=lambda v: v or "", sub="hash_algorithm",
           help="shown in stats settings: murmur3 (default), jenkins, xxh3",
           kind="str",
           check=lambda v: None if v in ("murmur3", "jenkins", "xxh3")
           else f"Unknown hash_algorithm option: {v}"),
    Option("tail_repair_time", default=0, stat=("tail_repair_time",), parse=_int,
           sub="tail_repair_time",
           help="shown in stats settings; items are never stuck here (default: 0)",
           kind="int"),
    Option("temporary_ttl", default=61, stat=("temporary_ttl",), parse=_int,
           sub="temporary_ttl", implies={"temp_lru": True},
           help="TTLs up to this go to a TEMP LRU, never evicted (default: 61)",
           kind="int"),
    Option("read_buf_mem_limit", default=0, stat=("read_buf_mem_limit",),
           parse=lambda v: _int(v) * MB, sub="read_buf_mem_limit",
           help="megabytes for connection read/response buffers (default: 0, no limit)",
           kind="int"),
    Option("track_sizes", default=False, parse=lambda v: True, sub="track_sizes",
           help="enable dynamic reports for 'stats sizes'",
           kind="flag"),
    Option("slab_reassign", default=True, stat=("slab_reassign",), parse=lambda v: False,
           sub="no_slab_reassign",
           help="disable moving slab pages between classes",
           kind="flag"),
    Option("slab_reassign", parse=lambda v: True, sub="slab_reassign",
           help="allow moving slab pages between classes (default)",
           kind="flag"),
    Option("slab_automove", default=1, parse=lambda v: 1 if v is None else int(v),
           sub="slab_automove",
           help="0 off, 1 move pages from idle classes (default), 2 on every eviction",
           kind="int?",
           check=lambda v: None if v in (0, 1, 2) else "slab_automove must be between 0 and 2"),
    Option("slab_automove_ratio", default=0.8, parse=_float, sub="slab_automove_ratio",
           help="free-chunk ratio a class keeps before a page moves (default: 0.8)",
           kind="float"),
    Option("slab_automove_window", default=30, stat=("slab_automove_window",), parse=_int,
           sub="slab_automove_window",
           help="samples the automover looks back over (default: 30)",
           kind="int"),
    Option("watcher_logbuf_size", default=256 * KB, stat=("watcher_logbuf_size",),
           parse=lambda v: _int(v) * KB, sub="watcher_logbuf_size",
           help="kilobytes of per-watcher write buffer (default: 256)",
           kind="int"),
    Option("worker_logbuf_size", default=64 * KB, stat=("worker_logbuf_size",),
           parse=lambda v: _int(v) * KB, sub="worker_logbuf_size",
           help="shown in stats settings (default: 64)",
           kind="int"),
    # The segmented LRU (storage/lru.py) and its maintainer thread (storage/maintainer.py).
    Option("lru_maintainer", default=True, stat=("lru_maintainer_thread", "lru_segmented"),
           parse=lambda v: True, sub="lru_maintainer",
           help="segmented HOT/WARM/COLD LRU and its background thread (default)",
           kind="flag"),
    Option("lru_maintainer", parse=lambda v: False, sub="no_lru_maintainer",
           help="disable new LRU system + background thread (one flat LRU per class)",
           kind="flag"),
    Option("hot_lru_pct", default=20, stat=("hot_lru_pct",), parse=_int, sub="hot_lru_pct",
           help="pct of slab memory to reserve for hot lru (default: 20)",
           check=lambda v: None if 1 <= v < 80 else "hot_lru_pct must be > 1 and < 80",
           kind="int"),
    Option("warm_lru_pct", default=40, stat=("warm_lru_pct",), parse=_int, sub="warm_lru_pct",
           help="pct of slab memory to reserve for warm lru (default: 40)",
           check=lambda v: None if 1 <= v < 80 else "warm_lru_pct must be > 1 and < 80",
           kind="int"),
    Option("hot_max_factor", default=0.2, stat=("hot_max_factor",), parse=_float,
           sub="hot_max_factor",
           help="items idle > cold lru age * this drop from hot lru (default: 0.20)",
           check=_above(0, "hot_max_factor must be > 0"),
           kind="float"),
    Option("warm_max_factor", default=2.0, stat=("warm_max_factor",), parse=_float,
           sub="warm_max_factor",
           help="items idle > cold lru age * this drop from warm lru (default: 2.00)",
           check=_above(0, "warm_max_factor must be > 0"),
           kind="float"),
    Option("temp_lru", default=False, stat=("temp_lru",), parse=lambda v: True, sub="temp_lru",
           help="turn the TEMP LRU on (as giving temporary_ttl does)",
           kind="flag"),
    Option("temp_lru", parse=lambda v: False, sub="no_temp_lru",
           help="turn the TEMP LRU off (the default)",
           kind="flag"),
    # Not memcached's: an opt-in admission policy at the COLD tail (storage/admission.py),
    # named as memcached names its LRU tunables; `stats settings` shows it only when on.
    Option("lru_admission", default="none", parse=lambda v: v or "", sub="lru_admission",
           help="none (memcached's LRU, the default) or tinylfu (by use frequency)",
           kind="str",
           check=lambda v: None if v in ("none", "tinylfu")
           else f"Unknown lru_admission option: {v}"),
    # memcached's -o no_modern: its pre-1.5 defaults, each unless given explicitly.
    Option("", sub="no_modern", kind="flag",
           help="old defaults: flat LRU, no crawler, no page mover, 1 MB chunks",
           implies={"lru_maintainer": False, "lru_crawler": False, "slab_reassign": False,
                    "slab_automove": 0, "maxconns_fast": False, "hash_algorithm": "jenkins",
                    "slab_chunk_max": 1024 * KB}),
    Option("", sub="modern", kind="flag",
           help="the modern defaults, already on (memcached: currently nothing)"),
    # -o sub-options accepted under memcached's names with no field of their own (some are
    # read from ``extended`` where they show, as hashpower and the ssl_* settings are).
    *(
        Option("", sub=name, kind=kind, help=text)
        for name, kind, text in (
            ("hashpower", "int", "initial hash table size as a power of 2 (it grows as needed)"),
            ("no_hashexpand", "flag", "accepted for compatibility"),
            ("inline_ascii_resp", "flag", "accepted for compatibility"),
            ("no_inline_ascii_resp", "flag", "accepted for compatibility"),
            ("sock_cookie_id", "int", "accepted for compatibility"),
            ("ssl_chain_cert", "str", "TLS certificate chain file in PEM format (with -Z)"),
            ("ssl_key", "str", "TLS private key file in PEM format (with -Z)"),
            ("ssl_keyformat", "int", "TLS key format (default: PEM)"),
            ("ssl_verify_mode", "int", "client certificates: 0 none, 1 request, 2 require, 3 once"),
            ("ssl_ciphers", "str", "TLS cipher list (OpenSSL syntax)"),
            ("ssl_ca_cert", "str", "CA certificates that client certificates must chain to"),
            ("ssl_wbuf_size", "int", "accepted for compatibility"),
            ("ssl_session_cache", "flag", "accepted for compatibility"),
            ("ssl_kernel_tls", "flag", "accepted for compatibility"),
            ("ssl_min_version", "int", "lowest TLS version: 0 TLSv1 .. 3 TLSv1.3 (default: 2)"),
            ("slab_automove_freeratio", "float", "accepted for compatibility"),
        )
    ),
)



def _defaults() -> dict[str, Any]:
    """Each field's default: the first entry for it that names one (None when none does)."""
    out: dict[str, Any] = {}
    for o in OPTIONS:
        if o.name and out.get(o.name) is None:
            out[o.name] = o.default
    return out


# The config's defaults, by field (ServerConfig declares its fields with these).
DEFAULTS: dict[str, Any] = _defaults()
# -o sub-option name -> its kind (what memcached accepts).
EXTENDED: dict[str, str] = {o.sub: o.kind for o in OPTIONS if o.sub}


def settings_values(config: object) -> dict[str, object]:
    """The ``stats settings`` lines that show a setting as the config holds it, by name."""
    out: dict[str, object] = {}
    for o in OPTIONS:
        if o.stat:
            value = o.show(getattr(config, o.name))
            for name in o.stat:
                out[name] = value
    return out

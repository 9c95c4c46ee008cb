"""Command line: ``memcache-server`` takes memcached's flags and starts a node.

Only parsing and start-up live here: flags become a ``ServerConfig``, the config is validated,
and the node runs until SIGTERM/SIGINT. Run as ``memcache-server ...`` or ``python cli.py ...``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from discovery.commands import config_node_command, nodes_command, remove_command
from memcache_server import __version__
from memcache_server.config import (
    EMULATED_VERSION,
    ConfigError,
    ServerConfig,
    StartupError,
    parse_extended,
    parse_size,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _build_config(opts: dict[str, Any]) -> ServerConfig:
    listen: list[str] = []
    for entry in opts["listen"] or ("127.0.0.1",):
        listen += [a for a in entry.split(",") if a]
    extended = parse_extended(list(opts["extended"]))
    delimiter = opts["delimiter"]
    cfg = ServerConfig(
        port=opts["port"],
        listen=tuple(listen),
        unix_socket=opts["unix_socket"],
        unix_mask=int(opts["unix_mask"], 8),
        udp_port=opts["udp_port"],
        memory_limit_mb=opts["memory_limit"],
        disable_evictions=opts["disable_evictions"],
        max_connections=opts["conn_limit"],
        threads=opts["threads"],
        reqs_per_event=opts["max_reqs_per_event"],
        item_size_max=parse_size(opts["max_item_size"]),
        growth_factor=opts["slab_growth_factor"],
        chunk_size=opts["slab_min_size"],
        use_cas=not opts["disable_cas"],
        flush_enabled=not opts["disable_flush_all"],
        shutdown_enabled=opts["enable_shutdown"],
        dump_enabled=not opts["disable_dumping"],
        watch_enabled=not opts["disable_watch"],
        backlog=opts["listen_backlog"],
        protocol=opts["protocol"],
        verbosity=opts["verbose"],
        user=opts["user"],
        daemonize=opts["daemon"],
        pidfile=opts["pidfile"],
        lock_memory=opts["lock_memory"],
        large_pages=opts["enable_largepages"],
        coredumps=opts["enable_coredumps"],
        auth_file=opts["auth_file"],
        enable_ssl=opts["enable_ssl"],
        prefix_delimiter=delimiter or ":",
        detail_enabled=delimiter is not None,
        extended=extended,
        join=opts["join"],
        advertise=opts["advertise"],
        cluster_token=opts["cluster_token"],
        heartbeat_interval=opts["heartbeat_interval"],
        drain_seconds=opts["drain_seconds"],
        warm=opts["warm"],
        warm_rate=opts["warm_rate"],
        allow_config_writes=opts["allow_config_writes"],
        debug_time=opts["debug_time"],
        metrics_listen=opts["metrics_listen"],
    ).with_extended()
    if cfg.item_size_max < 1024:
        raise ConfigError("Item max size cannot be less than 1024 bytes.")
    if cfg.slab_chunk_max > cfg.item_size_max:
        raise ConfigError(
            f"slab_chunk_max (bytes: {cfg.slab_chunk_max}) cannot be larger than -I "
            f"(item_size_max {cfg.item_size_max})"
        )
    if cfg.slab_chunk_max <= 0:
        raise ConfigError("slab_chunk_max must be greater than 0")
    if cfg.item_size_max % cfg.slab_chunk_max != 0:
        raise ConfigError(
            f"-I (item_size_max: {cfg.item_size_max}) must be evenly divisible by "
            f"slab_chunk_max (bytes: {cfg.slab_chunk_max})"
        )
    if (1024 * 1024) % cfg.slab_chunk_max != 0:
        raise ConfigError(f"slab_chunk_max must divide evenly into {1024 * 1024} (slab_page_size)")
    if opts["enable_sasl"]:
        raise ConfigError("SASL (-S) is not supported: use -Y for ASCII authentication")
    if opts["memory_file"]:
        raise ConfigError("-e (memory file) is not supported: nodes hold no persistent data")
    cfg.validate()
    return cfg


def _drop_privileges(user: str | None) -> None:
    if user is None or os.geteuid() != 0:
        return
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"can't find the user {user} to switch to") from None
    if pw.pw_uid == 0:
        return
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def _daemonize(pidfile: str | None) -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")


def run_node(cfg: ServerConfig) -> int:
    """Bind, start, serve until told to stop. Returns the process exit code."""
    from memcache_server.app import Node
    from memcache_server.malloc import pin_mmap_threshold

    pin_mmap_threshold()
    try:
        node = Node(cfg)
    except StartupError as exc:
        click.echo(str(exc), err=True)
        return exc.exit_code
    try:
        node.bind()
    except OSError as exc:
        click.echo(f"failed to listen: {exc.strerror or exc}", err=True)
        return 71
    _drop_privileges(cfg.user)
    if cfg.daemonize:
        _daemonize(cfg.pidfile)

    def on_signal(signum: int, frame: object) -> None:
        node.request_shutdown(graceful=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: node.request_reload())
    node.start()
    if cfg.port == 0 and not cfg.unix_socket:
        print(node.port, flush=True)
    if cfg.verbosity:
        where = cfg.unix_socket or ",".join(f"{a}:{node.port}" for a in cfg.listen)
        click.echo(f"memcache-server {__version__} listening on {where}", err=True)
        if node.metrics is not None:
            click.echo(f"metrics on {node.metrics.url}", err=True)
    try:
        node.wait()
    finally:
        node.shutdown()
    return 0


def _metrics_listen(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Validate ``--metrics-listen`` early and normalise it to HOST:PORT (loopback by default)."""
    if value is None:
        return None
    from memcache_server.metrics_http import format_address, parse_listen

    try:
        return format_address(*parse_listen(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# Shared by every command that runs a server process (the node, the config node).
metrics_listen_option = click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    callback=_metrics_listen,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (no HOST: 127.0.0.1; port 0 "
    "picks one, shown in `stats settings` as metrics_listen).",
)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"memcached {EMULATED_VERSION} (memcache-server {__version__})")
        ctx.exit(0)


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option(
    "-p",
    "--port",
    type=int,
    default=11211,
    show_default=True,
    help="TCP port to listen on; 0 picks a free port and prints it on stdout.",
)
@click.option(
    "-U",
    "--udp-port",
    type=int,
    default=0,
    show_default=True,
    help="UDP port (only 0, off, is supported).",
)
@click.option("-s", "--unix-socket", default=None, help="UNIX socket to listen on (disables TCP).")
@click.option(
    "-a",
    "--unix-mask",
    default="700",
    show_default=True,
    help="Access mask for the UNIX socket, in octal.",
)
@click.option("-A", "--enable-shutdown", is_flag=True, help='Enable the ascii "shutdown" command.')
@click.option(
    "-l",
    "--listen",
    multiple=True,
    help="Interface(s) to listen on, comma separated (default: 127.0.0.1).",
)
@click.option("-d", "--daemon", is_flag=True, help="Run as a daemon.")
@click.option("-r", "--enable-coredumps", is_flag=True, help="Accepted for compatibility.")
@click.option("-u", "--user", default=None, help="Assume the identity of USER (when root).")
@click.option(
    "-m",
    "--memory-limit",
    type=int,
    default=64,
    show_default=True,
    help="Item memory in megabytes (bounds the process's real memory).",
)
@click.option(
    "-M",
    "--disable-evictions",
    is_flag=True,
    help="Return an error on memory exhausted instead of evicting.",
)
@click.option(
    "-c",
    "--conn-limit",
    type=int,
    default=1024,
    show_default=True,
    help="Max simultaneous connections.",
)
@click.option("-k", "--lock-memory", is_flag=True, help="Accepted for compatibility (no effect).")
@click.option("-v", "--verbose", count=True, help="Verbose; -vv also logs client commands.")
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Print version and exit.",
)
@click.option("-P", "--pidfile", default=None, help="Save PID in FILE (with -d).")
@click.option(
    "-f",
    "--slab-growth-factor",
    type=float,
    default=1.25,
    show_default=True,
    help="Chunk size growth factor.",
)
@click.option(
    "-n",
    "--slab-min-size",
    type=int,
    default=48,
    show_default=True,
    help="Min space used for key+value+flags.",
)
@click.option("-L", "--enable-largepages", is_flag=True, help="Accepted for compatibility.")
@click.option(
    "-D",
    "delimiter",
    default=None,
    help="Delimiter between key prefixes and ids for per-prefix stats.",
)
@click.option(
    "-t", "--threads", type=int, default=4, show_default=True, help="Number of worker threads."
)
@click.option(
    "-R",
    "--max-reqs-per-event",
    type=int,
    default=20,
    show_default=True,
    help="Max requests served per connection before yielding to others.",
)
@click.option("-C", "--disable-cas", is_flag=True, help="Disable use of CAS.")
@click.option(
    "-b", "--listen-backlog", type=int, default=1024, show_default=True, help="Listen backlog."
)
@click.option(
    "-B",
    "--protocol",
    default="auto",
    show_default=True,
    help="ascii or auto (the binary protocol is not supported).",
)
@click.option(
    "-I",
    "--max-item-size",
    default="1m",
    show_default=True,
    help="Max item size (k/m suffixes; min 1k, max 1024m).",
)
@click.option("-S", "--enable-sasl", is_flag=True, help="Not supported (use -Y).")
@click.option("-F", "--disable-flush-all", is_flag=True, help="Disable flush_all.")
@click.option(
    "-X",
    "--disable-dumping",
    is_flag=True,
    help="Disable stats cachedump and lru_crawler metadump.",
)
@click.option("-W", "--disable-watch", is_flag=True, help="Disable watch commands.")
@click.option("-Y", "--auth-file", default=None, help="ASCII authentication file (user:pass).")
@click.option("-e", "--memory-file", default=None, help="Not supported.")
@click.option("-Z", "--enable-ssl", is_flag=True, help="Enable TLS.")
@click.option("-N", "--napi-ids", type=int, default=None, help="Accepted for compatibility.")
@click.option(
    "-o", "--extended", multiple=True, help="Comma separated extended options (memcached's names)."
)
@click.option("--join", default=None, help="Join the cluster of this config node (HOST:PORT).")
@click.option("--advertise", default=None, help="HOST[:PORT] published for this node.")
@click.option(
    "--cluster-token",
    envvar="MEMCACHE_CLUSTER_TOKEN",
    default=None,
    help="Shared secret for joining (or set MEMCACHE_CLUSTER_TOKEN).",
)
@click.option("--heartbeat-interval", type=float, default=1.0, show_default=True, help="Seconds.")
@click.option(
    "--drain-seconds",
    type=float,
    default=5.0,
    show_default=True,
    help="After leaving on SIGTERM, keep serving this long.",
)
@click.option(
    "--warm",
    is_flag=True,
    help="With --join: copy this node's keys from their owners before joining, and push "
    "them to the next owners before a graceful leave.",
)
@click.option(
    "--warm-rate",
    type=int,
    default=20_000,
    show_default=True,
    help="Items per second --warm copies at most (0: no bound).",
)
@click.option(
    "--allow-config-writes",
    is_flag=True,
    help="Accept config set/delete and writes to AmazonElastiCache:cluster.",
)
@click.option(
    "--debug-time",
    is_flag=True,
    help="Accept 'debugtime <seconds>' to move the server clock (for tests of expiry).",
)
@metrics_listen_option
@click.pass_context
def main(ctx: click.Context, /, **opts: Any) -> None:
    """A memcached-compatible cache node. Takes memcached's flags."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        cfg = _build_config(opts)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(64)
    sys.exit(run_node(cfg))


@main.group(context_settings=CONTEXT)
def cluster() -> None:
    """Look at a cluster the way its clients do; list and remove its nodes."""


@cluster.command("owner", context_settings=CONTEXT)
@click.option("--config", "endpoint", metavar="HOST:PORT", help="Configuration endpoint to ask.")
@click.option("--nodes", metavar="HOST:PORT,...", help="A static node list instead.")
@click.option(
    "--scheme",
    type=click.Choice(["ketama", "rendezvous"]),
    default="ketama",
    show_default=True,
    help="ketama: libmemcached's placement; rendezvous: pymemcache HashClient's.",
)
@click.option(
    "--naming",
    type=click.Choice(["hostname", "ip"]),
    default="hostname",
    show_default=True,
    help="Hash the nodes' hostnames or their IPs (what the clients were given).",
)
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Fetch timeout (s).")
@click.argument("keys", nargs=-1, required=True)
def cluster_owner(
    endpoint: str | None,
    nodes: str | None,
    scheme: str,
    naming: str,
    timeout: float,
    keys: tuple[str, ...],
) -> None:
    """Print the node that owns each KEY: `KEY HOST:PORT IP` (IP `-` when unknown)."""
    from discovery.client import owner_ring

    if (endpoint is None) == (nodes is None):
        raise click.UsageError("give exactly one of --config HOST:PORT or --nodes HOST:PORT,...")
    try:
        ring = owner_ring(endpoint, nodes, scheme=scheme, naming=naming, timeout=timeout)
    except (OSError, ValueError) as exc:
        click.echo(f"cannot build the ring: {exc}", err=True)
        sys.exit(1)
    for key in keys:
        node = ring.owner(key)
        click.echo(f"{key} {node.hostname}:{node.port} {node.ip or '-'}")


# The cluster's own processes and operator commands (discovery/commands.py).
main.add_command(config_node_command)
cluster.add_command(nodes_command)
cluster.add_command(remove_command)

if __name__ == "__main__":
    main()

"""Command line: ``memcache-server`` takes memcached's flags and starts a node.

Only parsing and start-up live here: flags become a ``ServerConfig``, the config is validated,
and the node runs until SIGTERM/SIGINT. Run as ``memcache-server ...`` or ``python cli.py ...``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from memcache_server import __version__
from memcache_server.config import (
    EMULATED_VERSION,
    ConfigError,
    ExitCode,
    ServerConfig,
    StartupError,
    parse_extended,
)
from memcache_server.options import OPTIONS

if TYPE_CHECKING:
    from memcache_server.app import Node
    from memcache_server.discovery.member import MembershipClient
    from memcache_server.discovery.scaling import Scaling

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: every flag can also come from the environment, as MEMCACHE_SERVER_<LONG_FLAG> for the node
#: (MEMCACHE_SERVER_MEMORY_LIMIT=1024) and MEMCACHE_SERVER_<COMMAND>_<LONG_FLAG> for the
#: subcommands (MEMCACHE_SERVER_CONFIG_NODE_STATE_FILE); a flag on the command line wins
ENV_PREFIX = "MEMCACHE_SERVER"


def _build_config(opts: dict[str, Any]) -> ServerConfig:
    """The options table turns what click parsed into config values; then the checks that
    look at several settings at once, in memcached's order, and the config's own."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.flags or option.param:
            value = option.parse(opts[option.click_name])
            if option.name:
                values[option.name] = value
    values["extended"] = parse_extended(list(opts["extended"]))
    cfg = ServerConfig(**values).with_extended()
    if cfg.item_size_max < 1024:
        raise ConfigError("Item max size cannot be less than 1024 bytes.", ExitCode.USAGE)
    if cfg.slab_chunk_max > cfg.item_size_max:
        raise ConfigError(
            f"slab_chunk_max (bytes: {cfg.slab_chunk_max}) cannot be larger than -I "
            f"(item_size_max {cfg.item_size_max})",
            ExitCode.USAGE,
        )
    if cfg.slab_chunk_max <= 0:
        raise ConfigError("slab_chunk_max must be greater than 0", ExitCode.USAGE)
    if cfg.item_size_max % cfg.slab_chunk_max != 0:
        raise ConfigError(
            f"-I (item_size_max: {cfg.item_size_max}) must be evenly divisible by "
            f"slab_chunk_max (bytes: {cfg.slab_chunk_max})",
            ExitCode.USAGE,
        )
    if (1024 * 1024) % cfg.slab_chunk_max != 0:
        raise ConfigError(
            f"slab_chunk_max must divide evenly into {1024 * 1024} (slab_page_size)", ExitCode.USAGE
        )
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
    """Bind, start, serve until told to stop. Returns the process exit code.

    Under a GIL, ``-t N`` (N > 1) runs N worker processes under a supervisor (this process,
    see ``memcache_server/supervisor.py``); ``-t 1`` and free-threaded builds serve here."""
    from memcache_server.app import Node
    from memcache_server.malloc import pin_mmap_threshold
    from memcache_server.storage.proclock import preload
    from memcache_server.supervisor import Supervisor, processes_for

    pin_mmap_threshold()
    try:
        node = Node(cfg)
    except StartupError as exc:
        click.echo(str(exc), err=True)
        if exc.exit_code == ExitCode.ABORTED:
            _abort()
        return exc.exit_code
    processes = processes_for(cfg.threads)
    if processes:
        preload()  # the shared store lock's modules, read while the node may still be root
    try:
        node.bind(processes)
    except OSError as exc:
        click.echo(exc.strerror or str(exc), err=True)  # the message names the address
        return ExitCode.OS_ERROR
    _drop_privileges(cfg.user)
    if cfg.daemonize:
        _daemonize(cfg.pidfile)

    def on_signal(signum: int, frame: object) -> None:
        node.request_shutdown(graceful=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    supervisor = Supervisor(node, processes) if processes else None
    reload = supervisor.request_reload if supervisor is not None else node.request_reload
    signal.signal(signal.SIGHUP, lambda signum, frame: reload())
    if supervisor is not None:
        supervisor.start()
    else:
        node.start()
    if cfg.port == 0 and not cfg.unix_socket:
        print(node.port, flush=True)
    if cfg.verbosity:
        where = cfg.unix_socket or ",".join(f"{a}:{node.port}" for a in cfg.listen)
        click.echo(f"memcache-server {__version__} listening on {where}", err=True)
        if node.metrics is not None:
            click.echo(f"metrics on {node.metrics.url}", err=True)
    joined: list[MembershipClient] = []
    stopping = threading.Event()
    scaling = _scaling(node) if cfg.warm else None
    if scaling is not None:  # published only once warm: the join comes from the warm-up
        scaling.warm_then(lambda: joined.append(_join_cluster(node)), stopping)
    elif cfg.join:
        joined.append(_join_cluster(node))
    try:
        if supervisor is not None:
            supervisor.wait()
        else:
            node.wait()
    finally:
        stopping.set()
        if joined:
            # leave first and keep serving through the drain, so clients can move away
            drain = cfg.drain_seconds if node.graceful else 0.0
            membership = joined[0]

            def leave() -> None:
                membership.leave_and_drain(drain, node.hurry_requested)

            if scaling is not None and drain > 0:
                scaling.push_around(leave)  # push items to their next owners first
            else:
                leave()
        if supervisor is not None:
            supervisor.shutdown()
        else:
            node.shutdown()
        if cfg.daemonize and cfg.pidfile:
            _remove_pidfile(cfg.pidfile)
    return ExitCode.OK


def _abort() -> None:
    """Die of SIGABRT, as memcached does when its -e file cannot be mapped, so whoever watches
    the process sees the same end; without a core file (there is nothing in it to debug)."""
    import resource

    sys.stderr.flush()
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    os.abort()


def _scaling(node: Node) -> Scaling:
    """The --warm hand-overs: local is where this node's own items are read and written."""
    from memcache_server.discovery.member import WILDCARDS, advertised_address
    from memcache_server.discovery.scaling import Scaling
    from memcache_server.discovery.wire import split_host_port

    cfg = node.config
    assert cfg.join is not None
    address = advertised_address(cfg.advertise, cfg.listen, node.port)
    local = cfg.listen[0] if cfg.listen and cfg.listen[0] not in WILDCARDS else "127.0.0.1"
    return Scaling(
        node.cluster,
        split_host_port(cfg.join),
        address,
        (local, node.port),
        cfg.warm_rate,
        cfg.drain_seconds,
    )


def _join_cluster(node: Node) -> MembershipClient:
    """Register with the config node now that the node serves (never before)."""
    from memcache_server.discovery.member import (
        JoinSettings,
        MembershipClient,
        advertised_address,
        parse_join,
    )

    cfg = node.config
    assert cfg.join is not None
    settings = JoinSettings(
        parse_join(cfg.join), cfg.cluster_token, cfg.heartbeat_interval, cfg.drain_seconds
    )
    address = advertised_address(cfg.advertise, cfg.listen, node.port)
    membership = MembershipClient(node.cluster, settings, address, cfg.verbosity)
    membership.start()
    return membership


def _remove_pidfile(path: str) -> None:
    """As memcached does on a clean exit: a stale pidfile would name a PID that is gone (or,
    later, someone else's)."""
    try:
        os.unlink(path)
    except OSError as exc:
        click.echo(f"Could not remove the pid file {path}: {exc.strerror}", err=True)


def _metrics_listen(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Validate ``--metrics-listen`` early and normalise it to HOST:PORT (loopback by default)."""
    if value is None:
        return None
    from memcache_server.metrics_http import parse_listen
    from memcache_server.protocol.address import format_host_port

    try:
        return format_host_port(*parse_listen(value))
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


def _as_list(envvar: str | list[str] | None) -> list[str]:
    return [] if envvar is None else [envvar] if isinstance(envvar, str) else list(envvar)


def _env_name(flags: tuple[str, ...]) -> str:
    """MEMCACHE_SERVER_<LONG_FLAG>: ``--memory-limit`` reads MEMCACHE_SERVER_MEMORY_LIMIT."""
    long = next((f for f in flags if f.startswith("--")), flags[0])
    return f"{ENV_PREFIX}_{long.lstrip('-').upper().replace('-', '_')}"


def _table_options(command: Callable[..., None]) -> Callable[..., None]:
    """Decorate ``command`` with one click option per flag of the options table, in table
    order (`-h` lists them so); --metrics-listen keeps its shared option (and its check)."""
    version = click.option(
        "-V",
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_version,
        help="Print version and exit.",
    )
    decorators = []
    for option in OPTIONS:
        if not option.flags or option.name == "metrics_listen":
            continue
        extras = dict(option.cli)
        shown = option.click_default
        if not extras.get("is_flag") and not extras.get("count") and not extras.get("multiple"):
            extras["default"] = shown
            extras["show_default"] = shown is not None
        extras["envvar"] = [*_as_list(extras.get("envvar")), _env_name(option.flags)]
        if option.flags[0] == "-P":
            decorators.append(version)  # listed where it always was
        decorators.append(
            click.option(*option.flags, option.click_name, help=option.help, **extras)
        )
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


_SUB_VALUE = {"flag": "", "int": "=N", "int?": "[=N]", "float": "=R", "str": "=S"}


def _extended_help() -> str:
    """The -o sub-options from the options table, listed after the flags as memcached's -h does."""
    rows = [(o.sub + _SUB_VALUE[o.kind], o.help) for o in OPTIONS if o.sub]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"  {name.ljust(width)}{text}" for name, text in sorted(rows)]
    head = "\b\n-o/--extended sub-options (comma separated, memcached's names):\n"
    return head + "\n".join(lines)


class _FlagError(click.UsageError):
    """A bad flag on the node's command line: memcached exits 1 for it, click would exit 2."""

    exit_code = ExitCode.FAILURE


class _LazyGroup(click.Group):
    """A group whose cluster commands (``discovery/commands.py``) are imported when asked for:
    a cache node never runs them, and their imports (etcd client, TLS, HTTP) would add about
    10 MB to every node process."""

    lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            cmd = getattr(__import__(module, fromlist=[attr]), attr)
            assert isinstance(cmd, click.Command)
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)


class _ClusterGroup(_LazyGroup):
    lazy = {
        "nodes": "memcache_server.discovery.commands:nodes_command",
        "remove": "memcache_server.discovery.commands:remove_command",
    }


class _NodeGroup(_LazyGroup):
    """memcached exits 1 on a flag it does not know or a flag missing its value; click's 2 is
    kept for the subcommands, which have no memcached counterpart."""

    lazy = {"config-node": "memcache_server.discovery.commands:config_node_command"}

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _FlagError(exc.format_message(), exc.ctx) from None


@click.group(
    cls=_NodeGroup,
    invoke_without_command=True,
    context_settings={**CONTEXT, "auto_envvar_prefix": ENV_PREFIX},
    epilog=_extended_help(),
)
@_table_options
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
        sys.exit(exc.exit_code)
    if os.geteuid() == 0 and not cfg.user:
        # memcached's rule: a root start must name the user to run as (-u root is allowed)
        click.echo("can't run as root without the -u switch", err=True)
        sys.exit(ExitCode.USAGE)
    sys.exit(run_node(cfg))


@main.group(cls=_ClusterGroup, context_settings=CONTEXT)
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
    from memcache_server.discovery.client import owner_ring

    if (endpoint is None) == (nodes is None):
        raise click.UsageError("give exactly one of --config HOST:PORT or --nodes HOST:PORT,...")
    try:
        ring = owner_ring(endpoint, nodes, scheme=scheme, naming=naming, timeout=timeout)
    except (OSError, ValueError) as exc:
        click.echo(f"cannot build the ring: {exc}", err=True)
        sys.exit(ExitCode.FAILURE)
    for key in keys:
        node = ring.owner(key)
        click.echo(f"{key} {node.hostname}:{node.port} {node.ip or '-'}")


if __name__ == "__main__":
    main()

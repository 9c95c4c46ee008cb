"""Command-line entry points for the cluster: ``config-node``, and the operator's
``cluster nodes`` and ``cluster remove``.

Registered by cli.py: ``config-node`` on ``memcache-server``, the others on its ``cluster``
group. Only parsing and start-up live here; the config node is ``discovery/config_node.py``.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import click

from discovery.config_node import ConfigNode, ConfigNodeSettings

if TYPE_CHECKING:
    from memcache_server.metrics_http import MetricsServer
from discovery.statefile import StateError
from discovery.wire import (
    NODES,
    EndpointConnection,
    ReplyError,
    parse_listing,
    remove_line,
    split_host_port,
)

__all__ = ["config_node_command", "nodes_command", "remove_command"]

TOKEN_ENV = "MEMCACHE_CLUSTER_TOKEN"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _check_token(token: str | None) -> None:
    if token is not None and not (
        0 < len(token) <= 250 and token.isascii() and token.isprintable() and " " not in token
    ):
        raise click.BadParameter("must be 1-250 printable ASCII characters without spaces")


@click.command("config-node", context_settings=CONTEXT)
@click.option(
    "-p",
    "--port",
    type=int,
    default=11211,
    show_default=True,
    help="TCP port; 0 picks a free port and prints it on stdout.",
)
@click.option(
    "-l",
    "--listen",
    multiple=True,
    help="Interface(s) to listen on, comma separated (default: 127.0.0.1).",
)
@click.option(
    "--state-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where the published document (and so the version) is kept across restarts.",
)
@click.option(
    "--heartbeat-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds without a heartbeat after which a node is removed.",
)
@click.option(
    "--cluster-token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Shared secret nodes must present to join (or set {TOKEN_ENV}).",
)
@click.option(
    "-c",
    "--conn-limit",
    type=int,
    default=1024,
    show_default=True,
    help="Max simultaneous connections.",
)
@click.option("-v", "--verbose", count=True, help="Log membership changes to stderr.")
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics (memcached_up, memcached_cluster_*) at http://HOST:PORT/metrics.",
)
def config_node_command(
    port: int,
    listen: tuple[str, ...],
    state_file: str,
    heartbeat_timeout: float,
    cluster_token: str | None,
    conn_limit: int,
    verbose: int,
    metrics_listen: str | None,
) -> None:
    """Run the cluster's configuration endpoint (ElastiCache-style auto discovery)."""
    _check_token(cluster_token)
    if not 0.1 <= heartbeat_timeout <= 86400:
        raise click.BadParameter("must be between 0.1 and 86400", param_hint="--heartbeat-timeout")
    if conn_limit <= 0:
        raise click.BadParameter("must be greater than 0", param_hint="--conn-limit")
    addrs: list[str] = []
    for entry in listen or ("127.0.0.1",):
        addrs += [a for a in entry.split(",") if a]
    settings = ConfigNodeSettings(
        listen=tuple(addrs),
        port=port,
        state_file=state_file,
        heartbeat_timeout=heartbeat_timeout,
        token=cluster_token,
        max_connections=conn_limit,
        verbosity=verbose,
    )
    try:
        node = ConfigNode(settings)
        node.bind()
    except StateError as exc:
        click.echo(str(exc), err=True)
        sys.exit(66)
    except OSError as exc:
        click.echo(f"failed to listen: {exc.strerror or exc}", err=True)
        sys.exit(71)

    def on_signal(signum: int, frame: object) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if port == 0:
        print(node.port, flush=True)
    if verbose:
        click.echo(
            f"config-node listening on {','.join(addrs)}:{node.port}, "
            f"version {node.registry.version}",
            err=True,
        )
    metrics = _open_metrics(node, metrics_listen, verbose) if metrics_listen else None
    try:
        node.serve()
    finally:
        if metrics is not None:
            metrics.stop()
    sys.exit(0)


def _open_metrics(node: ConfigNode, listen: str, verbose: int) -> MetricsServer:
    """The config node's /metrics: the same collector as a cache node's, fed its `stats`."""
    from memcache_server.metrics import StatsSnapshot, build_registry
    from memcache_server.metrics_http import MetricsServer

    try:
        server = MetricsServer.from_listen(
            listen, build_registry(lambda: StatsSnapshot.from_pairs(node.stats()))
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-listen") from None
    except OSError as exc:
        click.echo(exc.strerror or str(exc), err=True)  # the message names the address
        sys.exit(71)
    server.start()
    if verbose:
        click.echo(f"metrics at {server.url}", err=True)
    return server


def _connect(config: str) -> EndpointConnection:
    try:
        host, port = split_host_port(config)
        return EndpointConnection(host, port, timeout=5.0)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach the config node {config}: {exc}") from None


@click.command("nodes", context_settings=CONTEXT)
@click.option("--config", "config", required=True, help="The config node, HOST:PORT.")
def nodes_command(config: str) -> None:
    """List the cluster's nodes with their state, and the current version."""
    with _connect(config) as conn:
        try:
            version, rows = parse_listing(conn.call(NODES + b"\r\n"))
        except (ReplyError, OSError, ValueError) as exc:
            raise click.ClickException(f"{config}: {exc}") from None
    listed = sum(1 for r in rows if r.state not in ("left", "removed"))
    click.echo(f"version {version}, {listed} node(s)")
    width = max([len(r.hostname) for r in rows] + [8])
    click.echo(f"{'HOSTNAME':<{width}}  {'IP':<15}  {'PORT':>5}  {'STATE':<8}  LAST HEARD")
    for r in rows:
        click.echo(
            f"{r.hostname:<{width}}  {r.ip or '-':<15}  {r.port:>5}  {r.state:<8}  {r.age:.1f}s ago"
        )


@click.command("remove", context_settings=CONTEXT)
@click.option("--config", "config", required=True, help="The config node, HOST:PORT.")
@click.option(
    "--cluster-token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"The cluster's shared secret (or set {TOKEN_ENV}).",
)
@click.argument("node")
def remove_command(config: str, cluster_token: str | None, node: str) -> None:
    """Remove NODE (HOSTNAME:PORT) from the cluster by hand; it stays out until it restarts."""
    _check_token(cluster_token)
    try:
        host, port = split_host_port(node)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NODE") from None
    with _connect(config) as conn:
        try:
            reply = conn.call(remove_line(host, port, cluster_token))
        except (ReplyError, OSError) as exc:
            raise click.ClickException(f"{config}: {exc}") from None
    if reply != b"DELETED\r\n":
        raise click.ClickException(f"{host}:{port} is not a member of the cluster")
    click.echo(f"removed {host}:{port}")

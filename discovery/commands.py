"""Command-line entry points for the cluster: ``config-node``, and the operator's
``cluster nodes`` and ``cluster remove``.

Registered by cli.py: ``config-node`` on ``memcache-server``, the others on its ``cluster``
group. Only parsing and start-up live here; the config node is ``discovery/config_node.py``.
"""

from __future__ import annotations

import signal
import ssl
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from memcache_server.discovery.config_node import ConfigNode, ConfigNodeSettings
from memcache_server.discovery.etcd_client import parse_endpoints, uses_tls
from memcache_server.discovery.etcd_registry import EtcdSettings, default_prefix

if TYPE_CHECKING:
    from memcache_server.metrics_http import MetricsServer
from memcache_server.discovery.statefile import StateError
from memcache_server.discovery.wire import (
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
    default=11311,
    show_default=True,
    help="TCP port (not 11211, so a cache node can share the host); 0 picks a free port and "
    "prints it on stdout.",
)
@click.option(
    "-l",
    "--listen",
    multiple=True,
    help="Interface(s) to listen on, comma separated (default: 127.0.0.1).",
)
@click.option(
    "--state-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="One config node: where the published document (and so the version) is kept across "
    "restarts.",
)
@click.option(
    "--etcd",
    "etcd_urls",
    default=None,
    metavar="URL[,URL...]",
    help="Several config nodes: keep membership in this etcd (v3 API, e.g. "
    "http://etcd-0:2379,http://etcd-1:2379) instead of a state file.",
)
@click.option(
    "--cluster-name",
    default="default",
    show_default=True,
    help="Names the cluster in etcd (the default --etcd-prefix).",
)
@click.option(
    "--etcd-cacert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With https:// etcd URLs: the CA that signed etcd's certificate (default: the system's).",
)
@click.option(
    "--etcd-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With https:// etcd URLs: the client certificate etcd asks for (--client-cert-auth).",
)
@click.option(
    "--etcd-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The client certificate's key, when it is not in the --etcd-cert file.",
)
@click.option(
    "--etcd-prefix",
    default=None,
    help="etcd key prefix of this cluster [default: /memcache-server/clusters/CLUSTER-NAME/].",
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
    state_file: str | None,
    etcd_urls: str | None,
    cluster_name: str,
    etcd_cacert: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    etcd_prefix: str | None,
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
    etcd = _etcd_settings(state_file, etcd_urls, cluster_name, etcd_prefix, heartbeat_timeout)
    if etcd is not None:
        etcd = replace(etcd, tls=_etcd_tls(etcd_urls or "", etcd_cacert, etcd_cert, etcd_key))
    addrs: list[str] = []
    for entry in listen or ("127.0.0.1",):
        addrs += [a for a in entry.split(",") if a]
    settings = ConfigNodeSettings(
        listen=tuple(addrs),
        port=port,
        state_file=state_file or "",
        etcd=etcd,
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
        sys.exit(exc.exit_code)
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
        where = f"etcd {etcd_urls} under {etcd.prefix}" if etcd else f"state file {state_file}"
        click.echo(
            f"config-node listening on {','.join(addrs)}:{node.port}, membership in {where}, "
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


def _etcd_settings(
    state_file: str | None,
    urls: str | None,
    cluster_name: str,
    prefix: str | None,
    heartbeat_timeout: float,
) -> EtcdSettings | None:
    """Exactly one home for the membership: a state file (one config node) or etcd (several).

    Neither is refused rather than defaulted: a default state file in whatever directory the
    process starts in would quietly begin a second cluster at version 1 after a move."""
    if (state_file is None) == (urls is None):
        raise click.UsageError(
            "give --state-file PATH (one config node, membership kept in a local file) or "
            "--etcd URL[,URL...] (several config nodes sharing one etcd), not both"
            if state_file is not None
            else "say where membership is kept: --state-file PATH (one config node) or "
            "--etcd URL[,URL...] (several config nodes sharing one etcd)"
        )
    if urls is None:
        return None
    try:
        endpoints = parse_endpoints(urls)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--etcd") from None
    if not cluster_name or "/" in cluster_name or not cluster_name.isprintable():
        raise click.BadParameter("must be printable, without '/'", param_hint="--cluster-name")
    prefix = prefix or default_prefix(cluster_name)
    if not prefix.endswith("/") or not prefix.isascii():
        raise click.BadParameter("must be ASCII and end with '/'", param_hint="--etcd-prefix")
    settings = EtcdSettings(endpoints, prefix, heartbeat_timeout)
    if settings.ttl != heartbeat_timeout:
        click.echo(
            f"note: etcd leases count whole seconds: --heartbeat-timeout {heartbeat_timeout:g} "
            f"acts as {settings.ttl} (and etcd raises a lease below its minimum, about 2 s)",
            err=True,
        )
    return settings


def _etcd_tls(
    urls: str, cacert: str | None, cert: str | None, key: str | None
) -> ssl.SSLContext | None:
    """The client TLS context for https:// etcd URLs (None for http://)."""
    if not uses_tls(urls):
        if cacert or cert or key:
            raise click.UsageError("--etcd-cacert/--etcd-cert/--etcd-key need https:// --etcd URLs")
        return None
    if key and not cert:
        raise click.BadParameter("needs --etcd-cert as well", param_hint="--etcd-key")
    try:
        ctx = ssl.create_default_context(cafile=cacert)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        hint = "--etcd-cacert/--etcd-cert"
        raise click.BadParameter(f"cannot load: {exc}", param_hint=hint) from None
    return ctx


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


def _ask(conn: EndpointConnection, config: str, line: bytes) -> bytes:
    """One operator command; a plain ERROR means ``config`` is no config node (most often a
    cache node given by mistake), which is said in those words."""
    try:
        return conn.call(line)
    except ReplyError as exc:
        if exc.line.rstrip(b"\r\n") == b"ERROR":
            raise click.ClickException(
                f"{config} is not a config node: it does not know '{line.split()[0].decode()}' "
                "(a cache node?); give --config the configuration endpoint"
            ) from None
        raise click.ClickException(f"{config}: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"{config}: {exc}") from None


@click.command("nodes", context_settings=CONTEXT)
@click.option("--config", "config", required=True, help="The config node, HOST:PORT.")
def nodes_command(config: str) -> None:
    """List the cluster's nodes with their state, and the current version."""
    with _connect(config) as conn:
        try:
            version, rows = parse_listing(_ask(conn, config, NODES + b"\r\n"))
        except ValueError as exc:
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
        reply = _ask(conn, config, remove_line(host, port, cluster_token))
    if reply != b"DELETED\r\n":
        raise click.ClickException(f"{host}:{port} is not a member of the cluster")
    click.echo(f"removed {host}:{port}")

"""Command line: ``memcache-load run ...`` and ``memcache-load plot ...`` (installed), or
``python -m memcache_server.load ...`` from a checkout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from memcache_server.load import __version__
from memcache_server.load.cluster import fetch_config
from memcache_server.load.engine import Unreachable, open_socket
from memcache_server.load.report import build_result, human_table
from memcache_server.load.runner import RunSpec, run
from memcache_server.load.targets import check_loopback, parse_hostport
from memcache_server.load.workload import PRESETS, resolve_workload

DEFAULT_DURATION = 10.0
MAX_DURATION = 3600.0


def _fail(msg: str) -> None:
    raise click.UsageError(msg)


@click.group()
@click.version_option(version=__version__)
def main() -> None:
    """Load generator for memcached-compatible servers (text protocol)."""


@main.command("run")
@click.option("--server", "servers", multiple=True, metavar="HOST:PORT", help="Target (repeat).")
@click.option("--config-endpoint", metavar="HOST:PORT", help="Discover nodes (ElastiCache-style).")
@click.option(
    "--workload",
    "preset",
    default="get90",
    show_default=True,
    type=click.Choice(sorted(PRESETS)),
    help="Named preset; options below override it.",
)
@click.option("--get-ratio", type=float, help="Fraction of requests that are gets (0..1).")
@click.option("--value-size", help="Bytes per value: N or LOW-HIGH (uniform).")
@click.option("--keys", type=int, help="Key space size.")
@click.option("--key-dist", type=click.Choice(["uniform", "zipf"]), help="Key popularity.")
@click.option("--zipf-s", type=float, help="Zipf exponent (with --key-dist zipf).")
@click.option("--multiget", type=int, help="Keys per get request.")
@click.option("--pipeline", type=int, help="Requests in flight per connection.")
@click.option("--ttl", type=int, help="Expiry (seconds) for sets; 0 = never.")
@click.option("--prefill/--no-prefill", default=None, help="Set every key once before measuring.")
@click.option(
    "--connections",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Connections per server per process.",
)
@click.option(
    "--procs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Generator OS processes.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1, MAX_DURATION),
    help=f"Seconds to run [default {DEFAULT_DURATION:g}; cap {MAX_DURATION:g}].",
)
@click.option("--requests", type=click.IntRange(1, 10**10), help="Stop after N requests.")
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.01, 120),
    help="Seconds before an outstanding batch counts as a timeout error.",
)
@click.option("--key-prefix", default="load:", show_default=True)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--loopback-only", is_flag=True, help="Refuse any target that is not loopback.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result JSON here ('-' for stdout; the table then goes to stderr).",
)
@click.option("--quiet", is_flag=True, help="No progress line and no table.")
def run_cmd(
    servers: tuple[str, ...],
    config_endpoint: str | None,
    preset: str,
    get_ratio: float | None,
    value_size: str | None,
    keys: int | None,
    key_dist: str | None,
    zipf_s: float | None,
    multiget: int | None,
    pipeline: int | None,
    ttl: int | None,
    prefill: bool | None,
    connections: int,
    procs: int,
    duration: float | None,
    requests: int | None,
    timeout: float,
    key_prefix: str,
    seed: int,
    loopback_only: bool,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Drive the servers and report throughput, hit ratio, errors and latency."""
    try:
        wl = resolve_workload(
            preset,
            get_ratio=get_ratio,
            value_size=value_size,
            keys=keys,
            key_dist=key_dist,
            zipf_s=zipf_s,
            multiget=multiget,
            pipeline=pipeline,
            ttl=ttl,
            prefill=prefill,
        )
        targets = [parse_hostport(s) for s in servers]
        endpoint = parse_hostport(config_endpoint) if config_endpoint else None
        if loopback_only:
            check_loopback(targets + ([endpoint] if endpoint else []))
    except ValueError as exc:
        _fail(str(exc))
    extra: dict[str, object] = {}
    if endpoint is not None:
        try:
            cluster = fetch_config(*endpoint)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"config endpoint {config_endpoint}: {exc}") from exc
        if loopback_only:
            try:
                check_loopback(cluster.nodes)
            except ValueError as exc:
                _fail(f"{exc} (listed by the config endpoint)")
        targets += cluster.nodes
        extra = {"config_endpoint": config_endpoint, "config_version": cluster.version}
    if not targets:
        _fail("give at least one --server HOST:PORT or --config-endpoint HOST:PORT")
    if len(set(targets)) != len(targets):
        _fail("duplicate server")
    for target in targets:  # fail before any worker starts, naming the address
        try:
            open_socket(target).close()
        except Unreachable as exc:
            raise click.ClickException(str(exc.strerror)) from exc
    if duration is None:
        duration = MAX_DURATION if requests is not None else DEFAULT_DURATION
    spec = RunSpec(
        targets, wl, connections, procs, duration, requests, timeout, key_prefix.encode(), seed
    )
    try:
        res = run(spec, progress=None if quiet else sys.stderr)
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    result = build_result(spec, res, extra)
    to_stdout = json_path is not None and str(json_path) == "-"
    if to_stdout:
        click.echo(json.dumps(result, indent=1))
    elif json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    if not quiet:
        click.echo(human_table(result), err=to_stdout)
    if res.worker_errors:
        raise click.ClickException("; ".join(res.worker_errors))


@main.command("plot")
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--html/--no-html",
    default=True,
    show_default=True,
    help="Also write a self-contained report.html embedding the PNGs.",
)
def plot_cmd(results: tuple[Path, ...], out_dir: Path, html: bool) -> None:
    """Write throughput, latency-over-time and latency-distribution PNGs for result files."""
    from memcache_server.load import plot  # keeps matplotlib out of `run`

    try:
        written = plot.plot_results(list(results), out_dir, html=html)
    except plot.PlotUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(str(path))

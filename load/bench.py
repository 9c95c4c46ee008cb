"""Standard comparison of our node against real memcached on one machine, in one run.

``python -m memcache_server.load.bench [--quick] [--ours-cmd CMD] [--out FILE]``

Alternates our node and memcached for every measurement (order flips between reps), with our
generator and with memcaslap (``-T 2 -c 50``), each row judged against the issue's target; a
one-connection latency probe with the other cores kept awake by spinners; memcaslap get90 at
``-t 1,2,4`` with the CPU of each whole process tree; and a memory test: items held at
``-m 64`` when evictions start, then the PSS of the whole tree after a churn.  Prints a markdown
report and writes it (plus JSON next to it).  Every server and spinner is started fresh (servers
on a free 127.0.0.1 port) and stopped by its PID.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from memcache_server.load.bench_plots import write_plots
from memcache_server.load.bench_procmem import tree_memory
from memcache_server.load.bench_report import render
from memcache_server.load.bench_servers import (
    DEFAULT_OURS_CMD,
    Server,
    cpu_seconds,
    server_stats,
    start_memcached,
    start_ours,
    stop,
)
from memcache_server.load.bench_tools import (
    WORKLOADS,
    BenchWorkload,
    churn,
    have_memcaslap,
    run_memcaslap,
    run_ours,
    start_spinners,
    stop_spinners,
)

T = TypeVar("T")
NAMES = ["ours", "memcached"]
P50_TARGET = 1.5  # the bound on the one-connection p50 ratio ours/memcached
MAX_SPINNERS = 8
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def _log(msg: str) -> None:
    click.echo(f"[bench {time.strftime('%H:%M:%S')}] {msg}", err=True)


def _measured(server: Server, duration: float, fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return its value and the server's CPU use in cores over ``duration``."""
    before = cpu_seconds(server.pid)
    value = fn()
    return value, (cpu_seconds(server.pid) - before) / duration


class Bench:
    def __init__(self, opts: dict[str, Any]) -> None:
        self.o = opts
        self.data: dict[str, Any] = {"meta": {}, "matrix": [], "notes": []}

    def start(self, name: str, threads: int, memory: int) -> Server:
        if name == "ours":
            return start_ours(self.o["ours_cmd"], threads, memory)
        return start_memcached(threads, memory)

    def ours_gen(self, srv: Server, args: tuple[str, ...], duration: float, **kw: Any) -> Any:
        return run_ours(
            srv.port,
            args,
            duration,
            kw.get("procs", self.o["procs"]),
            kw.get("connections", self.o["connections"]),
            self.o["keys"],
        )

    def prefill(self, srv: Server) -> None:
        res = self.ours_gen(srv, ("--workload", "get90", "--prefill", "--requests", "1"), 1.0)
        if res["totals"]["prefill"]["stored"] != self.o["keys"]:
            self.data["notes"].append(f"prefill of {srv.name} stored {res['totals']['prefill']}")

    def _one(self, tool: str, srv: Server, w: BenchWorkload) -> tuple[float, float, int]:
        """One measurement: (ops/s, server CPU cores, generator errors)."""
        dur = self.o["duration"]
        if tool == "load":
            args = (*w.ours_args, "--no-prefill")
            res, cores = _measured(srv, dur, lambda: self.ours_gen(srv, args, dur))
            return float(res["throughput_ops_s"]), cores, int(res["totals"]["errors_total"])
        tps, cores = _measured(srv, dur, lambda: run_memcaslap(srv.port, w, dur))
        return tps, cores, 0

    def matrix(self) -> None:
        rows: dict[str, dict[str, Any]] = {
            w.key: {
                "key": w.key,
                "title": w.title,
                "target": w.target,
                "target_tool": w.target_tool,
            }
            for w in WORKLOADS
        }
        tools = ["load"] + (["memcaslap"] if have_memcaslap() else [])
        if "memcaslap" not in tools:
            self.data["notes"].append("memcaslap not installed: memcaslap rows skipped")
        for rep in range(self.o["reps"]):
            servers = {n: self.start(n, self.o["threads"], self.o["memory"]) for n in NAMES}
            try:
                for srv in servers.values():
                    self.prefill(srv)
                for wi, w in enumerate(WORKLOADS):
                    order = NAMES if (rep + wi) % 2 == 0 else NAMES[::-1]
                    for tool in tools:
                        empty: dict[str, list[float]] = {
                            k: []
                            for k in (
                                "ours",
                                "memcached",
                                "ratio",
                                "cpu_ours",
                                "cpu_memcached",
                                "errors",
                            )
                        }
                        cell: dict[str, list[float]] = rows[w.key].setdefault(tool, empty)
                        got: dict[str, float] = {}
                        for name in order:
                            tps, cores, errs = self._one(tool, servers[name], w)
                            got[name] = tps
                            cell[name].append(tps)
                            cell[f"cpu_{name}"].append(round(cores, 3))
                            if tool == "load":  # memcaslap does not verify values
                                cell["errors"].append(errs)
                            _log(
                                f"rep {rep + 1} ({w.key}) {tool:9s} {name:9s} "
                                f"{tps:>12,.0f} ops/s  cpu {cores:.2f}  errors {errs}"
                            )
                        mc = got["memcached"]
                        cell["ratio"].append(got["ours"] / mc if mc else float("nan"))
                if self.o["probe"]:
                    self.latency_probe(servers, rep)
            finally:
                for srv in servers.values():
                    stop(srv)
        for w in WORKLOADS:
            if w.note:
                self.data["notes"].append(f"({w.key}) {w.note}")
        self.data["matrix"] = list(rows.values())

    def latency_probe(self, servers: dict[str, Server], rep: int) -> None:
        """One connection, one request in flight, get90, against each server in turn, with
        every other core kept awake by a spinner (started here and stopped by PID after)."""
        spinners = max(1, min(MAX_SPINNERS, (os.cpu_count() or 2) - 1))
        probe = self.data.setdefault(
            "latency_probe",
            {
                "ours": {"p50": [], "p99": [], "ops": []},
                "memcached": {"p50": [], "p99": [], "ops": []},
                "ratio": [],
                "target": P50_TARGET,
                "spinners": spinners,
            },
        )
        dur = min(self.o["duration"], 5.0)
        order = ["ours", "memcached"] if rep % 2 == 0 else ["memcached", "ours"]
        p50: dict[str, float] = {}
        spin = start_spinners(spinners, 2 * (dur + 60))
        try:
            for name in order:
                res = self.ours_gen(
                    servers[name],
                    ("--workload", "get90", "--no-prefill", "--pipeline", "1"),
                    dur,
                    procs=1,
                    connections=1,
                )
                lat = res["latency_us"]
                p50[name] = lat["p50"]
                probe[name]["p50"].append(lat["p50"])
                probe[name]["p99"].append(lat["p99"])
                probe[name]["ops"].append(res["throughput_ops_s"])
                _log(f"rep {rep + 1} latency probe {name:9s} p50 {lat['p50']:.1f} us")
        finally:
            stop_spinners(spin)
        probe["ratio"].append(p50["ours"] / p50["memcached"])

    def threads(self) -> None:
        """get90 at each ``-t`` for both servers (fresh pair per count and rep, order alternated):
        memcaslap ``-T 2 -c 50`` (our generator when memcaslap is missing), the CPU of each
        whole process tree, and the paired ratio."""
        w = WORKLOADS[0]
        tool = "memcaslap" if have_memcaslap() else "load"
        rows = {
            t: {
                "threads": t,
                "tool": tool,
                **{k: [] for k in ("ours", "memcached", "cpu_ours", "cpu_memcached", "ratio")},
            }
            for t in self.o["thread_counts"]
        }
        for rep in range(self.o["reps"]):
            for ti, t in enumerate(self.o["thread_counts"]):
                order = NAMES if (rep + ti) % 2 == 0 else NAMES[::-1]
                servers = {n: self.start(n, t, self.o["memory"]) for n in NAMES}
                got: dict[str, float] = {}
                try:
                    if tool == "load":
                        for srv in servers.values():
                            self.prefill(srv)
                    for name in order:
                        tps, cores, _ = self._one(tool, servers[name], w)
                        got[name] = tps
                        rows[t][name].append(tps)
                        rows[t][f"cpu_{name}"].append(round(cores, 3))
                        _log(
                            f"rep {rep + 1} threads -t {t} {tool} {name:9s} "
                            f"{tps:>12,.0f} ops/s  cpu {cores:.2f}"
                        )
                finally:
                    for srv in servers.values():
                        stop(srv)
                mc = got["memcached"]
                rows[t]["ratio"].append(got["ours"] / mc if mc else float("nan"))
        self.data["threads"] = list(rows.values())

    def memory(self) -> None:
        """Per server and ``-t``: fill ``-m 64`` with 100 B values until the first eviction
        (items held), churn on to ``--churn-mb`` of values, then the memory of the whole tree
        (PSS: the shared segment counted once; RSS; private memory per worker)."""
        counts = self.o["thread_counts"]
        configs = [("ours", t) for t in counts]
        configs += [("memcached", t) for t in sorted({min(counts), max(counts)})]
        mem: dict[str, Any] = {
            "target_mb": self.o["churn_mb"],
            "value_size": 100,
            "memory_mb": 64,
            "runs": [],
        }
        for name, t in configs:
            run: dict[str, Any] = {"server": name, "threads": t}
            srv = self.start(name, t, 64)
            try:
                run["before"] = tree_memory(srv.pid)
                run["churn"] = churn(
                    srv.port,
                    self.o["churn_mb"] * 1_000_000,
                    100,
                    self.o["churn_timeout"],
                    connections=max(4, t),
                )
                stats = server_stats(srv.port)
                run["curr_items"] = int(stats.get("curr_items", "0"))
                run["evictions"] = int(stats.get("evictions", "0"))
                run["limit_maxbytes"] = int(stats.get("limit_maxbytes", "0"))
                run["after"] = tree_memory(srv.pid)
                _log(f"memory {name} -t {t}: {run}")
            except (OSError, RuntimeError) as exc:
                run["error"] = str(exc)
                _log(f"memory {name} -t {t} failed: {exc}")
            finally:
                stop(srv)
            mem["runs"].append(run)
        self.data["memory"] = mem


def _cpu_model() -> str:
    """The CPU's model name, for the report's machine section."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@click.command()
@click.option("--reps", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option(
    "--duration",
    default=7.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="Seconds per measurement.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke test of every section: 2 s measurements, 1 rep, 64 MB churn (60 s at most).",
)
@click.option(
    "--ours-cmd",
    default=DEFAULT_OURS_CMD,
    show_default=True,
    help="Our node's command; placeholders {python} {threads} {memory} [{port}].",
)
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--thread-counts", default="1,2,4", show_default=True)
@click.option(
    "--procs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Our generator's processes.",
)
@click.option("--connections", default=8, show_default=True, type=click.IntRange(1, 500))
@click.option("--keys", default=50_000, show_default=True, type=click.IntRange(10, 10_000_000))
@click.option(
    "--churn-mb",
    default=1024,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="MB of 100 B values set through -m 64 per server and -t in the memory section.",
)
@click.option(
    "--churn-timeout",
    default=200.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds each churn may take before it stops short (the report says so).",
)
@click.option("--skip", multiple=True, type=click.Choice(["matrix", "probe", "threads", "memory"]))
@click.option(
    "--out",
    default=str(DEFAULT_OUT),
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
def main(quick: bool, out: Path, skip: tuple[str, ...], thread_counts: str, **opts: Any) -> None:
    """Compare our node with memcached (both on 127.0.0.1) and write a markdown report."""
    if quick:
        opts.update(
            duration=2.0,
            reps=1,
            churn_mb=min(opts["churn_mb"], 64),
            churn_timeout=min(opts["churn_timeout"], 60.0),
        )
    try:
        counts = [int(t) for t in thread_counts.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or not all(1 <= t <= 64 for t in counts):
        raise click.BadParameter("a comma-separated list of 1..64", param_hint="--thread-counts")
    opts["thread_counts"] = counts
    opts["probe"] = "probe" not in skip
    opts["memory"] = 64
    bench = Bench(opts)
    started = time.monotonic()
    bench.data["meta"] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        **{k: v for k, v in opts.items() if k != "probe"},
    }
    try:
        if "matrix" not in skip:
            bench.matrix()
        if "threads" not in skip:
            bench.threads()
        if "memory" not in skip:
            bench.memory()
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    bench.data["meta"]["seconds"] = round(time.monotonic() - started, 1)
    assets = out.parent / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "bench.json").write_text(json.dumps(bench.data, indent=1, default=str) + "\n")
    plots = write_plots(bench.data, assets)
    text = render(bench.data, plots, assets.name)
    click.echo(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    _log(f"wrote {out} and {assets}/ in {bench.data['meta']['seconds']} s")


if __name__ == "__main__":
    main()

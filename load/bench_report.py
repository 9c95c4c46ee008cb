"""Markdown rendering of a bench run (the BENCHMARKS-style tables), with each of the issue's
targets judged met or missed next to the measured ratio.

Pure: everything comes from the bench's JSON, so a report can be rendered again from a saved
``bench.json``.  Medians over repetitions; ratios are medians of paired (back-to-back) ratios.
"""

from __future__ import annotations

import statistics
from typing import Any

from memcache_server.load.bench_report_memory import render_memory


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def verdict(ratio: float, target: float | None, at_most: bool = False) -> str:
    """``met`` or ``missed`` for a ratio against a target (at least ``target``, or at most
    with ``at_most``); ``n/a`` without a target or a measurement."""
    if target is None or ratio != ratio:
        return "n/a"
    ok = ratio <= target if at_most else ratio >= target
    return "met" if ok else "missed"


def target_rows(data: dict[str, Any]) -> list[tuple[str, str, float, str]]:
    """(target, how it was measured, median paired ratio, verdict) for every target the run
    measured: each matrix row that has one, then the one-connection p50."""
    out = []
    for row in data.get("matrix", []):
        target, tool = row.get("target"), row.get("target_tool", "memcaslap")
        cell = row.get(tool)
        if target is None or not cell:
            continue
        ratio = _med(cell["ratio"])
        out.append(
            (f"({row['key']}) {row['title']} >= {target:.1f}x", tool, ratio, verdict(ratio, target))
        )
    probe = data.get("latency_probe")
    if probe and probe.get("target") is not None:
        ratio = _med(probe["ratio"])
        out.append(
            (
                f"one-connection p50 <= {probe['target']:.1f}x",
                f"our generator, {probe.get('spinners', 0)} spinner(s) on the other cores",
                ratio,
                verdict(ratio, probe["target"], at_most=True),
            )
        )
    return out


def scaling(threads: list[dict[str, Any]], name: str) -> list[float]:
    """Median throughput of ``name`` at each ``-t`` relative to its first (lowest) ``-t``."""
    meds = [_med(t[name]) for t in threads]
    base = meds[0] if meds else float("nan")
    return [m / base if base else float("nan") for m in meds]


def _errors(cell: dict[str, list[float]]) -> str:
    errs = cell.get("errors")
    return f"{int(sum(errs)):,}" if errs else "n/a"


METHOD = """\
## Method

- One machine, both servers on 127.0.0.1, started fresh by the bench with the same flags
  (`-t {threads} -m {memory}`), each run alternating which server goes first; every figure
  below is the median over repetitions, and every ratio is the median of *paired* ratios
  (ours / memcached measured back to back), because absolute figures on a shared 2-core
  machine drift from run to run.
- Two load generators: ours (`python -m memcache_server.load run`: verifies every value,
  HDR latency, pipelines when asked) and memcaslap from libmemcached-tools (a neutral C
  generator, run as `-T 2 -c 50`; it cannot pipeline and its TPS counts each multi-get key).
- The issue's targets are judged on memcaslap's ratios, except pipelined gets, which only our
  generator can send: it writes 32 gets at a time on every connection to both servers.
- CPU is the utime + stime of the server's whole process tree (our supervisor, spawner and
  workers) over the run divided by its length (1.0 = one core).
- The latency probe runs with a nice-19 spinning process on each other core, because an idle
  vCPU takes about 70 us to wake and a one-connection ping-pong would pay that per request.
- Memory is read from `/proc/PID/smaps_rollup` of every process of the tree (PSS, RSS, USS).
- Regenerate everything: `python -m memcache_server.load.bench` (about 30 minutes, most of it
  the memory churn; `--quick` runs every section briefly as a smoke test).
"""

LIMITS = """\
## What limits us

- Python's own CPU per request: a worker makes one recv and one send per request and one
  epoll_wait per ~20 events, as memcached does, and its kernel time per request (~6-8 us) is
  about memcached's; the difference is user CPU: memcached spends about 1 us per request, our
  node about 9-11 (workers and supervisor together, memcaslap get90; instruction counts:
  ~46,000 per get round trip, ~15,000 of them in the store, ~67,000 per set in the store).
- The generator shares the 2 cores with the server, so server CPU per op decides throughput.
- The GIL: one Python process runs one event loop at a time, so `-t N` runs N worker
  processes over one shared-memory segment and one store lock; on 2 cores the generator and
  the server share the CPUs, so extra workers help only while a core is left; {threads_line}
- The store lock: with four workers on two cores a lock that slept on every contended acquire
  made 1.3 futex calls per request; a waiter now tries again for about 100 us first, and the
  background work (the LRU maintainer, the crawler, the automover's snapshot) holds it in
  pieces of tens of microseconds, not hundreds. Timed hold by hold (a build that clocked
  each one), under the 10-key multi-get (memcaslap sends about as many sets as multi-gets
  there) a set held it 24 us and a multi-get 41 us on average, against 5.6 and 15 us in a
  warm in-process loop; the four workers held it about 85% of the time, 87% of their
  acquires found it taken, and each slept on it ~550 times a second. Under get50: 14 and
  9 us, about half the time.
- Yet the lock is not what caps throughput: a prototype in which gets of HOT and WARM items
  took no lock at all (91% of the multi-get's keys; its flag writes unsafe, for the
  measurement only) ran the multi-get 1.06x as fast (6 alternated pairs, 0.93-1.26). The
  holds are long because their holders wait for a core: the workers are CPU-bound.
- The segmented LRU's churn, in Python: with reads spread over the whole cache, a read of an
  item in COLD moves it to WARM (in the worker, under the lock), and the maintainer moves
  about as many back to COLD and rescues those read again in WARM. memcached's counters show
  the same churn (about one move per get90 request, and per key of a 10-key multi-get);
  each move is ~25 reads and writes of shared words here. Without the maintainer
  (`-o no_lru_maintainer`, a flat LRU) the 10-key multi-get runs 1.1-1.15x faster.
- Pipelining amortises the system calls over many requests, and answering a whole read batch
  with one send is where we beat memcached 1.6.18, which sends each get reply on its own.
- A request runs after a context switch, with cold caches: under the one-connection probe a
  worker spends ~14 us of user CPU per request, against ~6 us for the same path in a warm
  loop, so every step saved counts about twice there. A read that is one get line skips
  the framer and the dispatch for that reason.
- What would move it further: fewer Python steps per request (a set is ~80 reads and writes
  of shared words; a lock hold is ~230 ns, most of it the semaphore's own), or the parser
  and the store lookup in C. Compiling the store with mypyc is not enough: on a kernel of the
  get path and of a list link it ran 1.46x and 1.40x faster (each shared word is still a
  C-API call), about 1.15x of a request.
"""


def _target_cell(row: dict[str, Any], tool: str) -> str:
    if row.get("target") is None or row.get("target_tool", "memcaslap") != tool:
        return ""
    ratio = _med(row[tool]["ratio"])
    return f">= {row['target']:.1f}: {verdict(ratio, row['target'])}"


def _matrix_lines(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Throughput",
        "",
        "| workload | tool | ours ops/s | memcached ops/s | ratio ours/mc | target | ours CPU "
        "| mc CPU | generator errors |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in data["matrix"]:
        for tool in ("load", "memcaslap"):
            cell = row.get(tool)
            if not cell:
                continue
            lines.append(
                f"| ({row['key']}) {row['title']} | {tool} | {_fmt(_med(cell['ours']))} "
                f"| {_fmt(_med(cell['memcached']))} | {_fmt(_med(cell['ratio']), 3)} "
                f"| {_target_cell(row, tool)} "
                f"| {_fmt(_med(cell['cpu_ours']), 2)} | {_fmt(_med(cell['cpu_memcached']), 2)} "
                f"| {_errors(cell)} |"
            )
    return lines


def _targets_lines(data: dict[str, Any]) -> list[str]:
    rows = target_rows(data)
    if not rows:
        return []
    meta = data["meta"]
    lines = [
        f"## Targets (ours `-t {meta['threads']}` vs memcached `-t {meta['threads']}`)",
        "",
        "| target | measured with | median paired ratio | verdict |",
        "|---|---|---:|---|",
    ]
    for name, how, ratio, result in rows:
        lines.append(f"| {name} | {how} | {_fmt(ratio, 3)} | {result} |")
    return lines + [""]


def _probe_lines(probe: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Low-load latency (1 connection, no pipelining, get90)",
        "",
        f"Other cores kept awake by {probe.get('spinners', 0)} nice-19 spinning process(es), "
        "started for the probe and stopped after it.",
        "",
        "| server | p50 us | p99 us | ops/s |",
        "|---|---:|---:|---:|",
    ]
    for name in ("ours", "memcached"):
        p = probe[name]
        lines.append(
            f"| {name} | {_fmt(_med(p['p50']), 1)} | {_fmt(_med(p['p99']), 1)} "
            f"| {_fmt(_med(p['ops']))} |"
        )
    ratio = _med(probe["ratio"])
    line = f"\nmedian paired p50 ratio ours/memcached: {_fmt(ratio, 3)}"
    if probe.get("target") is not None:
        line += f" (target <= {probe['target']:.1f}: {verdict(ratio, probe['target'], True)})"
    return lines + [line]


def _threads_lines(threads: list[dict[str, Any]]) -> list[str]:
    tool = threads[0].get("tool", "memcaslap")
    how = "memcaslap `-T 2 -c 50`" if tool == "memcaslap" else "our generator"
    lines = [
        "",
        f"## Thread count (get90, {how}, both servers fresh at each -t, order alternated)",
        "",
        "CPU = cores used by the whole process tree; scaling = median ops/s at this -t / at "
        f"-t {threads[0]['threads']}, same server.",
        "",
        "| -t | ours ops/s | ours CPU | memcached ops/s | mc CPU | paired ratio ours/mc "
        "| ours scaling | mc scaling |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours_scale, mc_scale = scaling(threads, "ours"), scaling(threads, "memcached")
    for t, us, them in zip(threads, ours_scale, mc_scale, strict=True):
        lines.append(
            f"| {t['threads']} | {_fmt(_med(t['ours']))} | {_fmt(_med(t['cpu_ours']), 2)} "
            f"| {_fmt(_med(t['memcached']))} | {_fmt(_med(t['cpu_memcached']), 2)} "
            f"| {_fmt(_med(t['ratio']), 3)} | {_fmt(us, 2)} | {_fmt(them, 2)} |"
        )
    return lines


def render(
    data: dict[str, Any], plots: list[tuple[str, str]] | None = None, assets: str = "benchmarks"
) -> str:
    meta = data["meta"]
    lines = [
        "# Benchmark: our node vs memcached",
        "",
        "## Machine",
        "",
        f"- {meta.get('cpus')} CPUs ({meta.get('cpu_model', 'unknown')}), "
        f"{meta.get('platform', '')}, Python {meta.get('python', '')}",
        "",
        METHOD.format(threads=meta["threads"], memory=meta["memory"]),
        "## This run",
        "",
        f"- when: {meta['when']}; host: {meta['cpus']} CPUs; reps: {meta['reps']} "
        f"(alternating order); {meta['duration']} s per measurement",
        f"- servers: `-t {meta['threads']} -m {meta['memory']}` on 127.0.0.1; ours: "
        f"`{meta['ours_cmd']}`",
        f"- our generator: {meta['procs']} procs x {meta['connections']} conns, "
        f"{meta['keys']:,} keys (prefilled); memcaslap: `-T 2 -c 50` (see notes)",
        "- ratio = median over reps of (ours / memcached) measured back to back; CPU = server "
        "process tree utime+stime over the run / run seconds (1.0 = one core)",
        "",
    ]
    lines += _targets_lines(data)
    if data.get("matrix"):
        lines += _matrix_lines(data)
    if data.get("latency_probe"):
        lines += _probe_lines(data["latency_probe"])
    threads = data.get("threads") or []
    if threads:
        lines += _threads_lines(threads)
    if data.get("memory"):
        lines += render_memory(data["memory"])
    if plots:
        lines += ["", "## Plots", ""]
        for title, name in plots:
            lines += [f"![{title}]({assets}/{name})", ""]
    if data.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    lines += ["", LIMITS.format(threads_line=_threads_line(threads))]
    return "\n".join(lines) + "\n"


def _threads_line(threads: list[dict[str, Any]]) -> str:
    """What this run says about -t: our throughput at each thread count against the first."""
    runs = [t for t in threads if t.get("ours")]
    if not runs:
        return "this run did not measure thread counts."
    parts = ", ".join(
        f"`-t {t['threads']}` {s:.2f}" for t, s in zip(runs, scaling(runs, "ours"), strict=True)
    )
    return f"in this run, our throughput relative to `-t {runs[0]['threads']}`: {parts}."

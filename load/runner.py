"""Parent side of ``load run``: start worker processes, align their start, merge their reports.

Workers are started with the ``spawn`` context (safe regardless of threads in the parent) and
are joined, or terminated by their PID, before returning.  All waits are bounded.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from memcache_server.load.stats import Interval
from memcache_server.load.worker import READY_TIMEOUT, WorkerConfig, worker_main
from memcache_server.load.workload import Workload

START_DELAY = 0.3
FINISH_GRACE = 30.0


@dataclass
class RunSpec:
    servers: list[tuple[str, int]]
    workload: Workload
    connections: int
    procs: int
    duration: float
    requests: int | None
    timeout: float
    prefix: bytes
    seed: int


@dataclass
class RunResult:
    """Everything the report needs, merged over processes."""

    total: Interval
    slots: dict[int, Interval]
    slot_lengths: dict[int, float]
    elapsed: float
    prefill: dict[str, Any] = field(default_factory=dict)
    worker_errors: list[str] = field(default_factory=list)


def _split(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def run(spec: RunSpec, progress: TextIO | None = sys.stderr) -> RunResult:
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = []
    for wid in range(spec.procs):
        cfg = WorkerConfig(
            wid,
            spec.procs,
            spec.servers,
            spec.connections,
            spec.workload,
            spec.duration,
            _split(spec.requests, spec.procs, wid),
            spec.timeout,
            spec.prefix,
            spec.seed,
        )
        p = ctx.Process(target=worker_main, args=(cfg, q, go, start_at), daemon=True)
        p.start()
        procs.append(p)
    try:
        return _collect(spec, q, go, start_at, progress)
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()  # by PID (SIGTERM to this child only)
                p.join(timeout=5.0)


def _collect(spec: RunSpec, q: Any, go: Any, start_at: Any, progress: TextIO | None) -> RunResult:
    result = RunResult(Interval(), {}, {}, 0.0)
    prefill_errs: Counter[str] = Counter()
    stored = 0
    prefill_secs = 0.0
    ready = 0
    deadline = time.monotonic() + READY_TIMEOUT
    while ready < spec.procs:
        kind, wid, data = _get(q, deadline)
        if kind == "fatal":
            raise RuntimeError(f"worker {wid}: {data['error']}")
        if kind == "ready":
            ready += 1
            stored += data["prefill"]["stored"]
            prefill_errs.update(data["prefill"]["errors"])
            prefill_secs = max(prefill_secs, data["prefill"]["seconds"])
    result.prefill = {"stored": stored, "errors": dict(prefill_errs), "seconds": prefill_secs}
    start_at.value = time.time() + START_DELAY
    go.set()
    finished = 0
    reported: Counter[int] = Counter()
    printed = -1
    deadline = time.monotonic() + START_DELAY + spec.duration + spec.timeout + FINISH_GRACE
    while finished < spec.procs:
        kind, wid, data = _get(q, deadline)
        if kind == "fatal":
            result.worker_errors.append(f"worker {wid}: {data['error']}")
            finished += 1
            continue
        slot = int(data["slot"])
        iv = Interval.from_dict(data["interval"])
        result.slots.setdefault(slot, Interval()).merge(iv)
        result.total.merge(iv)
        if kind == "tick":
            result.slot_lengths[slot] = 1.0
            reported[slot] += 1
            if reported[slot] == spec.procs and progress is not None and slot > printed:
                printed = slot
                _progress_line(progress, slot, result.slots[slot])
        elif kind == "final":
            finished += 1
            elapsed = float(data["elapsed"])
            result.elapsed = max(result.elapsed, elapsed)
            length = elapsed - slot
            if length > 0:
                result.slot_lengths[slot] = max(result.slot_lengths.get(slot, 0.0), length)
    for slot in result.slots:
        result.slot_lengths.setdefault(slot, 1.0)
    return result


def _get(q: Any, deadline: float) -> tuple[str, int, dict[str, Any]]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("workers did not report in time")
    try:
        item = q.get(timeout=remaining)
    except queue_mod.Empty:
        raise TimeoutError("workers did not report in time") from None
    kind, wid, data = item
    return str(kind), int(wid), dict(data)


def _progress_line(out: TextIO, slot: int, iv: Interval) -> None:
    hr = iv.hit_ratio
    hit = f"{hr * 100:5.1f}%" if hr is not None else "   n/a"
    p99 = iv.hist.percentile(99) / 1000
    out.write(
        f"[{slot + 1:4d}s] {iv.ops:>10,} ops/s  hit {hit}  errors {iv.error_total:,}  "
        f"p99 {p99:,.0f} us\n"
    )
    out.flush()

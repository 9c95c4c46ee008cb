"""Body of one load-generating OS process.

It sets up keys and connections, optionally prefills, reports ``ready``, waits for the common
start time chosen by the parent, runs the engine, and streams per-second intervals back over a
multiprocessing queue.  Must stay importable under the ``spawn`` start method.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass
from typing import Any, Protocol

from memcache_server.load.engine import Conn, Engine, EngineConfig, Unreachable
from memcache_server.load.keys import KeyChooser, partition
from memcache_server.load.prefill import prefill
from memcache_server.load.workload import Workload

READY_TIMEOUT = 900.0


class Queue(Protocol):
    def put(self, obj: Any) -> None: ...


class Event(Protocol):
    def wait(self, timeout: float | None = ...) -> bool: ...


class SharedFloat(Protocol):
    value: float


@dataclass(frozen=True)
class WorkerConfig:
    wid: int
    procs: int
    servers: list[tuple[str, int]]
    connections: int
    workload: Workload
    duration: float
    requests: int | None
    timeout: float
    prefix: bytes
    seed: int


def worker_main(cfg: WorkerConfig, queue: Queue, go: Event, start_at: SharedFloat) -> None:
    """Process entry point; every outcome, including a crash, is reported on ``queue``."""
    try:
        _run(cfg, queue, go, start_at)
    except Unreachable as exc:  # an operator's typo or a server down: the address says it all
        queue.put(("fatal", cfg.wid, {"error": exc.strerror}))
    except Exception as exc:  # report, do not hang the parent
        queue.put(("fatal", cfg.wid, {"error": f"{type(exc).__name__}: {exc}"}))
        traceback.print_exc()


def _run(cfg: WorkerConfig, queue: Queue, go: Event, start_at: SharedFloat) -> None:
    rng = random.Random(cfg.seed * 7919 + cfg.wid)
    wl = cfg.workload
    parts = partition(cfg.prefix, wl.keys, cfg.servers)
    pre: dict[str, Any] = {"stored": 0, "errors": {}, "seconds": 0.0}
    if wl.prefill:
        t = time.monotonic()
        stored, errs = prefill(
            cfg.servers,
            parts,
            wl,
            cfg.prefix,
            (cfg.wid, cfg.procs),
            rng.getrandbits(32),
            time.monotonic() + 600.0,
        )
        pre = {"stored": stored, "errors": dict(errs), "seconds": time.monotonic() - t}
    conns = [
        Conn(addr, KeyChooser(ids, wl.key_dist, wl.zipf_s, rng), rng.getrandbits(32))
        for _ in range(cfg.connections)
        for addr, ids in zip(cfg.servers, parts, strict=True)
    ]
    engine_cfg = EngineConfig(wl, cfg.prefix, 0.0, 0.0, cfg.requests, cfg.timeout)
    engine = Engine(engine_cfg, conns, rng, lambda kind, data: queue.put((kind, cfg.wid, data)))
    engine.connect_all()
    queue.put(("ready", cfg.wid, {"prefill": pre}))
    if not go.wait(READY_TIMEOUT):
        raise TimeoutError("never got the start signal")
    offset = time.perf_counter() - time.time()
    engine_cfg.start_perf = start_at.value + offset
    engine_cfg.deadline_perf = engine_cfg.start_perf + cfg.duration
    delay = engine_cfg.start_perf - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    elapsed = engine.run()
    final = engine.final_interval()
    final["elapsed"] = elapsed
    queue.put(("final", cfg.wid, final))

"""Request latency by command family: one flat integer list per worker, read at scrape time.

Why it looks like this: the request path may only pay for two clock reads and two list
increments. Each worker owns one ``list[int]`` (written only by that worker's thread) laid out as
``FAMILIES`` blocks of ``STRIDE`` slots: the power-of-two buckets, then the sum in nanoseconds.
The bucket of an observation is a table lookup on ``int.bit_length()`` of the elapsed
nanoseconds, so there is no search, no float and no lock. The metrics collector sums the lists of
all workers when it is scraped (``merge``); a read racing a write is off by one observation at
most, which a histogram tolerates.

What is timed is one *read batch* (see ``server/worker.py``): from the moment its requests are
processed until their replies are handed to the kernel, labelled by the family of the batch's
first request. For request/response clients a batch is one request. It is sampled: a worker
times the first batch of one event-loop wake-up in ``SAMPLE_EVERY``, so the per-request cost is
a test of a local variable, and it shrinks as load grows (a busy wake-up serves many batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FAMILIES",
    "BUCKET_BOUNDS",
    "STRIDE",
    "new_recorder",
    "family_offset",
    "observe",
    "merge",
    "LatencySnapshot",
]

# Command families, in label order. "other" is everything not listed (stats, version, ...).
FAMILIES: tuple[str, ...] = ("get", "gat", "set", "delete", "incr_decr", "touch", "other")

# First three bytes of a request line -> family. Meta commands map to their classic family.
_PREFIXES: dict[bytes, str] = {
    b"get": "get",  # get, gets
    b"bge": "get",  # bget
    b"mg ": "get",
    b"gat": "gat",  # gat, gats
    b"set": "set",
    b"add": "set",
    b"rep": "set",  # replace
    b"app": "set",  # append
    b"pre": "set",  # prepend
    b"cas": "set",
    b"ms ": "set",
    b"del": "delete",
    b"md ": "delete",
    b"inc": "incr_decr",
    b"dec": "incr_decr",
    b"ma ": "incr_decr",
    b"tou": "touch",
}

# Buckets: upper bounds 2**10 .. 2**30 ns (about 1 us .. 1.07 s), doubling, then +Inf.
_FIRST_BIT = 10
_LAST_BIT = 30
N_BUCKETS = _LAST_BIT - _FIRST_BIT + 2  # finite buckets + the +Inf bucket
STRIDE = N_BUCKETS + 1  # + the sum slot
BUCKET_BOUNDS: tuple[float, ...] = tuple((1 << b) / 1e9 for b in range(_FIRST_BIT, _LAST_BIT + 1))

# bit_length of (elapsed ns - 1) -> bucket slot. For v >= 1, b = (v - 1).bit_length() is the
# smallest b with v <= 2**b, so v belongs to the bucket whose bound (le) is 2**b, clamped at both
# ends; an exact power of two lands in its own bucket, as Prometheus' "le" requires.
SLOT_OF_BITS: tuple[int, ...] = tuple(
    0 if b <= _FIRST_BIT else (b - _FIRST_BIT if b <= _LAST_BIT else N_BUCKETS - 1)
    for b in range(65)
)
SUM_SLOT = N_BUCKETS

# One event-loop wake-up in SAMPLE_EVERY times its first read batch (a power of two: the worker
# keeps ``tick = (tick + 1) & SAMPLE_MASK`` in a local and times when it wraps to 0).
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1

_OFFSET = {name: i * STRIDE for i, name in enumerate(FAMILIES)}
OTHER_OFFSET = _OFFSET["other"]
PREFIX_OFFSET: dict[bytes, int] = {p: _OFFSET[f] for p, f in _PREFIXES.items()}


def new_recorder() -> list[int]:
    """A worker's zeroed histogram list."""
    return [0] * (len(FAMILIES) * STRIDE)


def family_offset(first_bytes: bytes) -> int:
    """The list offset of the family a request line starting with ``first_bytes`` belongs to."""
    return PREFIX_OFFSET.get(first_bytes[:3], OTHER_OFFSET)


def observe(rec: list[int], offset: int, elapsed_ns: int) -> None:
    """Record one observation. (The worker inlines these two lines on its hot path.)"""
    rec[offset + SLOT_OF_BITS[(elapsed_ns - 1).bit_length()]] += 1
    rec[offset + SUM_SLOT] += elapsed_ns


@dataclass(frozen=True, slots=True)
class FamilyHistogram:
    """One family's merged histogram: per-bucket (not cumulative) counts and the sum."""

    counts: tuple[int, ...]
    sum_ns: int

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(BUCKET_BOUNDS, self.counts, strict=False):
            running += n
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """Histograms of every family, summed over workers."""

    families: dict[str, FamilyHistogram]


def merge(recorders: Iterable[Sequence[int]]) -> LatencySnapshot:
    """Sum the workers' lists (called by the collector, on the scraping thread)."""
    total = [0] * (len(FAMILIES) * STRIDE)
    for rec in recorders:
        snap = list(rec)  # one C-level copy, so a family's slots are read together
        for i, v in enumerate(snap):
            total[i] += v
    families = {}
    for name, off in _OFFSET.items():
        families[name] = FamilyHistogram(
            counts=tuple(total[off : off + N_BUCKETS]), sum_ns=total[off + SUM_SLOT]
        )
    return LatencySnapshot(families)

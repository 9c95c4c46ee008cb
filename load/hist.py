"""A small HDR-style log-linear latency histogram, in nanoseconds.

Why our own: we need constant-time recording in a hot Python loop, ~1% relative precision over
1 us .. 60 s, and a representation (a plain list of integer counts, or a sparse dict of them)
that can be merged exactly across processes and per-second intervals.

Layout: values below ``2**BITS`` (256 ns) get one bucket each (exact).  Above that, every power
of two is split into ``HALF`` = 128 equal buckets, so a bucket's width is at most 1/128 (0.78%)
of its lower bound.  Index of ``v``: ``shift * HALF + (v >> shift)`` with
``shift = v.bit_length() - BITS``; this is contiguous with the exact region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BITS = 8
HALF = 1 << (BITS - 1)
MAX_VALUE_NS = 60_000_000_000  # 60 s; larger values are clamped into the top bucket
_MAX_SHIFT = max(0, MAX_VALUE_NS.bit_length() - BITS)
NUM_BUCKETS = _MAX_SHIFT * HALF + (1 << BITS)


def bucket_index(value_ns: int) -> int:
    """Bucket of a value; negative values count as 0 and huge ones as ``MAX_VALUE_NS``."""
    if value_ns < (1 << BITS):
        return value_ns if value_ns > 0 else 0
    if value_ns > MAX_VALUE_NS:
        value_ns = MAX_VALUE_NS
    shift = value_ns.bit_length() - BITS
    return shift * HALF + (value_ns >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Inclusive ``(lowest, highest)`` value that falls into bucket ``index``."""
    if index < (1 << BITS):
        return index, index
    shift = index // HALF - 1
    top = index - shift * HALF
    low = top << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts per bucket plus exact count, sum, min and max (for an exact mean and max)."""

    __slots__ = ("counts", "total", "sum_ns", "min_ns", "max_ns")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * NUM_BUCKETS
        self.total = 0
        self.sum_ns = 0
        self.min_ns = 0
        self.max_ns = 0

    def record(self, value_ns: int) -> None:
        """Add one observation (hot path: keep it cheap)."""
        self.counts[bucket_index(value_ns)] += 1
        if self.total == 0 or value_ns < self.min_ns:
            self.min_ns = value_ns
        if value_ns > self.max_ns:
            self.max_ns = value_ns
        self.total += 1
        self.sum_ns += value_ns

    def merge(self, other: Histogram) -> None:
        """Add another histogram's observations to this one (exact: integer sums)."""
        if other.total == 0:
            return
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.min_ns = other.min_ns if self.total == 0 else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.total += other.total
        self.sum_ns += other.sum_ns

    def percentile(self, pct: float) -> int:
        """Nearest-rank percentile, reported as the top of its bucket (capped at the max).

        The true value ``x`` satisfies ``x <= result <= x * (1 + 1/128)`` (or exact below 256).
        """
        if self.total == 0:
            return 0
        rank = max(1, -(-int(round(pct * self.total * 1000)) // 100_000))
        rank = min(rank, self.total)
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(bucket_bounds(i)[1], self.max_ns)
        return self.max_ns

    def mean(self) -> float:
        return self.sum_ns / self.total if self.total else 0.0

    def to_sparse(self) -> dict[str, int | dict[int, int]]:
        """A compact, picklable and JSON-able form for sending between processes."""
        return {
            "total": self.total,
            "sum_ns": self.sum_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "buckets": {i: c for i, c in enumerate(self.counts) if c},
        }

    @classmethod
    def from_sparse(cls, data: Mapping[str, object]) -> Histogram:
        h = cls()
        buckets = data.get("buckets", {})
        assert isinstance(buckets, Mapping)
        for k, v in buckets.items():
            h.counts[int(k)] += int(v)
        h.total = _int(data.get("total"))
        h.sum_ns = _int(data.get("sum_ns"))
        h.min_ns = _int(data.get("min_ns"))
        h.max_ns = _int(data.get("max_ns"))
        return h

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        h = cls()
        for v in values:
            h.record(v)
        return h


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


def exact_percentile(values: list[int], pct: float) -> int:
    """Nearest-rank percentile of raw values; the reference the histogram is tested against."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-int(round(pct * len(ordered) * 1000)) // 100_000))
    return ordered[min(rank, len(ordered)) - 1]

"""Per-interval counters shared by the worker engine and the parent aggregator.

A worker fills one ``Interval`` per second of the run and ships it (as a plain dict) to the
parent, which merges them into the per-second time series and the run totals.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from memcache_server.load.hist import Histogram

COUNTER_FIELDS = ("ops", "gets", "get_keys", "sets", "hits", "misses")


class Interval:
    """Counts and a latency histogram for one slice of time."""

    __slots__ = ("ops", "gets", "get_keys", "sets", "hits", "misses", "errors", "hist")

    def __init__(self) -> None:
        self.ops = 0
        self.gets = 0
        self.get_keys = 0
        self.sets = 0
        self.hits = 0
        self.misses = 0
        self.errors: Counter[str] = Counter()
        self.hist = Histogram()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in COUNTER_FIELDS}
        d["errors"] = dict(self.errors)
        d["hist"] = self.hist.to_sparse()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Interval:
        iv = cls()
        for f in COUNTER_FIELDS:
            setattr(iv, f, int(d.get(f, 0)))
        iv.errors.update({str(k): int(v) for k, v in d.get("errors", {}).items()})
        iv.hist = Histogram.from_sparse(d.get("hist", {}))
        return iv

    def merge(self, other: Interval) -> None:
        for f in COUNTER_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.errors.update(other.errors)
        self.hist.merge(other.hist)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    @property
    def hit_ratio(self) -> float | None:
        looked = self.hits + self.misses
        return self.hits / looked if looked else None

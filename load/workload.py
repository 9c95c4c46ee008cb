"""Named workload presets and the rule that explicit options override them.

Kept free of I/O so the resolution is easy to test and identical in every worker process.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MAX_VALUE_SIZE = 1_000_000  # memcached's default item limit is 1 MiB including overhead
MIN_VALUE_SIZE = 8  # the self-checking header (see load.values)


@dataclass(frozen=True)
class ValueSize:
    """Fixed (``low == high``) or uniformly distributed value sizes in bytes."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> ValueSize:
        """``"100"`` -> fixed; ``"64-4096"`` -> uniform over [64, 4096]."""
        parts = text.strip().split("-")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad value size {text!r}: use N or LOW-HIGH") from None
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2 or nums[0] > nums[1]:
            raise ValueError(f"bad value size {text!r}: use N or LOW-HIGH with LOW <= HIGH")
        if nums[0] < MIN_VALUE_SIZE or nums[1] > MAX_VALUE_SIZE:
            raise ValueError(
                f"value size {text!r} out of range [{MIN_VALUE_SIZE}, {MAX_VALUE_SIZE}]"
            )
        return cls(nums[0], nums[1])

    def pick(self, rng: random.Random) -> int:
        return self.low if self.low == self.high else rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Workload:
    """Everything that shapes the request stream (not where it goes or for how long)."""

    name: str = "get90"
    get_ratio: float = 0.9
    value_size: ValueSize = ValueSize(100, 100)
    keys: int = 100_000
    key_dist: str = "uniform"
    zipf_s: float = 1.0
    multiget: int = 1
    pipeline: int = 1
    ttl: int = 0
    prefill: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["value_size"] = str(self.value_size)
        return d


PRESETS: dict[str, Workload] = {
    "get90": Workload("get90", get_ratio=0.9),
    "mixed50": Workload("mixed50", get_ratio=0.5),
    "multiget10": Workload("multiget10", get_ratio=0.9, multiget=10, prefill=True),
    "large4k": Workload("large4k", get_ratio=0.9, value_size=ValueSize(4096, 4096)),
    "pipeline32": Workload("pipeline32", get_ratio=1.0, pipeline=32, prefill=True),
    "setonly": Workload("setonly", get_ratio=0.0),
}

LIMITS: dict[str, tuple[float, float]] = {
    "get_ratio": (0.0, 1.0),
    "keys": (1, 50_000_000),
    "zipf_s": (0.0, 10.0),
    "multiget": (1, 100),
    "pipeline": (1, 1024),
    "ttl": (0, 60 * 60 * 24 * 30),
}


def resolve_workload(preset: str, **overrides: Any) -> Workload:
    """Start from ``preset`` and apply every override that is not ``None``.

    Raises ``ValueError`` for an unknown preset, unknown field or out-of-range value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown workload {preset!r}; choose from {', '.join(PRESETS)}")
    names = {f.name for f in fields(Workload)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names or key == "name":
            raise ValueError(f"unknown workload option {key!r}")
        if value is None:
            continue
        if key == "value_size" and isinstance(value, str):
            value = ValueSize.parse(value)
        changes[key] = value
    wl = replace(PRESETS[preset], **changes)
    for key, (low, high) in LIMITS.items():
        val = getattr(wl, key)
        if not low <= val <= high:
            raise ValueError(f"{key.replace('_', '-')} = {val} out of range [{low}, {high}]")
    if wl.key_dist not in ("uniform", "zipf"):
        raise ValueError(f"key-dist must be uniform or zipf, not {wl.key_dist!r}")
    return wl

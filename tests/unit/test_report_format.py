"""`stats` number formats that other programs parse (memcached_exporter among them)."""

from __future__ import annotations

import pytest

from memcache_server.report import _rusage


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0.000000"), (1.5, "1.500000"), (1.9999996, "2.000000"), (12.000001, "12.000001")],
)
def test_rusage_is_printed_as_memcached_prints_it(seconds: float, text: str) -> None:
    """memcached prints rusage as ``%ld.%06ld``: always six digits, never a carry lost."""
    assert _rusage(seconds) == text

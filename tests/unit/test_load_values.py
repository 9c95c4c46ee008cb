"""Self-checking values: good values pass; short, foreign and torn values are told apart."""

from __future__ import annotations

import pytest

from memcache_server.load.values import HEADER_SIZE, make_value, verify_value


@pytest.mark.parametrize("size", [8, 9, 100, 4096, 100_000])
def test_round_trip(size: int) -> None:
    v = make_value(b"load:42", 7, size)
    assert len(v) == size
    assert verify_value(b"load:42", v) is None


def test_deterministic_and_version_dependent() -> None:
    assert make_value(b"k", 1, 100) == make_value(b"k", 1, 100)
    assert make_value(b"k", 1, 100) != make_value(b"k", 2, 100)


def test_size_clamped_to_header() -> None:
    assert len(make_value(b"k", 1, 0)) == HEADER_SIZE


def test_foreign_value_detected() -> None:
    other = make_value(b"load:2", 1, 100)
    assert verify_value(b"load:1", other) == "foreign"
    assert verify_value(b"load:1", b"x" * 100) == "foreign"


def test_short_value_detected() -> None:
    assert verify_value(b"load:1", b"abc") == "short"
    assert verify_value(b"load:1", b"") == "short"


def test_truncated_value_detected() -> None:
    v = make_value(b"load:1", 3, 100)
    assert verify_value(b"load:1", v[:-1]) == "foreign"  # length is part of the checksum


def test_torn_value_detected() -> None:
    a = make_value(b"load:1", 1, 200)
    b = make_value(b"load:1", 2, 200)
    assert verify_value(b"load:1", a[:100] + b[100:]) == "torn"
    flipped = bytearray(a)
    flipped[150] ^= 1
    assert verify_value(b"load:1", bytes(flipped)) == "torn"


def test_header_damage_detected() -> None:
    v = bytearray(make_value(b"load:1", 1, 100))
    v[0] ^= 0x80
    assert verify_value(b"load:1", bytes(v)) == "foreign"

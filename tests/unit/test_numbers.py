"""memcached's safe_strto* number parsing (util.c), edge by edge.

memcached parses with strtol/strtoul/strtoull (64-bit long) and then stores into 32-bit fields,
so values truncate; unsigned fields refuse a minus sign only when the result looks negative.
"""

from __future__ import annotations

import pytest

from memcache_server.protocol.numbers import strtol32, strtoll, strtoul32, strtoull

U64_MAX = (1 << 64) - 1

# Inputs every parser refuses: junk, empty, a lone sign, Python-only syntax, non-ASCII digits.
JUNK = [
    b"",
    b"-",
    b"+",
    b"abc",
    b"1x",
    b"x1",
    b"1.5",
    b"1e3",
    b"0x10",
    b"1_0",  # int() would take it; strtol stops at '_'
    b"+-1",
    b"--1",
    "\u0661".encode(),  # ARABIC-INDIC DIGIT ONE: int() takes it as str, C does not
    "\uff11\uff12".encode(),  # FULLWIDTH DIGITS
    "\u00b2".encode(),  # SUPERSCRIPT TWO
    b"\xff",
]


@pytest.mark.parametrize("parse", [strtol32, strtoul32, strtoull, strtoll])
@pytest.mark.parametrize("tok", JUNK)
def test_junk_is_refused(parse: object, tok: bytes) -> None:
    assert parse(tok) is None  # type: ignore[operator]


@pytest.mark.parametrize(
    ("tok", "want"),
    [
        (b"0", 0),
        (b"5", 5),
        (b"+5", 5),
        (b"-1", -1),
        (b"-0", 0),
        (b"0005", 5),
        (b"2147483647", 2147483647),
        (b"2147483648", -2147483648),  # long 2^31 stored into int32_t
        (b"4294967295", -1),
        (b"4294967296", 0),  # the famous "length 4294967296 reads as 0"
        (b"4294967297", 1),
        (b"-2147483649", 2147483647),
        (b"-4294967296", 0),
        (b"9223372036854775807", -1),
        (b"-9223372036854775808", 0),
        (b"9223372036854775808", None),  # ERANGE for a 64-bit long
        (b"-9223372036854775809", None),
        (b"18446744073709551615", None),
        (b"99999999999999999999999", None),
    ],
)
def test_strtol32(tok: bytes, want: int | None) -> None:
    assert strtol32(tok) == want


@pytest.mark.parametrize(
    ("tok", "want"),
    [
        (b"0", 0),
        (b"+5", 5),
        (b"4294967295", 4294967295),
        (b"4294967296", 0),  # unsigned long 2^32 stored into uint32_t
        (b"4294967301", 5),
        (b"-0", 0),
        (b"-1", None),  # looks negative as a signed long: refused
        (b"-4294967295", None),
        (b"-9223372036854775808", None),
        # strtoul negates in unsigned arithmetic: 2^64 - 9223372036854775809 is positive as a
        # signed long, so memcached's sign check lets it through (then truncates to 32 bits)
        (b"-9223372036854775809", 0xFFFFFFFF),
        (b"18446744073709551615", 0xFFFFFFFF),  # negative as a long, but no minus sign
        (b"18446744073709551616", None),  # ERANGE
    ],
)
def test_strtoul32(tok: bytes, want: int | None) -> None:
    assert strtoul32(tok) == want


@pytest.mark.parametrize(
    ("tok", "want"),
    [
        (b"0", 0),
        (b"+5", 5),
        (b"4294967296", 4294967296),
        (b"9223372036854775807", (1 << 63) - 1),
        (b"9223372036854775808", 1 << 63),  # no minus sign: big values are fine
        (b"18446744073709551615", U64_MAX),
        (b"018446744073709551615", U64_MAX),
        (b"18446744073709551616", None),  # 2^64: ERANGE
        (b"99999999999999999999", None),
        (b"-0", 0),
        (b"-1", None),
        (b"-5", None),
        (b"-9223372036854775808", None),
        (b"-9223372036854775809", (1 << 63) - 1),  # wraps to a positive signed value
        (b"-18446744073709551615", 1),
        (b"-18446744073709551616", None),
    ],
)
def test_strtoull(tok: bytes, want: int | None) -> None:
    assert strtoull(tok) == want


@pytest.mark.parametrize(
    ("tok", "want"),
    [
        (b"-1", -1),
        (b"+5", 5),
        (b"9223372036854775807", (1 << 63) - 1),
        (b"-9223372036854775808", -(1 << 63)),
        (b"9223372036854775808", None),
        (b"-9223372036854775809", None),
    ],
)
def test_strtoll(tok: bytes, want: int | None) -> None:
    assert strtoll(tok) == want


def test_fast_paths_agree_with_slow_paths() -> None:
    """The short all-digit fast path must give what the general path gives."""
    for n in (0, 1, 9, 10, 99, 123456789, 999999999, 1000000000, 2147483647, 4294967295):
        tok = b"%d" % n
        assert strtoull(tok) == n
        assert strtoull(b"+" + tok) == n
        assert strtoul32(tok) == strtoul32(b"+" + tok) == n & 0xFFFFFFFF
        v = n & 0xFFFFFFFF
        assert strtol32(tok) == strtol32(b"+" + tok) == (v - (1 << 32) if v >> 31 else v)


def test_whitespace_around_digits_like_memcached() -> None:
    toks = [b"5\t", b"5\r", b"\t5", b"\x0b5", b"5\x0c", b"5\tjunk"]
    got = {(p.__name__, t): p(t) for p in (strtol32, strtoul32, strtoull) for t in toks}
    assert got == {k: 5 for k in got}

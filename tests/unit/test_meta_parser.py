"""The meta flag parser and ``ms`` framing, bytes in and values out (no socket, no store)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcache_server.protocol import meta as M
from memcache_server.protocol.framer import CMD, MSTORE, REPLY, Framer


def parse(line: bytes, start: int = 2) -> M.MetaFlags:
    return M.parse_flags(line.split(), start)


def test_defaults() -> None:
    f = parse(b"mg key")
    assert not f.error and f.key == b"key"
    assert (f.value, f.no_reply, f.vivify, f.has_cas, f.new_ttl) == (False,) * 5
    assert f.delta == 1 and f.initial == 0 and f.mode == 0


def test_values_parsed() -> None:
    f = parse(b"ms key 5 T30 F7 C99 MA I q", start=3)
    assert not f.error
    assert (f.exptime, f.new_ttl, f.client_flags, f.req_cas, f.has_cas) == (30, True, 7, 99, True)
    assert f.mode == ord("A") and f.set_stale and f.no_reply


def test_ttl_flags_lock_and_vivify() -> None:
    f = parse(b"mg key N30 R5 v")
    assert f.vivify and f.locked and f.autoviv == 30 and f.recache == 5 and f.value
    assert parse(b"mg key h").locked and parse(b"mg key l").la


def test_arithmetic_flags() -> None:
    f = parse(b"ma key D10 J5 MD N0")
    assert (f.delta, f.initial, f.mode, f.vivify) == (10, 5, ord("D"), True)


def test_only_the_first_byte_names_a_flag() -> None:
    f = parse(b"mg key vx kk sss")
    assert not f.error and f.value


@pytest.mark.parametrize(
    "line, error",
    [
        (b"mg key v v", M.ERR_DUPLICATE),
        (b"mg key la lx", M.ERR_DUPLICATE),
        (b"mg key x", M.ERR_INVALID),
        (b"mg key E5", M.ERR_INVALID),
        (b"mg key \x80", M.ERR_DUPLICATE),  # memcached's message for bytes >= 127
        (b"mg key N", M.ERR_BAD_TOKEN),
        (b"mg key Tx", M.ERR_BAD_TOKEN),
        (b"mg key R1x", M.ERR_BAD_TOKEN),
        (b"mg key C-1", M.ERR_BAD_TOKEN),
        (b"mg key MAB", M.ERR_M_LENGTH),
        (b"mg key Jx", M.ERR_INITIAL),
        (b"mg key D", M.ERR_DELTA),
        (b"mg key F-1", M.ERR_BAD_FORMAT),  # a bad F keeps the generic message
        (b"mg Zm9 b", M.ERR_DECODE_KEY),
    ],
)
def test_errors(line: bytes, error: bytes) -> None:
    assert parse(line).error == error


def test_later_value_error_overwrites_earlier() -> None:
    assert parse(b"mg key Tx Jx").error == M.ERR_INITIAL
    # ...but a duplicate or unknown flag stops parsing at once
    assert parse(b"mg key Tx v v").error == M.ERR_DUPLICATE
    assert parse(b"mg key x v v").error == M.ERR_INVALID


def test_numbers_follow_memcached_truncation() -> None:
    assert parse(b"mg key T4294967296").exptime == 0  # int32 truncation, as safe_strtol
    assert parse(b"mg key T-1").exptime == -1
    assert parse(b"ms key 1 F4294967297", 3).client_flags == 1


def test_base64_key() -> None:
    f = parse(b"mg Zm9v b")
    assert f.key == b"foo" and f.key_binary


@pytest.mark.parametrize(
    "src, out",
    [
        (b"Zm9v", b"foo"),
        (b"Zg==", b"f"),
        (b"Zm8=", b"fo"),
        (b"Zm9v_", b"foo"),  # bytes outside the alphabet are skipped
        (b"Zm9", b""),
        (b"Zm9v=", b""),
        (b"Zg", b""),
        (b"Z===", b""),  # three pad characters are invalid
        (b"", b""),
    ],
)
def test_b64decode_like_memcached(src: bytes, out: bytes) -> None:
    assert M.b64decode(src) == out


@given(st.binary(min_size=1, max_size=187))
def test_b64_roundtrip(data: bytes) -> None:
    enc = M.b64encode(data)
    assert enc == base64.b64encode(data)
    assert M.b64decode(enc) == data


def test_key_token_and_opaque_limit() -> None:
    assert M.key_token(b"foo", False) == b" kfoo"
    assert M.key_token(b"foo", True) == b" kZm9v b"
    toks = [b"mg", b"k", b"v", b"O" + b"1" * 31, b"O" + b"1" * 32]
    assert M.opaque_error_at(toks, 2) == 4
    assert M.opaque_error_at(toks[:4], 2) == 4


# ------------------------------------------------------------------ ms framing

MS = b"ms key 5 T10 c\r\nhello\r\nmn\r\n"


def _frame(chunks: list[bytes]) -> list[tuple[object, ...]]:
    fr = Framer(1024 * 1024)
    out: list[tuple[object, ...]] = []
    for ch in chunks:
        fr.feed(ch)
        while (req := fr.next_request()) is not None:
            out.append(req)
    return out


@pytest.mark.parametrize("split", ["whole", "lines", "bytes"])
def test_ms_framing_any_split(split: str) -> None:
    if split == "whole":
        chunks = [MS]
    elif split == "lines":
        chunks = [line + b"\n" for line in MS.split(b"\n") if line]
    else:
        chunks = [MS[i : i + 1] for i in range(len(MS))]
    reqs = _frame(chunks)
    assert reqs == [(MSTORE, [b"ms", b"key", b"5", b"T10", b"c"], b"hello\r\n"), (CMD, [b"mn"])]


@pytest.mark.parametrize(
    "data, first",
    [
        (b"ms\r\n", (REPLY, b"ERROR\r\n")),
        (b"ms key\r\n", (REPLY, M.ERR_BAD_FORMAT)),
        (b"ms key x\r\n", (REPLY, M.ERR_BAD_FORMAT)),
        (b"ms key -1\r\n", (REPLY, M.ERR_BAD_FORMAT)),
        (b"ms " + b"k" * 251 + b" 1\r\n", (REPLY, M.ERR_BAD_FORMAT)),
        (
            b"ms key 1 " + b" ".join(b"O%d" % i for i in range(17)) + b"\r\n",
            (REPLY, M.ERR_TOO_LONG),
        ),
    ],
)
def test_ms_header_errors_do_not_read_data(data: bytes, first: tuple[object, ...]) -> None:
    reqs = _frame([data + b"mn\r\n"])
    assert reqs == [first, (CMD, [b"mn"])]


def test_ms_bad_chunk_and_too_large() -> None:
    assert _frame([b"ms key 2\r\nabc\r\n"])[0] == (MSTORE, [b"ms", b"key", b"2"], b"")
    fr = Framer(1024)
    fr.feed(b"ms key 2000\r\n" + b"z" * 1000)
    assert fr.next_request() == (MSTORE, [b"ms", b"key", b"2000"], None)
    fr.feed(b"z" * 1000 + b"\r\nmn\r\n")  # the rest of the refused block is swallowed
    assert fr.next_request() == (CMD, [b"mn"])

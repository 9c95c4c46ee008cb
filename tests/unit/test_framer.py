"""The sans-IO framer on a corpus of request streams, fed whole, line by line and byte by byte.

Like gunicorn's request-corpus replay: however a stream is cut into reads, the framer must yield
the same requests. Expected requests follow memcached 1.6.18's text parser (proto_text.c).
"""

from __future__ import annotations

import random

import pytest

from memcache_server.protocol import constants as C
from memcache_server.protocol.framer import CLOSE, CMD, REPLY, STORE, Framer

MAX_VALUE = 1024 * 1024

Req = tuple[object, ...]


def cmd(*tokens: bytes) -> Req:
    return (CMD, tuple(tokens))


def store(
    line: bytes,
    body: bytes | None,
    *,
    flags: int = 0,
    exptime: int = 0,
    cas: int = 0,
    noreply: bool = False,
) -> Req:
    tokens = tuple(t for t in line.split(b" ") if t)
    return (STORE, tokens, tokens[1], flags, exptime, cas, body, noreply)


def reply(data: bytes) -> Req:
    return (REPLY, data)


def too_large(line: bytes, **kw: object) -> Req:
    """A block over max_value: refused before it is read, so no body (None)."""
    return store(line, None, **kw)  # type: ignore[arg-type]


def bad_chunk(line: bytes, **kw: object) -> Req:
    """A block not ending in CRLF: memcached's "bad data chunk" (an empty body)."""
    return store(line, b"", **kw)  # type: ignore[arg-type]


CLOSED: Req = (CLOSE, b"line too long")


def normalize(req: tuple[object, ...]) -> Req:
    if req[0] == CMD:
        return (CMD, tuple(req[1]))  # type: ignore[arg-type]
    if req[0] == STORE:
        _, tokens, key, flags, exptime, cas, body, noreply = req
        if body is not None:
            body = bytes(body)  # type: ignore[arg-type]
        return (STORE, tuple(tokens), key, flags, exptime, cas, body, noreply)  # type: ignore[arg-type]
    return tuple(req)


def run(chunks: list[bytes], max_value: int = MAX_VALUE) -> list[Req]:
    framer = Framer(max_value)
    out: list[Req] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (req := framer.next_request()) is not None:
            out.append(normalize(req))
    return out


def whole(data: bytes) -> list[bytes]:
    return [data]


def by_line(data: bytes) -> list[bytes]:
    """Cut after every newline (data blocks holding CRLF get cut too)."""
    out = []
    start = 0
    while True:
        nl = data.find(b"\n", start)
        if nl < 0:
            break
        out.append(data[start : nl + 1])
        start = nl + 1
    if start < len(data):
        out.append(data[start:])
    return out


def by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def by_random(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    i = 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 7, 64, 500, 4096))
        out.append(data[i : i + n])
        i += n
    return out


MANY_KEYS = [b"key:%d" % i for i in range(200)]
LONG_GET_KEYS = [b"k%06d" % i for i in range(100 * 1024 // 8)]  # ~100 KB of keys
LONG_GET = b"get " + b" ".join(LONG_GET_KEYS) + b"\r\n"
VALUE_WITH_CRLF = b"ab\r\ncd\r\nef"  # 10 bytes: CRLF inside a value is data, not a line end
BIG = b"z" * 2000  # over the corpus framer's max_value of 1024

CORPUS: dict[str, tuple[bytes, list[Req], int]] = {
    "get_one": (b"get a\r\n", [cmd(b"get", b"a")], MAX_VALUE),
    "get_many_keys": (
        b"get " + b" ".join(MANY_KEYS) + b"\r\n",
        [cmd(b"get", *MANY_KEYS)],
        MAX_VALUE,
    ),
    "gets_and_bget": (
        b"gets a b c\r\nbget x\r\n",
        [cmd(b"gets", b"a", b"b", b"c"), cmd(b"bget", b"x")],
        MAX_VALUE,
    ),
    "set_value_with_crlf_inside": (
        b"set k 5 0 10\r\n" + VALUE_WITH_CRLF + b"\r\nget k\r\n",
        [store(b"set k 5 0 10", VALUE_WITH_CRLF + b"\r\n", flags=5), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "every_storage_verb": (
        b"set a 1 2 1\r\nA\r\nadd b 0 0 1\r\nB\r\nreplace c 0 0 1\r\nC\r\n"
        b"append d 0 0 1\r\nD\r\nprepend e 0 0 1\r\nE\r\n",
        [
            store(b"set a 1 2 1", b"A\r\n", flags=1, exptime=2),
            store(b"add b 0 0 1", b"B\r\n"),
            store(b"replace c 0 0 1", b"C\r\n"),
            store(b"append d 0 0 1", b"D\r\n"),
            store(b"prepend e 0 0 1", b"E\r\n"),
        ],
        MAX_VALUE,
    ),
    "bare_newline_endings": (
        b"get a\nset k 0 0 3\nabc\r\nget k\n",
        [cmd(b"get", b"a"), store(b"set k 0 0 3", b"abc\r\n"), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "double_and_leading_spaces": (
        b"set  k  1  2  3 \r\nabc\r\n  get   a  b \r\n",
        [store(b"set k 1 2 3", b"abc\r\n", flags=1, exptime=2), cmd(b"get", b"a", b"b")],
        MAX_VALUE,
    ),
    "tabs_are_part_of_tokens": (b"get a\tb\r\n", [cmd(b"get", b"a\tb")], MAX_VALUE),
    "noreply": (
        b"set k 0 0 1 noreply\r\nx\r\nadd k 0 0 1 norepl\r\ny\r\ndelete k noreply\r\n",
        [
            store(b"set k 0 0 1 noreply", b"x\r\n", noreply=True),
            store(b"add k 0 0 1 norepl", b"y\r\n"),
            cmd(b"delete", b"k", b"noreply"),
        ],
        MAX_VALUE,
    ),
    "bad_data_chunk_then_resync": (
        # memcached reads exactly <bytes>+2, says bad data chunk, and parses on from there:
        # the leftover "\r\n" is a line of its own ("\r", as memcached strips \r only from
        # lines longer than one byte).
        b"set k 0 0 3\r\nabcde\r\nget k\r\n",
        [bad_chunk(b"set k 0 0 3"), cmd(b"\r"), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "bad_data_chunk_noreply_is_silent": (
        b"set k 0 0 1 noreply\r\nxyz\r\nget k\r\n",
        [bad_chunk(b"set k 0 0 1 noreply", noreply=True), cmd(b"\r"), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "negative_length": (
        b"set k 0 0 -1\r\nget k\r\n",
        [reply(C.BAD_FORMAT), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "junk_numbers": (
        b"set k 0 0 abc\r\nset k 0 0 1_0\r\nset k x 0 1\r\nset k -1 0 1\r\n"
        b"set k 0 1x 1\r\nset k 0 0 -5 noreply\r\nget k\r\n",
        [reply(C.BAD_FORMAT)] * 5 + [reply(b""), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "length_2_to_the_32_truncates_to_0": (
        b"set k 0 0 4294967296\r\n\r\nset j 0 0 4294967297\r\nx\r\n",
        [store(b"set k 0 0 4294967296", b"\r\n"), store(b"set j 0 0 4294967297", b"x\r\n")],
        MAX_VALUE,
    ),
    "flags_2_to_the_32_truncates_to_0": (
        b"set k 4294967296 0 1\r\nx\r\nset k 4294967295 -1 1\r\ny\r\n",
        [
            store(b"set k 4294967296 0 1", b"x\r\n"),
            store(b"set k 4294967295 -1 1", b"y\r\n", flags=4294967295, exptime=-1),
        ],
        MAX_VALUE,
    ),
    "plus_sign_accepted": (
        b"set k +1 +2 +3\r\nabc\r\n",
        [store(b"set k +1 +2 +3", b"abc\r\n", flags=1, exptime=2)],
        MAX_VALUE,
    ),
    "cas_tokens": (
        b"cas k 3 0 2 12345\r\nhi\r\ncas k 0 0 1 18446744073709551615 noreply\r\nx\r\n"
        b"cas k 0 0 1 -1\r\nx\r\ncas k 0 0 1 18446744073709551616\r\ny\r\ncas k 0 0 1\r\nz\r\n",
        [
            store(b"cas k 3 0 2 12345", b"hi\r\n", flags=3, cas=12345),
            store(
                b"cas k 0 0 1 18446744073709551615 noreply",
                b"x\r\n",
                cas=18446744073709551615,
                noreply=True,
            ),
            reply(C.BAD_FORMAT),
            cmd(b"x"),
            reply(C.BAD_FORMAT),
            cmd(b"y"),
            cmd(b"cas", b"k", b"0", b"0", b"1"),  # wrong arity: a plain command (ERROR)
            cmd(b"z"),
        ],
        MAX_VALUE,
    ),
    "wrong_arity_storage_is_a_command": (
        b"set k 0 0 1 extra tokens\r\nx\r\nset k 0\r\n",
        [
            cmd(b"set", b"k", b"0", b"0", b"1", b"extra", b"tokens"),
            cmd(b"x"),
            cmd(b"set", b"k", b"0"),
        ],
        MAX_VALUE,
    ),
    "key_too_long": (
        b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\nset " + b"k" * 250 + b" 0 0 1\r\ny\r\n",
        [reply(C.BAD_FORMAT), cmd(b"x"), store(b"set " + b"k" * 250 + b" 0 0 1", b"y\r\n")],
        MAX_VALUE,
    ),
    "value_over_max_is_swallowed": (
        b"set k 0 0 2000\r\n" + BIG + b"\r\nset q 0 0 2000 noreply\r\n" + BIG + b"\r\nget k\r\n",
        [
            too_large(b"set k 0 0 2000"),
            too_large(b"set q 0 0 2000 noreply", noreply=True),
            cmd(b"get", b"k"),
        ],
        1024,
    ),
    "nul_byte_ends_the_line": (
        b"get a\0junk more\r\nget b\r\n",
        [cmd(b"get", b"a"), cmd(b"get", b"b")],
        MAX_VALUE,
    ),
    "high_and_control_bytes_in_keys": (
        b"get a\r\n\x80\xff\x1c\r\nset \x80\x1f\xfe 0 0 1\r\nx\r\n",
        [cmd(b"get", b"a"), cmd(b"\x80\xff\x1c"), store(b"set \x80\x1f\xfe 0 0 1", b"x\r\n")],
        MAX_VALUE,
    ),
    "data_block_longer_than_the_line_limit": (  # data is never subject to the 2048 limit
        b"set k 0 0 3000\r\n" + b"d" * 3000 + b"\r\nget k\r\n",
        [store(b"set k 0 0 3000", b"d" * 3000 + b"\r\n"), cmd(b"get", b"k")],
        MAX_VALUE,
    ),
    "empty_lines": (b"\n\r\nget a\r\n", [cmd(), cmd(b"\r"), cmd(b"get", b"a")], MAX_VALUE),
    "more_than_24_tokens": (
        b"foo " + b" ".join(b"t%d" % i for i in range(30)) + b"\r\n",
        [
            cmd(
                b"foo",
                *(b"t%d" % i for i in range(22)),
                b" ".join(b"t%d" % i for i in range(22, 30)),
            )
        ],
        MAX_VALUE,
    ),
    "long_non_get_line_closes": (
        b"get a\r\nset " + b"k" * 3000,
        [cmd(b"get", b"a"), CLOSED],
        MAX_VALUE,
    ),
    "long_junk_line_closes": (b"x" * 3000, [CLOSED], MAX_VALUE),
    "long_get_line_accepted": (
        LONG_GET + b"get z\r\n",
        [cmd(b"get", *LONG_GET_KEYS), cmd(b"get", b"z")],
        MAX_VALUE,
    ),
    "long_gets_line_after_spaces_accepted": (
        b" " * 100 + b"gets " + b" ".join(LONG_GET_KEYS[:500]) + b"\r\n",
        [cmd(b"gets", *LONG_GET_KEYS[:500])],
        MAX_VALUE,
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_whole_lines_bytes(name: str) -> None:
    data, expected, max_value = CORPUS[name]
    got_whole = run(whole(data), max_value)
    assert got_whole == expected
    assert run(by_line(data), max_value) == expected
    assert run(by_byte(data), max_value) == expected
    for seed in range(3):
        assert run(by_random(data, seed), max_value) == expected


def test_whole_corpus_as_one_stream() -> None:
    """All short cases back to back: one connection's stream, cut three ways."""
    names = [n for n in sorted(CORPUS) if CORPUS[n][2] == MAX_VALUE and CLOSED not in CORPUS[n][1]]
    data = b"".join(CORPUS[n][0] for n in names)
    expected = [r for n in names for r in CORPUS[n][1]]
    assert run(whole(data)) == expected
    assert run(by_line(data)) == expected
    assert run(by_byte(data)) == expected


def test_line_limit_boundary() -> None:
    """Up to 2048 bytes without a newline memcached keeps waiting; one more closes."""
    f = Framer(MAX_VALUE)
    f.feed(b"x" * 2048)
    assert f.next_request() is None
    f.feed(b"x")
    assert f.next_request() == CLOSED
    f.feed(b"\r\nget a\r\n")
    assert f.next_request() is None


@pytest.mark.parametrize(
    "head",
    [
        b" " * 101 + b"get ",  # more than 100 leading spaces
        b"gat 0 ",  # memcached lets only get/gets lines run past 2048 bytes
        b"bget ",
        b"get\t",
        b"set ",
    ],
)
def test_long_line_without_newline_closes(head: bytes) -> None:
    data = head + b" ".join(LONG_GET_KEYS[:500])
    assert run(whole(data)) == [CLOSED]
    assert run(by_random(data, 1)) == [CLOSED]


@pytest.mark.parametrize("head", [b"get ", b"gets ", b" " * 100 + b"get ", b"get  "])
def test_long_get_line_without_newline_waits(head: bytes) -> None:
    f = Framer(MAX_VALUE)
    f.feed(head + b" ".join(LONG_GET_KEYS[:500]))
    assert f.next_request() is None
    assert not f.closed


def test_long_line_with_newline_in_one_read_is_parsed() -> None:
    """memcached only checks the length when no newline has arrived: a whole line is fine."""
    line = b"get " + b"k" * 250 + b" " + b"x" * 3000
    assert run([line + b"\r\n"]) == [cmd(b"get", b"k" * 250, b"x" * 3000)]


def test_oversized_value_is_swallowed_without_buffering() -> None:
    """A 10 MB block for -I 1m is refused at once and discarded as it streams in."""
    f = Framer(MAX_VALUE)
    size = 10 * 1024 * 1024
    f.feed(b"set big 0 0 %d\r\n" % size)
    assert normalize(f.next_request()) == too_large(b"set big 0 0 %d" % size)  # type: ignore[arg-type]
    block = b"q" * 65536
    sent = 0
    peak = 0
    while sent < size:
        n = min(len(block), size - sent)
        f.feed(block[:n])
        sent += n
        peak = max(peak, f.buffered())
        assert f.next_request() is None
    f.feed(b"\r\nget a\r\n")
    assert normalize(f.next_request()) == cmd(b"get", b"a")  # type: ignore[arg-type]
    assert f.next_request() is None
    assert peak == 0
    assert f.buffered() == 0


def test_oversized_value_arriving_with_header_is_skipped() -> None:
    f = Framer(1024)
    f.feed(b"set big 0 0 5000\r\n" + b"q" * 3000)
    assert normalize(f.next_request()) == too_large(b"set big 0 0 5000")  # type: ignore[arg-type]
    assert f.buffered() == 0
    f.feed(b"q" * 2000 + b"\r\nversion\r\n")
    assert normalize(f.next_request()) == cmd(b"version")  # type: ignore[arg-type]


def test_large_accepted_value_is_held_then_delivered_exactly() -> None:
    """A 900 KB value arriving in 16 KB reads: held (buffered() counts it), delivered once."""
    value = bytes(range(256)) * (900 * 1024 // 256)
    data = b"set v 0 0 %d\r\n" % len(value) + value + b"\r\nget v\r\n"
    f = Framer(MAX_VALUE)
    got = []
    for i in range(0, len(data), 16384):
        f.feed(data[i : i + 16384])
        assert f.buffered() <= i + 16384
        while (r := f.next_request()) is not None:
            got.append(normalize(r))
    assert got == [store(b"set v 0 0 %d" % len(value), value + b"\r\n"), cmd(b"get", b"v")]
    assert f.buffered() == 0


def test_long_get_line_is_held_until_its_newline() -> None:
    f = Framer(MAX_VALUE)
    body = LONG_GET[:-2]
    for i in range(0, len(body), 1000):
        f.feed(body[i : i + 1000])
        assert f.next_request() is None
    assert f.buffered() == len(body)
    f.feed(b"\r\n")
    assert normalize(f.next_request()) == cmd(b"get", *LONG_GET_KEYS)  # type: ignore[arg-type]
    assert f.buffered() == 0


def test_whitespace_after_numbers_is_accepted_like_memcached() -> None:
    for line in (b"set a 0 0 5\t\r\n", b"set a 0 0 5\r\r\n", b"set a 0\t 0 5\r\n"):
        got = run([line + b"hello\r\n"])
        assert [r[0] for r in got] == [STORE], (line, got)
        assert got[0][6] == b"hello\r\n"


def test_binary_magic_as_first_byte_closes() -> None:
    """memcached picks the binary protocol on a leading 0x80; we serve text only and close."""
    got = run([b"\x80\x00\x00\x00"])
    assert len(got) == 1 and got[0][0] == CLOSE

"""Fuzzing the protocol layer: Framer + Session over a real Store on a ManualClock, no sockets.

Streams are built from protocol-shaped pieces (classic and meta commands, keys good and bad,
edge numbers, meta flags, separators) mixed with raw random bytes, and fed in random chunkings.
Properties:

1. Nothing but replies comes out: processing never raises, and the output always parses as a
   sequence of complete replies (a ``VALUE`` header is followed by exactly its data block).
2. Chunking does not matter: the same stream fed whole or in random pieces gives the same
   bytes (the framer is incremental, so a read boundary can never change a reply).
3. No desynchronisation: after any garbage that did not close the connection, a client that
   ends the line and completes whatever data block the node is still waiting for (or is
   swallowing) gets its next ``version`` answered, and the one after that alone (in step).
4. The same three for the pre-authentication framer of ``-Y``.

Bounded for CI by ``max_examples`` and derandomized, so the suite always runs the same examples
(a few seconds in all); ``FUZZ_EXAMPLES=N`` draws N fresh random examples per property instead,
for a longer exploring run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memcache_server.app import Node
from memcache_server.commands.session import Session
from memcache_server.config import ServerConfig
from memcache_server.protocol.asciiauth import AUTH_CLOSE, AUTH_CREDENTIALS, AuthFramer
from memcache_server.storage.clock import ManualClock

EXPLORE = "FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not EXPLORE,  # the suite replays the same examples; exploring draws new ones
    suppress_health_check=[HealthCheck.too_slow],
)

COMMANDS = [
    b"get", b"gets", b"gat", b"gats", b"bget", b"set", b"add", b"replace", b"append",
    b"prepend", b"cas", b"delete", b"incr", b"decr", b"touch", b"flush_all", b"version",
    b"verbosity", b"cache_memlimit", b"shutdown", b"refresh_certs", b"GET", b"HTTP/1.1",
    b"noreply", b"quit", b"mg", b"ms", b"md", b"ma", b"mn", b"me",
]  # fmt: skip
META_FLAGS = [
    b"v", b"k", b"t", b"f", b"s", b"q", b"O123", b"T30", b"N10", b"MA", b"MP", b"MS", b"MR",
    b"ME", b"MI", b"MD", b"D5", b"J7", b"I", b"b", b"h", b"l", b"x", b"E42", b"S10", b"zz", b"\x01",
]  # fmt: skip
KEYS = [b"k", b"k2", b"key:with:colons", b"k" * 250, b"k" * 251, b"a\x01b", b"\xff\xfe", b"\x80"]
NUMBERS = [
    b"0", b"1", b"2", b"5", b"10", b"100", b"1000", b"1024", b"1025", b"-1", b"-0", b"+1",
    b"abc", b"1a", b"2147483647", b"2147483648", b"4294967295", b"4294967296", b"4294967298",
    b"18446744073709551615", b"18446744073709551616", b"99999999999999999999",
]  # fmt: skip
SEPARATORS = [b" ", b" ", b" ", b"  ", b"\t", b"\r\n", b"\r\n", b"\n", b"\r", b"\0"]

piece = st.one_of(
    st.sampled_from(COMMANDS),
    st.sampled_from(KEYS),
    st.sampled_from(NUMBERS),
    st.sampled_from(SEPARATORS),
    st.binary(max_size=24),
)
junk = st.lists(piece, max_size=12).map(b"".join)


def mostly(
    usual: st.SearchStrategy[bytes], unusual: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """``usual`` nine times in ten: enough valid requests for hits, CAS, incr to happen."""
    return st.integers(0, 9).flatmap(lambda n: unusual if n == 0 else usual)


small = st.integers(min_value=0, max_value=1100).map(lambda n: b"%d" % n)
number = mostly(st.one_of(st.just(b"0"), small), st.sampled_from(NUMBERS))
key = mostly(st.sampled_from(KEYS[:2]), st.sampled_from(KEYS))
sep = mostly(st.just(b" "), st.sampled_from(SEPARATORS))
eol = mostly(st.just(b"\r\n"), st.sampled_from(SEPARATORS))


@st.composite
def storage_command(draw: st.DrawFn) -> bytes:
    """A storage command, mostly well formed, with a data block of about the declared size."""
    cmd = draw(st.sampled_from([b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"ms"]))
    length = mostly(st.integers(0, 20).map(lambda n: b"%d" % n), number)
    if cmd == b"ms":  # ms <key> <datalen> <flag>*
        fields = [cmd, draw(key), draw(length)] + draw(st.lists(st.sampled_from(META_FLAGS)))
        declared = fields[2]
    else:
        fields = [cmd, draw(key), draw(number), draw(number), draw(length)]
        if cmd == b"cas" or draw(st.booleans()) and draw(st.booleans()):
            fields.append(draw(number))
        if draw(st.integers(0, 4)) == 0:
            fields.append(b"noreply")
        declared = fields[4]
    line = b"".join(f + draw(sep) for f in fields[:-1]) + fields[-1] + draw(eol)
    size = (
        int(declared) if declared.isdigit() and int(declared) < 1200 else draw(st.integers(0, 40))
    )
    size = max(0, size + draw(st.integers(0, 9).map(lambda n: [0, -1, 1, 2][n] if n < 4 else 0)))
    block = draw(mostly(st.sampled_from([b"1", b"42", b"v" * size]), st.binary(max_size=size)))
    block = (block * size)[:size] if block else bytes(size)
    return line + block + draw(mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"", b"xx"])))


@st.composite
def other_command(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["get", "gat", "delete", "arith", "touch", "meta", "misc"]))
    if shape == "get":
        words = [draw(st.sampled_from([b"get", b"gets", b"bget"]))]
        words += draw(st.lists(key, min_size=0, max_size=6))
    elif shape == "gat":
        words = [draw(st.sampled_from([b"gat", b"gats"])), draw(number)]
        words += draw(st.lists(key, max_size=4))
    elif shape == "delete":
        words = [b"delete", draw(key)] + draw(st.lists(st.sampled_from([b"0", b"noreply", b"5"])))
    elif shape == "arith":
        words = [draw(st.sampled_from([b"incr", b"decr"])), draw(key), draw(number)]
    elif shape == "touch":
        words = [b"touch", draw(key), draw(number)]
    elif shape == "meta":
        words = [draw(st.sampled_from([b"mg", b"md", b"ma", b"mn", b"me"])), draw(key)]
        words += draw(st.lists(st.sampled_from(META_FLAGS), max_size=6))
    else:
        words = [draw(st.sampled_from(COMMANDS))] + draw(st.lists(number, max_size=2))
    if draw(st.integers(0, 5)) == 0:
        words.append(b"noreply")
    return b"".join(w + draw(sep) for w in words[:-1]) + words[-1] + draw(eol)


command = st.one_of(storage_command(), storage_command(), other_command(), other_command(), junk)
stream = st.lists(command, max_size=12).map(b"".join)
cuts = st.lists(st.integers(min_value=1, max_value=64), max_size=16)

REPLY_LINE = re.compile(
    rb"(STORED|NOT_STORED|EXISTS|NOT_FOUND|DELETED|TOUCHED|OK|END|ERROR|RESET|\d+"
    rb"|VERSION .*|CLIENT_ERROR .*|SERVER_ERROR .*|ERROR.+|STAT .*|MEMLIMIT_\w+ .*"
    rb"|Error TLS not enabled|(HD|EN|NF|NS|EX)( .*)?|MN|ME .*)",
    re.DOTALL,
)


@contextmanager
def fresh_session() -> Iterator[Session]:
    """A session on a node of its own (store, meta store, settings), so two sessions fed the
    same bytes stay comparable and no example sees another's items. A node costs ~0.4 ms.
    -I 1k keeps every data block small; larger claims are swallowed, which is tested too."""
    node = Node(ServerConfig(threads=1, item_size_max=1024), clock=ManualClock())
    try:
        yield node.new_session(node.workers[0].stats)
    finally:
        for w in node.workers:
            w.poller.close()
            os.close(w._wake_r)
            os.close(w._wake_w)


def run(session: Session) -> bytes:
    """Process everything that is complete, as the worker would; returns the reply bytes."""
    out = b""
    for _ in range(100_000):
        more = session.process(20)
        out += bytes(session.out)
        session.out.clear()
        if session.want_close or session.close_after:
            return out
        if not more and session.resume is None:
            return out
    raise AssertionError("process() never settled")


def feed_all(session: Session, data: bytes, chunks: list[int]) -> bytes:
    # commands that attach the connection to node-wide streams (other sessions' activity, a
    # crawler thread) are left out: their output is not a function of this stream alone
    data = data.replace(b"watch", b"w_tch").replace(b"lru_crawler", b"lru_c_awler")
    out = b""
    pos = 0
    for size in chunks:
        if session.want_close or session.close_after:
            return out
        session.feed(data[pos : pos + size])
        pos += size
        out += run(session)
    if pos < len(data) and not (session.want_close or session.close_after):
        session.feed(data[pos:])
        out += run(session)
    return out


def check_replies(out: bytes) -> None:
    """The output is whole replies: known lines, and VALUE headers with their exact blocks."""
    pos = 0
    while pos < len(out):
        eol = out.find(b"\r\n", pos)
        assert eol >= 0, f"unterminated reply: {out[pos:]!r}"
        line = out[pos:eol]
        pos = eol + 2
        if line.startswith(b"VALUE "):
            parts = line.split(b" ")
            nbytes = int(parts[-1] if len(parts) == 4 else parts[-2])
            assert out[pos + nbytes : pos + nbytes + 2] == b"\r\n", f"torn value after {line!r}"
            pos += nbytes + 2
            continue
        if line.startswith(b"VA "):  # meta get: VA <size> <flags>*, then the block
            nbytes = int(line.split(b" ")[1])
            assert out[pos + nbytes : pos + nbytes + 2] == b"\r\n", f"torn value after {line!r}"
            pos += nbytes + 2
            continue
        assert REPLY_LINE.fullmatch(line), f"not a reply: {line!r}"


def resync(session: Session) -> bytes:
    """What a client does after garbage: end the line, complete any data block the node is
    waiting for or swallowing (with filler), then ask for the version."""
    out = b""
    session.feed(b"\r\n")
    out += run(session)
    framer = session.framer
    for _ in range(10_000):
        if session.want_close or session.close_after:
            return out
        if framer.swallow:
            session.feed(bytes(min(framer.swallow, 1 << 20)))
        elif framer.need:
            session.feed(b"\r\n" if framer.need_line else bytes(framer.need - framer.pending_len))
        else:
            break
        out += run(session)
    session.feed(b"\r\nversion\r\n")
    return out + run(session)


def strip_stats(out: bytes) -> bytes:
    return re.sub(rb"STAT [^\r\n]*\r\n", b"", out)


def batch_dependent(data: bytes) -> bool:
    """A get naming a key over 250 bytes: memcached then drops every reply still queued on the
    connection, so what is lost depends on what arrived in the same read. We do the same.
    (Over-approximated: where a line starts depends on the data blocks before it.)"""
    for line in data.split(b"\n"):
        tokens = line.split(b" ")
        if any(g in line for g in (b"get", b"gat")) and any(len(t) > 250 for t in tokens):
            return True
    return False


@FUZZ
@given(data=stream, chunks=cuts)
def test_only_whole_replies_and_chunking_does_not_matter(data: bytes, chunks: list[int]) -> None:
    with fresh_session() as whole, fresh_session() as pieces:
        whole_out = feed_all(whole, data, [])
        piece_out = feed_all(pieces, data, chunks)
        whole_closed = whole.want_close or whole.close_after
        pieces_closed = pieces.want_close or pieces.close_after
    check_replies(whole_out)
    check_replies(piece_out)
    if batch_dependent(data):
        return
    assert strip_stats(whole_out) == strip_stats(piece_out)
    assert whole_closed == pieces_closed


@FUZZ
@given(data=stream, chunks=cuts)
def test_garbage_never_desynchronises(data: bytes, chunks: list[int]) -> None:
    with fresh_session() as session:
        out = feed_all(session, data, chunks)
        if session.want_close or session.close_after:
            return  # memcached closes too: line too long, HTTP, binary protocol, quit
        out += resync(session)
        check_replies(out)
        if session.want_close or session.close_after:
            return  # the filler itself made an over-long line
        assert out.endswith(b"VERSION 1.6.18\r\n"), out[-200:]
        session.feed(b"version\r\n")
        assert run(session) == b"VERSION 1.6.18\r\n"


AUTH_OK = b"set auth 0 0 12\r\nalice secret\r\n"


@FUZZ
@given(data=stream, chunks=cuts)
def test_preauth_framer_resyncs(data: bytes, chunks: list[int]) -> None:
    framer = AuthFramer()
    pos = 0
    for size in [*chunks, len(data)]:
        framer.feed(data[pos : pos + size])
        pos += size
        while (event := framer.next_event()) is not None:
            if event[0] == AUTH_CLOSE:
                return
            assert len(event) == 3 and all(isinstance(x, bytes) for x in event[1:])
    # end the line, fill any pending credential block, then authenticate properly
    framer.feed(b"\r\n")
    while (event := framer.next_event()) is not None:
        if event[0] == AUTH_CLOSE:
            return
    if framer.need > 0:
        framer.feed(bytes(framer.need))
        while (event := framer.next_event()) is not None:
            if event[0] == AUTH_CLOSE:
                return
    framer.feed(b"\r\n" + AUTH_OK)
    events = []
    while (event := framer.next_event()) is not None:
        events.append(event)
        if event[0] == AUTH_CLOSE:
            return
    assert events[-1] == (AUTH_CREDENTIALS, b"alice", b"secret"), events

"""Hostile input: malformed requests get memcached's bytes, and nobody else notices.

One pair (real memcached and our node) takes ~150 hostile conversations at once, each on its own
connection with its own keys: lengths of 2^31/2^32/2^64, data blocks longer or shorter than
declared, junk in every numeric field, control bytes and over-long keys, a 10,000-key get, HTTP
requests, incr past 2^64-1, huge lines. Meanwhile a bystander client keeps storing and reading
checked values on each server, and items stored before the storm are read back byte for byte
after it. Where our node deliberately differs (the binary protocol, a get line past 8 MB) the
test says so and checks our own promise instead.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from procs import ServerProc, start_memcached, start_node
from wire import in_parallel, read_settled, talk

pytestmark = pytest.mark.usefixtures("live_reference")

JUNK = [
    b"abc",
    b"-1",
    b"-0",
    b"+1",
    b"1.5",
    b"0x10",
    b"1a",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"\x01",
    b"\xff",
]
BAD_KEYS = [
    b"k" * 251,
    b"k\x01y",
    b"k\x7fy",
    b"k\ty",
    b"k\x1fy",
    b"k\x00y",
    b"\xff\xfe",
]


def _junk_cases() -> dict[str, list[bytes]]:
    """Junk in one field at a time of every command that takes numbers; key ``{k}``."""
    templates = {
        "set_flags": b"set {k} %s 0 2\r\nxy\r\n",
        "set_exptime": b"set {k} 0 %s 2\r\nxy\r\n",
        "set_bytes": b"set {k} 0 0 %s\r\nxy\r\n",
        "cas_unique": b"cas {k} 0 0 2 %s\r\nxy\r\n",
        "cas_bytes": b"cas {k} 0 0 %s 1\r\nxy\r\n",
        "incr_delta": b"incr {k} %s\r\n",
        "decr_delta": b"decr {k} %s\r\n",
        "touch_exptime": b"touch {k} %s\r\n",
        "gat_exptime": b"gat %s {k}\r\n",
        "delete_hold": b"delete {k} %s\r\n",
        "append_bytes": b"append {k} 0 0 %s\r\nxy\r\n",
    }
    cases: dict[str, list[bytes]] = {}
    for name, template in templates.items():
        for i, junk in enumerate(JUNK):
            steps = [b"set {k} 0 0 1\r\n5\r\n", template % junk, b"get {k}\r\n"]
            if junk == b"+1" and name in ("set_exptime", "touch_exptime", "gat_exptime"):
                # a 1-second TTL races the servers' once-a-second clock: either may expire the
                # item before the get (seen on a loaded machine), so only the reply is compared
                steps.pop()
            cases[f"{name}_{i}"] = steps
    return cases


def _key_cases() -> dict[str, list[bytes]]:
    cases: dict[str, list[bytes]] = {}
    for i, key in enumerate(BAD_KEYS):
        cases[f"bad_key_{i}"] = [
            b"set %s 0 0 1\r\nx\r\n" % key,
            b"get %s\r\n" % key,
            b"get {k} %s {k}\r\n" % key,
            b"incr %s 1\r\ndelete %s\r\ntouch %s 10\r\n" % (key, key, key),
        ]
    return cases


CASES: dict[str, list[bytes]] = {
    **_junk_cases(),
    **_key_cases(),
    "length_2_pow_31": [b"set {k} 0 0 2147483648\r\n", b"get {k}\r\n"],
    "length_2_pow_32": [b"set {k} 0 0 4294967296\r\n", b"\r\nget {k}\r\n"],
    "length_2_pow_32_plus_2": [b"set {k} 0 0 4294967298\r\nab\r\nget {k}\r\n"],
    "length_2_pow_64": [b"set {k} 0 0 18446744073709551616\r\n", b"get {k}\r\n"],
    "length_negative": [b"set {k} 0 0 -5\r\nabc\r\n", b"get {k}\r\n"],
    "block_longer": [b"set {k} 0 0 3\r\nabcdef\r\n", b"get {k}\r\n"],
    "block_much_longer": [b"set {k} 0 0 3\r\n" + b"z" * 5000 + b"\r\nget {k}\r\n"],
    "block_shorter": [b"set {k} 0 0 10\r\nabc\r\n", b"version\r\nxx\r\nget {k}\r\n"],
    "block_no_crlf": [b"set {k} 0 0 3\r\nabcXY", b"get {k}\r\n"],
    "block_lf_only": [b"set {k} 0 0 3\r\nabc\nget {k}\r\n"],
    "over_item_size": [b"set {k} 0 0 2000000\r\n" + b"v" * 2000002, b"get {k}\r\n"],
    "incr_wraps": [
        b"set {k} 0 0 20\r\n18446744073709551615\r\nincr {k} 1\r\nget {k}\r\n",
        b"incr {k} 18446744073709551615\r\nincr {k} 2\r\ndecr {k} 18446744073709551615\r\n",
    ],
    "incr_non_numeric": [
        b"set {k} 0 0 21\r\n184467440737095516150\r\nincr {k} 1\r\n",
        b"set {k} 0 0 3\r\n-12\r\nincr {k} 1\r\nset {k} 0 0 2\r\n 1\r\nincr {k} 1\r\n",
    ],
    "unknown_commands": [b"foo\r\nGETS {k}\r\nsett {k} 0 0 1\r\n\r\n \r\n\x00\r\nversion\r\n"],
    "http_get": [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"version\r\n"],
    "http_post": [b"POST /cache HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", b"version\r\n"],
    "http_lowercase_is_a_get": [b"get / HTTP/1.0\r\n", b"version\r\n"],
    "line_2048_then_newline": [b"x" * 2047 + b"\r\n", b"version\r\n"],
    "line_10mb_no_newline": [b"x" * (10 * 1024 * 1024), b"version\r\n"],
    "too_many_tokens": [b"set {k} 0 0 1 " + b"x " * 40 + b"\r\nv\r\nget {k}\r\n"],
    "tabs_are_not_separators": [b"get\t{k}\r\nset {k}\t0 0 1\r\nv\r\n"],
    "cr_alone": [b"get {k}\rget {k}\r\n"],
    "noreply_everywhere": [
        b"set {k} 0 0 1 noreply\r\nv\r\nincr {k} 1 noreply\r\nappend {k} 0 0 1 noreply\r\nw\r\n"
        b"touch {k} 10 noreply\r\nset {k} 0 0 x noreply\r\nget {k}\r\n"
    ],
    "meta_garbage_flags": [
        b"mg {k} \x01\x02 zz\r\n",
        b"ms {k} abc\r\n",
        b"md\r\nma {k} N-1\r\nmn\r\nme {k}\r\n",
        b"mg " + b"x" * 300 + b" v\r\n",
        b"mg !!!! b v\r\nmg {k} " + b"v " * 30 + b"\r\n",
        b"ma {k} MX\r\nma {k} D18446744073709551616\r\nms {k} 5 MZ\r\nhello\r\n",
        b"mg {k} O" + b"x" * 40 + b" v\r\nmg\r\nms\r\nms {k}\r\nms {k} -1\r\n",
    ],
    "meta_lengths": [
        b"ms {k} 4294967296\r\n\r\nmg {k} v\r\n",
        b"ms {k} 2147483648\r\n",
        b"ms {k} 1\t\x01\r\nab\r\nset {k} 0 0 2\t\r\nabc\r\nmg {k} v\r\n",
    ],
    "many_keys_get": [
        b"set {k}-3 0 0 1\r\na\r\nset {k}-7777 0 0 1\r\nb\r\n",
        b"get " + b" ".join(b"{k}-%d" % i for i in range(10_000)) + b"\r\n",
        b"get " + b" ".join(b"{k}-%d" % i for i in range(0, 10_000, 7)) + b"\r\n",
    ],
}


def _render(name: str, chunks: list[bytes]) -> list[bytes]:
    key = b"h:" + name.encode()
    return [c.replace(b"{k}", key) for c in chunks]


def _value(i: int) -> bytes:
    size = [1, 100, 4000, 600_000][i % 4]  # the last one is chunked across slab chunks
    seed = hashlib.sha256(b"%d" % i).digest()
    return (seed * (size // 32 + 1))[:size]


INTACT = {b"intact:%d" % i: _value(i) for i in range(40)}


def _store_intact(srv: ServerProc) -> None:
    sock = srv.connect()
    try:
        for key, value in INTACT.items():
            sock.sendall(b"set %s 7 0 %d\r\n%s\r\n" % (key, len(value), value))
            assert read_settled(sock)[0] == b"STORED\r\n"
    finally:
        sock.close()


def _read_intact(srv: ServerProc) -> dict[bytes, bytes]:
    sock = srv.connect()
    found: dict[bytes, bytes] = {}
    try:
        for key in INTACT:
            sock.sendall(b"get %s\r\n" % key)
            buf = b""
            deadline = time.monotonic() + 10
            while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
                sock.settimeout(5)
                buf += sock.recv(1 << 20)
            header, _, rest = buf.partition(b"\r\n")
            if header.startswith(b"VALUE "):
                found[key] = rest[: int(header.split()[3])]
    finally:
        sock.close()
    return found


@dataclass
class Bystander:
    """A well-behaved client storing and reading back checked values the whole time."""

    srv: ServerProc
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def run(self) -> None:
        sock = self.srv.connect()
        i = 0
        try:
            while not self.stop.is_set() and i < 100_000:
                value = b"bystander-%d" % i
                req = b"set bystander 0 0 %d\r\n%s\r\nget bystander\r\n" % (len(value), value)
                start = time.monotonic()
                sock.sendall(req)
                want = b"STORED\r\nVALUE bystander 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
                got = b""
                while len(got) < len(want):
                    sock.settimeout(10)
                    data = sock.recv(4096)
                    if not data:
                        break
                    got += data
                self.latencies.append(time.monotonic() - start)
                if got != want:
                    self.errors.append(f"round {i}: {got!r}")
                    return
                i += 1
                time.sleep(0.002)
        except OSError as exc:
            self.errors.append(f"round {i}: {exc!r}")
        finally:
            sock.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ServerProc, ServerProc]]:
    ref = start_memcached()
    try:
        ours = start_node()
    except BaseException:
        ref.stop(signal.SIGKILL)
        raise
    yield ref, ours
    ref.stop(signal.SIGKILL)
    ours.stop()


def test_hostile_conversations_match_memcached_and_harm_nobody(
    pair: tuple[ServerProc, ServerProc],
) -> None:
    ref, ours = pair
    in_parallel(_store_intact, [ref, ours])
    bystanders = [Bystander(ref), Bystander(ours)]
    threads = [threading.Thread(target=b.run) for b in bystanders]
    for t in threads:
        t.start()
    try:
        jobs = [(srv, name) for name in CASES for srv in (ref, ours)]
        results = in_parallel(lambda j: talk(j[0], _render(j[1], CASES[j[1]])), jobs, workers=64)
    finally:
        for b in bystanders:
            b.stop.set()
        for t in threads:
            t.join(30)
    got = dict(zip([(id(s), n) for s, n in jobs], results, strict=True))
    mismatches = [
        f"{n}:\n  memcached {got[(id(ref), n)]!r:.600}\n  ours      {got[(id(ours), n)]!r:.600}"
        for n in CASES
        if got[(id(ref), n)] != got[(id(ours), n)]
    ]
    assert not mismatches, "\n".join(mismatches)
    for b in bystanders:
        assert not b.errors, b.errors
        assert len(b.latencies) > 10
    assert in_parallel(_read_intact, [ref, ours]) == [INTACT, INTACT]
    assert ref.proc.poll() is None and ours.proc.poll() is None


def test_binary_protocol_packet_closes_and_harms_nobody(
    pair: tuple[ServerProc, ServerProc],
) -> None:
    """memcached answers the binary protocol; we close the connection (documented)."""
    _, ours = pair
    get_k = bytes([0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]) + bytes(8) + b"k"
    assert talk(ours, [get_k, b"version\r\n"]) == [b"<EOF>"]
    # after the first byte the protocol is settled: 0x80 later is just an unknown command
    assert talk(ours, [b"version\r\n", b"\x80\r\nversion\r\n"]) == [
        b"VERSION 1.6.18\r\n",
        b"ERROR\r\nVERSION 1.6.18\r\n",
    ]


def test_endless_get_line_is_cut_at_8mb(pair: tuple[ServerProc, ServerProc]) -> None:
    """A get line may be long (memcached never limits it); ours closes past 8 MB of line."""
    _, ours = pair
    line = b"get " + b"abcdefgh " * (1024 * 1024)  # 9 MB, no newline
    assert talk(ours, [line]) == [b"<EOF>"]
    assert talk(ours, [b"version\r\n"]) == [b"VERSION 1.6.18\r\n"]


def test_huge_value_is_swallowed_as_it_streams(pair: tuple[ServerProc, ServerProc]) -> None:
    """A set declaring 64 MB (over -I) is refused and its bytes discarded without being held.

    Same bytes as memcached, but memcached sends the error once the block is swallowed; we send
    it at once (a client reading only after its write sees no difference).
    """
    size = 64 * 1024 * 1024
    chunk = os.urandom(1 << 20)

    def converse_big(srv: ServerProc) -> bytes:
        sock = srv.connect()
        try:
            sock.sendall(b"set big 0 0 %d\r\n" % size)
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\nget big\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                sock.settimeout(10)
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
            return reply
        finally:
            sock.close()

    got = in_parallel(converse_big, list(pair))
    assert got[0] == got[1] == b"SERVER_ERROR object too large for cache\r\nEND\r\n"

"""Differential append/prepend on chunked items (larger than slab_chunk_max), as memcached's
t/chunked-items.t drives them: every reply and the slab accounting must match memcached's.

memcached builds the joined item by copying the two parts into chunks sized to what is left of
each part, and ends each part with an empty chunk (``SlabTable.joined_chunks``); it also holds
the incoming value in an item of its own while it joins. Both show in `stats slabs`
(used/free chunks and pages per class, total_malloced) and `stats items`, which are compared
after each phase along with the values read back. Live only: ``need_memcached`` says why it
skips.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest
from differential_corpus import setcmd, start_reference
from procs import ServerProc, start_node
from reference import need_memcached
from test_ops import stats

CONFIGS = {
    "defaults": ("-m", "64"),
    "chunk_max_16k": ("-m", "48", "-o", "slab_chunk_max=16384"),  # as t/chunked-items.t
}
ITEM_FIELDS = (":number", ":mem_requested", ":evicted", ":outofmemory")
STATS_FIELDS = ("curr_items", "bytes", "total_items", "cmd_set", "get_hits", "evictions")
PATTERN = b":".join(b"%d" % i for i in range(1, 8001))  # non-repeating, ~39 KB


def _ask(sock: socket.socket, data: bytes, end: bytes = b"\r\n") -> bytes:
    sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + 30
    while not buf.endswith(end):
        assert time.monotonic() < deadline, buf[-200:]
        chunk = sock.recv(1 << 20)
        assert chunk, buf[-200:]
        buf += chunk
    return buf


def script(sock: socket.socket) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []

    def snap(tag: str) -> None:
        got = dict(stats(sock, b"slabs"))
        got.update({k: v for k, v in stats(sock, b"items").items() if k.endswith(ITEM_FIELDS)})
        general = stats(sock)
        got.update({k: general[k] for k in STATS_FIELDS})
        seen.append((tag, got))

    def store(tag: str, cmd: bytes, key: bytes, value: bytes) -> None:
        seen.append((tag, _ask(sock, setcmd(key, value, cmd=cmd))))

    def get(tag: str, *keys: bytes) -> None:
        seen.append((tag, _ask(sock, b"get " + b" ".join(keys) + b"\r\n", b"END\r\n")))

    store("set pattern", b"set", b"pattern", PATTERN)
    big = PATTERN * 14  # ~545 KB: chunked under either chunk max
    store("set big", b"set", b"big", big)
    store("set seed", b"set", b"seed", b"seedstring")
    for i in range(1, 40):
        part = b"%dxxxxxxxxxx" % i
        store(f"append {i}", b"append", b"seed", part)  # small, then chunked, growing
        store(f"prepend {i}", b"prepend", b"big", part)  # a small part before a chunked item
        if i % 13 == 0:
            get(f"get after {i}", b"seed", b"big")
    snap("small parts")
    store("append a large part", b"append", b"big", big[:400_000])  # chunked itself at 16 KB
    store("prepend a large part", b"prepend", b"big", PATTERN)
    store("append chunked to small", b"append", b"pattern", big[:200_000])
    store("prepend to a missing key", b"prepend", b"missing", big)
    get("joined values", b"seed", b"big", b"pattern", b"missing")
    snap("chunked parts")
    store("append past -I", b"append", b"big", big)  # the joined item would pass 1 MB
    get("unchanged after NOT_STORED", b"big")
    snap("past the limit")
    for i in range(12):
        value = bytes([97 + i]) * (100_000 + i * 50_000)
        store(f"set wide {i}", b"set", b"w%d" % i, value)
        store(f"append wide {i}", b"append", b"w%d" % i, value[: len(value) // 2])
        store(f"prepend wide {i}", b"prepend", b"w%d" % i, b"p" * (i + 1))
    get("wide values", *(b"w%d" % i for i in range(12)))
    snap("wide")
    for i in range(0, 12, 2):
        seen.append((f"delete wide {i}", _ask(sock, b"delete w%d\r\n" % i)))
    snap("after deletes")
    return seen


def _replay(start: Callable[..., ServerProc], args: tuple[str, ...]) -> list[
        tuple[str, object]]:
    srv = start(*args)
    try:
        with srv.connect(timeout=30) as sock:
            return script(sock)
    finally:
        srv.stop(signal.SIGKILL if start is start_reference else signal.SIGTERM)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_chunked_append_and_prepend_match_memcached(config: str) -> None:
    need_memcached()
    ref = _replay(start_reference, CONFIGS[config])
    ours = _replay(start_node, CONFIGS[config])
    problems = []
    for (tag, want), (_, got) in zip(ref, ours, strict=True):
        if want == got:
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            keys = sorted(set(want) | set(got))
            problems.append(f"{tag}: " + ", ".join(
                f"{k} memcached {want.get(k)} ours {got.get(k)}"
                for k in keys if want.get(k) != got.get(k)))
        else:
            problems.append(f"{tag}: memcached {want!r:.200} ours {got!r:.200}")
    assert not problems, "\n".join(problems)
    # the workload reached what it is for: chunked results and a refused join past -I
    replies = dict(ref)
    assert replies["append a large part"] == replies["prepend a large part"] == b"STORED\r\n"
    assert replies["append past -I"] == b"NOT_STORED\r\n"
    assert replies["prepend to a missing key"] == b"NOT_STORED\r\n"

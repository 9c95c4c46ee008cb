"""Differential slab accounting: same settings, same items, same `stats slabs` / `stats items`.

Clients size caches and diagnose memory from these numbers, so our node must place every item in
the slab class memcached would (chunk sizes follow from -f/-n/-I), count pages the same way and
report the same per-class counters. Both servers get identical command lines and identical
traffic; every reply (including STORED vs SERVER_ERROR for items near the size limit) is compared
after the shared normalisation in ``differential_corpus``. That normalisation masks only the
values of `stats items` fields about memcached's segmented LRU (number_hot/warm/cold, age_*,
moves_*, hits_to_*: moved by a background thread, so they vary even between two memcached
processes; test_differential_lru compares them after workloads that settle); their names are
still compared, and so is
everything in `stats slabs` (chunk_size, pages, used/free chunks, per-class counters,
active_slabs, total_malloced) and `mem_requested`/`number`/`evicted*` in `stats items`.

The reference is live where the pinned memcached is installed, else its recorded replies (see
``test_differential``). Set ``DIFF_OURS=memcached`` to validate the test itself against a second
memcached.
"""

from __future__ import annotations

import difflib
import os
import signal
import threading
from collections.abc import Iterator

import pytest
import transcripts
from differential_corpus import SENTINEL, normalise, read_reply, setcmd, start_reference
from procs import ServerProc, start_node
from reference import live_memcached, need_memcached

OURS_KIND = os.environ.get("DIFF_OURS", "node")
CORPUS = "slabs"

# Same command line for both servers; chosen to move every boundary the slab allocator has:
# growth factor, minimum chunk, item size limit (and with it slab_chunk_max / chunked items).
CONFIGS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "f1.5_n64": ("-f", "1.5", "-n", "64"),
    "I2m": ("-I", "2m"),
    "I512k_f1.1": ("-I", "512k", "-f", "1.1"),
}

# 10 B .. 900 KB: small classes, mid classes, values near slab_chunk_max (512 KB with 1 MB pages)
# and beyond it, where memcached stores an item as a header plus chained chunks.
# fmt: off
VALUE_SIZES = [
    10, 33, 64, 100, 190, 250, 500, 1000, 1500, 3000, 5000, 9000, 16_000, 30_000, 60_000,
    100_000, 200_000, 300_000, 400_000, 500_000, 524_000, 530_000, 700_000, 900_000,
]
# fmt: on
# Key length and flags both change an item's total size (nonzero flags add 4 bytes in 1.6).
KEY_VARIANTS = [(1, 0), (10, 7), (100, 0), (250, 0xFFFFFFFF)]
FILL_ITEMS = 12_000  # ~160-byte items: several pages of one class, so page counting matters


def _key(size: int, length: int) -> bytes:
    """A unique key of exactly ``length`` bytes for the item of ``size`` bytes."""
    if length == 1:
        return bytes([65 + VALUE_SIZES.index(size)])
    tag = b"s%dk%d" % (size, length)
    assert len(tag) <= length
    return tag + b"." * (length - len(tag))


def _store_phase() -> bytes:
    out = bytearray()
    for size in VALUE_SIZES:
        for length, flags in KEY_VARIANTS:
            out += setcmd(_key(size, length), b"v" * size, flags)
    for i in range(FILL_ITEMS):
        out += setcmd(b"fill:%05d" % i, b"f" * 90)
    for i in range(50):
        out += setcmd(b"num:%d" % i, b"%d" % (i * 1000))
    return bytes(out)


def _mutate_phase() -> bytes:
    out = bytearray()
    for i in range(0, 50, 2):
        out += b"incr num:%d 7\r\n" % i
    for i in range(1, 50, 5):
        out += b"decr num:%d 3\r\n" % i
    for i in range(0, 200):
        out += b"delete fill:%05d\r\n" % (i * 7)
    for i in range(200, 260):  # grow into the next class; memcached relinks a new item
        out += setcmd(b"fill:%05d" % i, b"g" * 200, cmd=b"append")
    for i in range(300, 340):  # shrink into a smaller class
        out += setcmd(b"fill:%05d" % i, b"s" * 5, flags=3)
    for i in range(400, 450):
        out += b"touch fill:%05d 1000\r\n" % i
    for size in VALUE_SIZES[::3]:
        out += b"get " + _key(size, 10) + b"\r\n"
    out += b"get " + b" ".join(b"fill:%05d" % i for i in range(1000, 1100)) + b"\r\n"
    out += b"delete " + _key(VALUE_SIZES[-1], 100) + b"\r\n"
    out += setcmd(b"bigreplace", b"r" * 700_000) + setcmd(b"bigreplace", b"r" * 20)
    return bytes(out)


STATS = b"stats slabs\r\nstats items\r\nstats\r\n"


def _exchange(srv: ServerProc, payload: bytes) -> bytes:
    """Send a large pipeline from a thread while reading, so neither side's buffers can fill up
    and deadlock; the reply ends at the `version` sentinel."""
    with srv.connect(timeout=30) as sock:
        errors: list[BaseException] = []

        def send() -> None:
            try:
                sock.sendall(payload + SENTINEL)
            except OSError as e:  # reported below, after whatever was read
                errors.append(e)

        t = threading.Thread(target=send)
        t.start()
        data, eof = read_reply(sock, 1, quiet=2.0)
        t.join(30)
        if eof or errors:
            data += b"<EOF>" if eof else b"<SEND FAILED %r>" % errors[0]
        return data


def _start_pair(args: tuple[str, ...]) -> tuple[ServerProc | None, ServerProc]:
    """(reference, ours); no reference where the transcript stands in for it."""
    if OURS_KIND == "memcached":
        need_memcached()
    elif not live_memcached():
        return None, start_node(*args)
    ref = start_reference(*args)
    try:
        ours = start_reference(*args) if OURS_KIND == "memcached" else start_node(*args)
    except BaseException:
        ref.stop(signal.SIGKILL)
        raise
    return ref, ours


Pair = tuple[str, ServerProc | None, ServerProc]


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """A fresh pair per config: slab pages are never returned, so state must start empty."""
    ref, ours = _start_pair(CONFIGS[request.param])
    yield request.param, ref, ours
    if ref is not None:
        ref.stop(signal.SIGKILL)  # memcached's graceful SIGTERM lingers ~1 s and keeps nothing
    ours.stop(signal.SIGKILL if OURS_KIND == "memcached" else signal.SIGTERM)


PHASES = (
    ("store", _store_phase()),
    ("stats-after-store", STATS),
    ("mutate", _mutate_phase()),
    ("stats-after-mutate", STATS),
)


def replies(srv: ServerProc) -> list[bytes]:
    """Each phase's normalised reply from one server."""
    return [normalise([_exchange(srv, payload)])[0] for _, payload in PHASES]


def _diff(phase: str, ref: bytes, ours: bytes) -> str:
    lines = difflib.unified_diff(
        ref.decode("latin-1").splitlines(),
        ours.decode("latin-1").splitlines(),
        fromfile=f"memcached/{phase}",
        tofile=f"ours/{phase}",
        lineterm="",
        n=1,
    )
    return "\n".join(list(lines)[:80])


def _problems(expected: list[bytes], got: list[bytes]) -> list[str]:
    return [
        _diff(phase, r, o) for (phase, _), r, o in zip(PHASES, expected, got, strict=True) if r != o
    ]


def test_slab_accounting(pair: Pair) -> None:
    """Store/mutate the same items on both servers; every reply and stats block must match."""
    config, ref, ours = pair
    recorded = transcripts.expected(CORPUS, config)
    expected = recorded if ref is None else replies(ref)
    problems = _problems(expected, replies(ours))
    assert not problems, "\n\n".join(problems)
    stale = _problems(recorded, expected)
    assert not stale, "the transcript is stale:\n" + "\n\n".join(stale)


def test_store_phase_is_meaningful() -> None:
    """Guard the workload itself: it must span 10 B..900 KB and fill several small-class pages,
    and its transcript must hold every configuration."""
    assert set(transcripts.load(CORPUS)) == set(CONFIGS)
    assert min(VALUE_SIZES) == 10 and max(VALUE_SIZES) == 900_000
    assert FILL_ITEMS * 160 > 1024 * 1024  # more than one 1 MB page of ~160-byte items
    assert len({_key(size, n) for size in VALUE_SIZES for n, _ in KEY_VARIANTS}) == len(
        VALUE_SIZES
    ) * len(KEY_VARIANTS)

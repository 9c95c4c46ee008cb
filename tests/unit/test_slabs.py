"""The slab class table and item sizes against memcached 1.6.18's (``memcached -vv`` output)."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from procs import MEMCACHED, free_port

from memcache_server.config import KB, MB, ServerConfig
from memcache_server.storage.slabs import (
    CHUNK_HEADER,
    ITEM_HEADER,
    MAX_CLASSES,
    PAGE_SIZE,
    SlabTable,
)

# `memcached -vv` (1.6.18, defaults): class id -> (chunk size, chunks per page)
MEMCACHED_DEFAULT = {
    1: (96, 10922),
    2: (120, 8738),
    3: (152, 6898),
    4: (192, 5461),
    5: (240, 4369),
    6: (304, 3449),
    7: (384, 2730),
    8: (480, 2184),
    9: (600, 1747),
    10: (752, 1394),
    11: (944, 1110),
    12: (1184, 885),
    13: (1480, 708),
    14: (1856, 564),
    15: (2320, 451),
    16: (2904, 361),
    17: (3632, 288),
    18: (4544, 230),
    19: (5680, 184),
    20: (7104, 147),
    21: (8880, 118),
    22: (11104, 94),
    23: (13880, 75),
    24: (17352, 60),
    25: (21696, 48),
    26: (27120, 38),
    27: (33904, 30),
    28: (42384, 24),
    29: (52984, 19),
    30: (66232, 15),
    31: (82792, 12),
    32: (103496, 10),
    33: (129376, 8),
    34: (161720, 6),
    35: (202152, 5),
    36: (252696, 4),
    37: (315872, 3),
    38: (394840, 2),
    39: (524288, 2),
}


def default_table(use_cas: bool = True) -> SlabTable:
    return SlabTable.build(1.25, 48, 512 * KB, MB, use_cas)


def table_of(t: SlabTable) -> dict[int, tuple[int, int]]:
    return {i: (t.sizes[i], t.perslab[i]) for i in range(1, len(t.sizes))}


def test_default_table_is_memcached_1_6_18() -> None:
    t = default_table()
    assert t.largest == 39
    assert table_of(t) == MEMCACHED_DEFAULT
    assert t.sizes[1] == 96 and t.perslab[1] == 10922
    assert t.sizes[4] == 192
    assert t.sizes[t.largest] == 524288 and t.perslab[t.largest] == 2


def test_table_does_not_depend_on_cas() -> None:
    assert table_of(default_table(False)) == table_of(default_table(True))


def test_growth_1_1_min_64() -> None:
    """-f 1.1 -n 64: memcached runs out of class ids at 63, the last one being slab_chunk_max."""
    t = SlabTable.build(1.1, 64, 512 * KB, MB, True)
    assert t.largest == MAX_CLASSES == 63
    got = table_of(t)
    assert got[1] == (112, 9362)
    assert got[2] == (128, 8192)
    assert got[3] == (144, 7281)
    assert got[61] == (43008, 24)
    assert got[62] == (47312, 22)
    assert got[63] == (524288, 2)


def test_growth_2_min_100() -> None:
    got = table_of(SlabTable.build(2.0, 100, 512 * KB, MB, True))
    assert len(got) == 12
    assert got[1] == (152, 6898)
    assert got[2] == (304, 3449)
    assert got[10] == (77824, 13)
    assert got[11] == (155648, 6)
    assert got[12] == (524288, 2)


def test_sizes_are_aligned_and_increasing() -> None:
    for f in (1.01, 1.05, 1.25, 1.5, 2.0, 3.0):
        for n in (1, 5, 48, 100, 1000):
            t = SlabTable.build(f, n, 512 * KB, MB, True)
            sizes = t.sizes[1:]
            # non-decreasing: with a tiny factor int(size * f) may not grow (memcached too)
            assert all(a <= b for a, b in zip(sizes, sizes[1:], strict=False)), (f, n)
            assert all(s % 8 == 0 for s in sizes[:-1])
            assert sizes[-1] == 512 * KB
            assert len(sizes) <= MAX_CLASSES
            assert all(t.perslab[i] == PAGE_SIZE // t.sizes[i] for i in range(1, len(t.sizes)))


@pytest.mark.parametrize(
    ("nkey", "flags", "nbytes", "cas", "want"),
    [
        (1, 0, 3, False, 48 + 1 + 1 + 3),
        (1, 0, 3, True, 48 + 1 + 1 + 3 + 8),
        (1, 7, 3, True, 48 + 1 + 1 + 3 + 4 + 8),
        (1, 7, 3, False, 48 + 1 + 1 + 3 + 4),
        (250, 0xFFFFFFFF, 2, True, 48 + 250 + 1 + 2 + 4 + 8),
        (10, 0, 1024 * 1024 + 2, True, 48 + 10 + 1 + 1024 * 1024 + 2 + 8),
    ],
)
def test_item_size(nkey: int, flags: int, nbytes: int, cas: bool, want: int) -> None:
    assert default_table(cas).item_size(nkey, flags, nbytes) == want
    assert ITEM_HEADER == 48


def test_item_size_examples_land_where_memcached_puts_them() -> None:
    """`set a 0 0 1` -> 48+1+1+3+8 = 61 bytes -> class 1; a 100-byte value with a 13-byte key
    and flags -> 48+13+1+102+4+8 = 176 -> class 4 (192)."""
    t = default_table()
    assert t.class_for(t.item_size(1, 0, 3)) == 1
    assert t.class_for(t.item_size(13, 1, 102)) == 4


def test_class_for_boundaries() -> None:
    t = default_table()
    assert t.class_for(0) == 0
    assert t.class_for(1) == 1
    assert t.class_for(96) == 1
    assert t.class_for(97) == 2
    assert t.class_for(120) == 2
    assert t.class_for(121) == 3
    for cid in range(1, t.largest + 1):
        assert t.class_for(t.sizes[cid]) == cid
        if cid < t.largest:
            assert t.class_for(t.sizes[cid] + 1) == cid + 1
    # above the largest chunk but within -I: a chunked item, headed from the largest class
    assert t.class_for(524289) == t.largest
    assert t.class_for(MB) == t.largest
    assert t.class_for(MB + 1) == 0  # over -I


def test_data_chunks_cover_the_value() -> None:
    t = default_table()
    for nbytes in (524288, 524289, 600 * KB, 900 * KB, MB - 100):
        cids = t.data_chunks(nbytes)
        capacity = sum(t.sizes[c] - CHUNK_HEADER for c in cids)
        assert capacity >= nbytes
        assert all(c == t.largest for c in cids[:-1])
        # the last chunk is the smallest class that holds the remainder
        remain = nbytes - sum(t.sizes[c] - CHUNK_HEADER for c in cids[:-1])
        assert t.class_for(remain + CHUNK_HEADER) == cids[-1]


def test_chunked_header_size() -> None:
    t = default_table()
    assert t.chunked_header_size(10, 0) == 10 + 1 + 48 + 48 + 8
    assert t.chunked_header_size(10, 1) == 10 + 1 + 48 + 48 + 8 + 4


# ---------------------------------------------------------------------- against memcached -vv

SLAB_LINE = re.compile(rb"slab class\s+(\d+): chunk size\s+(\d+) perslab\s+(\d+)")


def memcached_table(*args: str) -> dict[int, tuple[int, int]]:
    """Start memcached -vv, read its class table from stderr, stop it by PID."""
    cmd = [MEMCACHED, "-vv", "-l", "127.0.0.1", "-p", str(free_port()), "-U", "0", *args]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    table: dict[int, tuple[int, int]] = {}
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = SLAB_LINE.search(line)
            if m:
                table[int(m[1])] = (int(m[2]), int(m[3]))
            elif table:
                break  # the table is printed first, then the listening sockets
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
    return table


def node_table(cfg: ServerConfig) -> dict[int, tuple[int, int]]:
    t = SlabTable.build(
        cfg.growth_factor, cfg.chunk_size, cfg.effective_chunk_max, cfg.item_size_max, cfg.use_cas
    )
    return table_of(t)


needs_memcached = pytest.mark.usefixtures("live_reference")


@needs_memcached
@pytest.mark.parametrize(
    ("args", "cfg"),
    [
        ((), ServerConfig()),
        (("-f", "1.1", "-n", "64"), ServerConfig(growth_factor=1.1, chunk_size=64)),
        (("-f", "2", "-n", "100"), ServerConfig(growth_factor=2.0, chunk_size=100)),
        (
            ("-f", "1.5", "-n", "10", "-C"),
            ServerConfig(growth_factor=1.5, chunk_size=10, use_cas=False),
        ),
        (("-f", "1.01", "-n", "1"), ServerConfig(growth_factor=1.01, chunk_size=1)),
        (("-I", "2m"), ServerConfig(item_size_max=2 * MB)),
        (("-I", "512k"), ServerConfig(item_size_max=512 * KB)),
        (("-I", "4m", "-m", "64"), ServerConfig(item_size_max=4 * MB)),
    ],
    ids=["default", "f1.1-n64", "f2-n100", "f1.5-n10-C", "f1.01-n1", "I2m", "I512k", "I4m"],
)
def test_table_matches_running_memcached(args: tuple[str, ...], cfg: ServerConfig) -> None:
    want = memcached_table(*args)
    assert want, "memcached printed no slab table"
    assert node_table(cfg) == want


def test_a_joined_item_is_chained_as_memcacheds_copy_chains_it() -> None:
    """items.c's _store_item_copy_chunks: each part in chunks sized to what is left of it,
    then an empty chunk of the smallest class; a set's chain has no empty chunk."""
    table = SlabTable.build(1.25, 48, 512 * KB, MB, True)
    top = table.largest
    rest = 600_002 - (512 * KB - CHUNK_HEADER)
    tail = table.class_for(rest + CHUNK_HEADER)
    # prepend 12 bytes to a 600,000-byte value (with its CRLF)
    assert table.joined_chunks(12, 600_002) == [
        (1, 12), (1, 0), (top, 512 * KB - CHUNK_HEADER), (tail, rest), (1, 0)
    ]
    assert table.joined_chunks(0, 100) == [(table.class_for(148), 100), (1, 0)]  # empty part
    assert table.data_chunks(600_002) == [top, tail]

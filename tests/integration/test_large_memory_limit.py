"""`-m` above 4096 MB on 64-bit: accepted and reported as memcached reports it, and cheap.

memcached takes any -m that fits a size_t and reports it as ``limit_maxbytes`` and (in
`stats settings`) ``maxbytes``; it mallocs pages as items need them. Our segment reserves the
whole limit as address space (a sparse file, pages touched on use), so a node told -m 1048576
(1 TB) must start, serve, stay small in resident memory, and leave nothing in /dev/shm.
"""

from __future__ import annotations

import pytest
from procs import exchange, start_memcached, start_node
from reference import need_memcached
from wire import rss_mb, stats

RSS_BOUND_MB = 200  # a node at rest is ~30 MB; a reservation that got touched would be GBs


def _named_shm_maps(pid: int) -> list[str]:
    """The /dev/shm files ``pid`` maps that still have a name (the segment is unlinked at once,
    so nothing of it can outlive the node)."""
    with open(f"/proc/{pid}/maps") as f:
        return [ln for ln in f if "/dev/shm/" in ln and not ln.rstrip().endswith("(deleted)")]


@pytest.mark.parametrize("megabytes", ["4097", "8192", "1048576"])
def test_limit_above_4g_as_memcached(megabytes: str) -> None:
    need_memcached()
    ref = start_memcached("-m", megabytes)
    try:
        with ref.connect() as s:
            want = stats(s)
            want_settings = stats(s, b"settings")
    finally:
        ref.stop()
    node = start_node("-m", megabytes)
    try:
        with node.connect() as s:
            got = stats(s)
            got_settings = stats(s, b"settings")
            value = b"v" * 100_000
            assert exchange(s, b"set k 0 0 %d\r\n%b\r\n" % (len(value), value)) == b"STORED\r\n"
            assert exchange(s, b"get k\r\n") == b"VALUE k 0 %d\r\n%b\r\nEND\r\n" % (
                len(value),
                value,
            )
        assert rss_mb(node.proc.pid) < RSS_BOUND_MB
        assert _named_shm_maps(node.proc.pid) == []
    finally:
        node.stop()
    assert got["limit_maxbytes"] == want["limit_maxbytes"] == str(int(megabytes) << 20)
    assert got_settings["maxbytes"] == want_settings["maxbytes"]

"""-o lru_admission=tinylfu on a real node: a used hot set read during a one-pass scan is kept
far better than with memcached's rules alone, and the option shows in `stats settings` and
`stats` only when it is on (with it off the replies are memcached's: the differential tests
compare them).

The workload is fixed and small, and the hot set is larger than WARM's share of memory, so
with memcached's rules part of it must sit in COLD, where the scan evicts what the hot reads
do not rescue in time; the assertions are on how much of it is stored at the end (with a
margin for that rescue, which depends on the node's pace), not on time.
"""

from __future__ import annotations

import itertools
import socket

from metrics_client import Samples, metrics_url, scrape, value
from procs import start_node

HOT_KEYS = 18_000  # 87% of what -m 8 holds of these items (~20.7k): HOT and WARM's shares
# (60% of memory) cannot hold it all, whatever the node's pace
SCAN_KEYS = 60_000
BATCH = 200
VALUE = b"x" * 200


def _read_replies(sock: socket.socket, count: int, mark: bytes) -> bytes:
    buf = bytearray()
    while buf.count(mark) < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "the node closed the connection"
        buf += chunk
    return bytes(buf)


def _set(sock: socket.socket, keys: list[bytes]) -> None:
    sock.sendall(b"".join(b"set %b 0 0 %d\r\n%b\r\n" % (k, len(VALUE), VALUE) for k in keys))
    reply = _read_replies(sock, len(keys), b"\r\n")
    assert reply.count(b"STORED\r\n") == len(keys), reply[:200]


def _hits(sock: socket.socket, keys: list[bytes]) -> int:
    sock.sendall(b"".join(b"get %b\r\n" % k for k in keys))
    return _read_replies(sock, len(keys), b"END\r\n").count(b"VALUE ")


def _stats(sock: socket.socket, sub: bytes = b"") -> dict[str, str]:
    sock.sendall(b"stats " + sub + b"\r\n" if sub else b"stats\r\n")
    reply = _read_replies(sock, 1, b"END\r\n").decode()
    return {p[1]: p[2] for p in (line.split(" ") for line in reply.split("\r\n")) if len(p) == 3}


def _hot_set_kept(*args: str) -> tuple[float, dict[str, str], dict[str, str], Samples]:
    """Store the hot set and read it twice, then scan SCAN_KEYS new keys reading one hot key
    every fourth set. Returns the share of the hot set still stored, `stats settings`, `stats`
    and a scrape of /metrics."""
    node = start_node("-m", "8", "-t", "2", "--metrics-listen", ":0", *args)
    try:
        with node.connect(timeout=60) as sock:
            hot = [b"hot:%d" % i for i in range(HOT_KEYS)]
            for i in range(0, HOT_KEYS, BATCH):
                _set(sock, hot[i : i + BATCH])
            for _ in range(2):
                for i in range(0, HOT_KEYS, BATCH):
                    assert _hits(sock, hot[i : i + BATCH]) == len(hot[i : i + BATCH])
            cycle = itertools.cycle(hot)
            for i in range(0, SCAN_KEYS, BATCH):
                _set(sock, [b"scan:%d" % j for j in range(i, i + BATCH)])
                _hits(sock, [next(cycle) for _ in range(BATCH // 4)])
            kept = sum(_hits(sock, hot[i : i + BATCH]) for i in range(0, HOT_KEYS, BATCH))
            settings, stats = _stats(sock, b"settings"), _stats(sock)
            return kept / HOT_KEYS, settings, stats, scrape(metrics_url(node))
    finally:
        node.stop()


def test_tinylfu_keeps_a_hot_set_that_a_scan_pushes_out_of_the_segmented_lru() -> None:
    plain, plain_settings, plain_stats, plain_metrics = _hot_set_kept()
    kept, settings, stats, metrics = _hot_set_kept("-o", "lru_admission=tinylfu")
    assert kept >= 0.9, (kept, stats)
    # memcached's rules alone keep what fits HOT and WARM plus what the hot reads rescue from
    # COLD in time, which moves with how fast the node serves against the age limits (whole
    # seconds) and how promptly the maintainer juggles: with 15,000 hot keys, 0.25-0.61 once,
    # then 0.74-0.82 after the maintainer's lock holds were shortened; with 18,000, 0.61
    assert plain <= 0.8, plain  # and 0.2 below the policy, next
    assert kept - plain >= 0.2, (kept, plain)
    assert int(stats["evictions"]) > 0 and int(plain_stats["evictions"]) > 0
    assert settings["lru_admission"] == "tinylfu"
    assert int(stats["lru_admission_kept"]) > 0
    assert int(stats["lru_admission_rejected"]) > 0
    assert "lru_admission" not in plain_settings
    assert not [name for name in plain_stats if name.startswith("lru_admission")]
    # the same counters on /metrics, and none of them without the policy
    for field in ("kept", "rejected", "resets"):
        name = f"memcached_lru_admission_{field}_total"
        assert value(metrics, name) == float(stats[f"lru_admission_{field}"]), name
    assert not [name for name, _ in plain_metrics if name.startswith("memcached_lru_admission")]

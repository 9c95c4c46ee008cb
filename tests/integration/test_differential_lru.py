"""Differential segmented LRU: after the same workload, our node's `stats items` and the LRU
lines of `stats` carry memcached 1.6.18's values, not just its names.

The workloads are chosen so that the background maintainer's timing cannot change where they
end (memcached has no ``debugtime`` outside debug builds, so nothing here moves a clock): each
phase waits, bounded, until both servers have settled (HOT drained by age once a second has
passed, fetched items back in WARM, expired items reclaimed), then every field is compared
except the ones that are wall-clock ages. The crawler is off on both, so every reclaim is the
tail pull's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from procs import ServerProc, start_memcached, start_node
from reference import need_memcached

# Wall-clock ages, and lrutail_reflocked: memcached counts a tail item a connection still
# holds a reference to (a get reply not yet sent) whenever the maintainer meets one, which
# depends on thread timing; our items are never referenced outside the lock.
AGES = frozenset({"age_hot", "age_warm", "age", "evicted_time", "lrutail_reflocked"})
SETTLE = 8.0  # seconds a phase may take to settle on either server
VALUE = b"v" * 20  # with keys of up to 8 bytes, every item is in class 1


def _ask(srv: ServerProc, request: bytes, replies: int) -> bytes:
    with srv.connect() as s:
        s.sendall(request)
        buf = b""
        while buf.count(b"\r\n") < replies or (
            request.startswith(b"stats") and not buf.endswith(b"END\r\n")
        ):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def _stats(srv: ServerProc, sub: bytes = b"") -> dict[str, str]:
    reply = _ask(srv, b"stats " + sub + b"\r\n" if sub else b"stats\r\n", 1)
    out = {}
    for line in reply.decode().split("\r\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def _items(srv: ServerProc) -> list[tuple[str, str]]:
    """`stats items` in order, the timing-dependent values blanked."""
    out = []
    for name, value in _stats(srv, b"items").items():
        out.append((name, "<timing>" if name.split(":")[-1] in AGES else value))
    return out


def _settle(servers: list[ServerProc], done: Callable[[dict[str, str]], bool]) -> None:
    deadline = time.monotonic() + SETTLE
    for srv in servers:
        while not done(_stats(srv, b"items")):
            assert time.monotonic() < deadline, _stats(srv, b"items")
            time.sleep(0.05)


def _sets(keys: list[bytes], exptime: int = 0) -> bytes:
    return b"".join(b"set %b 0 %d %d\r\n%b\r\n" % (k, exptime, len(VALUE), VALUE) for k in keys)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[list[ServerProc]]:
    need_memcached()
    args: tuple[str, ...] = request.param
    ours = start_node(*args)
    try:
        ref = start_memcached(*args)
    except BaseException:
        ours.stop()
        raise
    try:
        yield [ours, ref]
    finally:
        ours.stop()
        ref.stop()


SEGMENTED = ("-o", "no_lru_crawler")
FLAT = ("-o", "no_lru_crawler,no_lru_maintainer")


@pytest.mark.parametrize("pair", [SEGMENTED], indirect=True, ids=["segmented"])
def test_hot_warm_cold_after_a_settled_workload(pair: list[ServerProc]) -> None:
    keys = [b"key%03d" % i for i in range(200)]
    for srv in pair:
        _ask(srv, _sets(keys), len(keys))
    # every item idle: HOT flows to COLD (by size at once, the rest by age within a second)
    _settle(pair, lambda st: st.get("items:1:number_hot") == "0")
    fetch = b"".join(b"get %b\r\n" % k for k in keys[:30])
    for srv in pair:
        _ask(srv, fetch + fetch, 60 * 3)  # fetched twice in COLD: back to WARM
    _settle(pair, lambda st: st.get("items:1:number_warm") == "30")
    for srv in pair:
        _ask(srv, b"".join(b"get %b\r\n" % k for k in keys[:10]), 30)  # ACTIVE in WARM
        _ask(srv, b"".join(b"delete %b\r\n" % k for k in keys[100:105]), 5)
    _settle(pair, lambda st: st.get("items:1:moves_within_lru") == "10")
    ours, ref = (_items(srv) for srv in pair)
    assert ours == ref
    assert dict(ours)["items:1:moves_to_cold"] == "200"
    assert dict(ours)["items:1:hits_to_cold"] == "60"
    lru_lines = (
        "moves_to_cold",
        "moves_to_warm",
        "moves_within_lru",
        "direct_reclaims",
        "evicted_active",
        "lru_bumps_dropped",
        "reclaimed",
        "evictions",
    )
    ours_st, ref_st = (_stats(srv) for srv in pair)
    assert {k: ours_st[k] for k in lru_lines} == {k: ref_st[k] for k in lru_lines}


@pytest.mark.parametrize("pair", [SEGMENTED], indirect=True, ids=["segmented"])
def test_the_maintainer_reclaims_expired_items(pair: list[ServerProc]) -> None:
    """Items stored already expired (a negative exptime) sit in HOT until the maintainer's
    tail pulls reclaim them: every one is counted as reclaimed and expired_unfetched."""
    keys = [b"dead%04d" % i for i in range(1000)]
    for srv in pair:
        _ask(srv, _sets(keys, exptime=-1) + _sets([b"live"]), len(keys) + 1)
    # ... and then the live one, alone in HOT and so over its share, flows to COLD
    _settle(pair, lambda st: (st["items:1:number"], st["items:1:number_cold"]) == ("1", "1"))
    ours, ref = (_items(srv) for srv in pair)
    assert ours == ref
    assert dict(ours)["items:1:reclaimed"] == "1000"
    assert dict(ours)["items:1:expired_unfetched"] == "1000"


@pytest.mark.parametrize("pair", [FLAT], indirect=True, ids=["flat"])
def test_a_flat_lru_reclaims_at_its_tail_before_every_set(pair: list[ServerProc]) -> None:
    """With -o no_lru_maintainer nothing runs in the background: each allocation first looks
    at up to five items at the LRU tail and reclaims the dead ones (do_item_alloc_pull)."""
    dead = [b"dead%02d" % i for i in range(12)]
    replies = []
    for srv in pair:
        _ask(srv, _sets(dead, exptime=-1), len(dead))  # each set reclaims the one before it
        before = _stats(srv, b"items")["items:1:reclaimed"]
        _ask(srv, _sets([b"live0", b"live1"]), 2)
        replies.append((before, _items(srv), _stats(srv)["reclaimed"]))
    assert replies[0] == replies[1]
    assert replies[0][0] == "11"
    assert replies[0][2] == "12"
    assert dict(replies[0][1])["items:1:number"] == "2"
    assert "items:1:number_hot" not in dict(replies[0][1])  # no segmented lines when flat

"""Meta item operations on a real store driven by a manual clock (no socket, no sleep)."""

from __future__ import annotations

import pytest

from memcache_server.protocol.constants import VALUE_KEY_OFFSET, value_header
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.metastore import (
    EV_RECACHE,
    EV_SET_TTL,
    EV_SHOW_TTL,
    EV_VIVIFY_TTL,
    MetaHit,
    MetaResult,
    MetaStore,
)
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Mode, Outcome, Store, StoreLimits


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def meta(clock: ManualClock) -> MetaStore:
    table = SlabTable.build(1.25, 48, 512 * 1024, 1024 * 1024, True)
    store = Store(table, StoreLimits(64 << 20, True, True), clock, value_header)
    store.key_offset = VALUE_KEY_OFFSET
    return MetaStore(store)


def hit(r: MetaHit | int) -> MetaHit:
    assert isinstance(r, MetaHit)
    return r


def put(meta: MetaStore, key: bytes, value: bytes, exp: int = 0) -> int:
    outcome, cas = meta.set(Mode.SET, key, False, 0, exp, value + b"\r\n", 0, False)
    assert outcome == Outcome.STORED
    return cas


def test_vivify_wins_once_then_others_see_the_token(meta: MetaStore, clock: ManualClock) -> None:
    ev = ((EV_VIVIFY_TTL, clock.now + 30), (EV_SHOW_TTL, 0))
    first = hit(meta.get(b"k", ev, True, True, True, False))
    assert first.created and first.won and not first.token_sent and first.value == b"\r\n"
    assert first.ttls == [clock.now + 30]
    second = hit(meta.get(b"k", ev, True, True, True, False))
    assert not second.created and not second.won and second.token_sent


def test_recache_wins_when_ttl_below_threshold(meta: MetaStore, clock: ManualClock) -> None:
    put(meta, b"k", b"v", exp=clock.now + 10)

    def recache(within: int) -> MetaHit:
        return hit(meta.get(b"k", ((EV_RECACHE, clock.now + within),), True, False, False, False))

    assert not recache(5).won  # 10 s left: not yet
    clock.advance(6)
    assert recache(5).won  # 4 s left: this client refreshes
    assert recache(5).token_sent and not recache(5).won


def test_ttl_events_apply_in_order(meta: MetaStore, clock: ManualClock) -> None:
    put(meta, b"k", b"v", exp=clock.now + 100)
    ev = ((EV_SHOW_TTL, 0), (EV_SET_TTL, clock.now + 5), (EV_SHOW_TTL, 0))
    r = hit(meta.get(b"k", ev, True, False, False, True))
    assert r.ttls == [clock.now + 100, clock.now + 5]
    clock.advance(5)
    assert meta.get(b"k", (), True, False, False, False) == -1  # expired


def test_no_bump_leaves_item_unfetched(meta: MetaStore) -> None:
    put(meta, b"k", b"v")
    assert not hit(meta.get(b"k", (), False, False, False, False)).fetched
    assert not hit(meta.get(b"k", (), True, False, False, False)).fetched
    assert hit(meta.get(b"k", (), True, False, False, False)).fetched


def test_delete_invalidate_then_one_winner(meta: MetaStore) -> None:
    cas = put(meta, b"k", b"v")
    assert meta.delete(b"k", cas + 1, False, None) == MetaResult.EXISTS
    assert meta.delete(b"k", None, True, None) == MetaResult.OK
    r1 = hit(meta.get(b"k", (), True, False, True, False))
    assert r1.stale and r1.won and r1.value == b"v\r\n" and r1.cas != cas
    r2 = hit(meta.get(b"k", (), True, False, True, False))
    assert r2.stale and r2.token_sent and not r2.won
    put(meta, b"k", b"fresh")  # a normal set clears the stale state
    r3 = hit(meta.get(b"k", (), True, False, False, False))
    assert not (r3.stale or r3.token_sent or r3.won)
    assert meta.delete(b"k", None, False, None) == MetaResult.OK
    assert meta.delete(b"k", None, False, None) == MetaResult.NOT_FOUND


def test_set_stale_with_older_cas(meta: MetaStore, clock: ManualClock) -> None:
    old = put(meta, b"k", b"v1", exp=clock.now + 100)
    put(meta, b"k", b"v2", exp=clock.now + 100)
    outcome, _ = meta.set(Mode.CAS, b"k", False, 0, clock.now + 5, b"late\r\n", old, True)
    assert outcome == Outcome.STORED
    r = hit(meta.get(b"k", ((EV_SHOW_TTL, 0),), True, False, True, False))
    assert r.value == b"late\r\n" and r.stale and r.ttls == [clock.now + 100]  # old TTL kept
    outcome, _ = meta.set(Mode.CAS, b"k", False, 0, 0, b"x\r\n", r.cas + 1, True)
    assert outcome == Outcome.EXISTS  # a newer CAS is not "stale", it is wrong


def test_set_modes(meta: MetaStore) -> None:
    def ms(mode: Mode, value: bytes, cas: int = 0) -> Outcome:
        return meta.set(mode, b"k", False, 3, 0, value + b"\r\n", cas, False)[0]

    assert ms(Mode.REPLACE, b"x") == Outcome.NOT_STORED
    assert ms(Mode.APPEND, b"x") == Outcome.NOT_STORED
    assert ms(Mode.CAS, b"x", 5) == Outcome.NOT_FOUND
    assert ms(Mode.ADD, b"mid") == Outcome.STORED
    assert ms(Mode.ADD, b"again") == Outcome.NOT_STORED
    assert ms(Mode.APPEND, b">") == Outcome.STORED
    assert ms(Mode.PREPEND, b"<") == Outcome.STORED
    assert hit(meta.get(b"k", (), True, False, True, False)).value == b"<mid>\r\n"


def test_arith_vivify_cas_and_growth(meta: MetaStore, clock: ManualClock) -> None:
    r, h = meta.arith(b"n", True, 1, 0, False, 0, ())
    assert r == MetaResult.NOT_FOUND and h is None
    r, h = meta.arith(b"n", True, 1, 0, True, 9, ((EV_VIVIFY_TTL, clock.now + 50),))
    assert r == MetaResult.OK and h is not None and h.created and h.value == b"9"
    r, h = meta.arith(b"n", True, 1, 0, False, 0, ((EV_SHOW_TTL, 0),))
    assert h is not None and h.value == b"10" and h.ttls == [clock.now + 50]
    assert meta.arith(b"n", True, 1, h.cas + 1, False, 0, ())[0] == MetaResult.EXISTS
    r, h = meta.arith(b"n", False, 100, h.cas, False, 0, ())
    assert h is not None and h.value == b"0"
    put(meta, b"s", b"abc")
    assert meta.arith(b"s", True, 1, 0, False, 0, ())[0] == MetaResult.NON_NUMERIC


def test_debug_does_not_touch(meta: MetaStore, clock: ManualClock) -> None:
    put(meta, b"k", b"v", exp=clock.now + 100)
    clock.advance(3)
    d = meta.debug(b"k")
    assert d is not None and d.la == 3 and not d.fetched and d.exp == clock.now + 97
    assert d.cid == 1 and d.ntotal == 48 + 1 + 1 + 3 + 8
    assert meta.debug(b"nope") is None

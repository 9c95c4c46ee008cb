"""Meta commands and operational commands (lru_crawler, stats detail), differentially: each
case goes to memcached 1.6.18 and to our node, and the replies must be equal after
``normalise_meta`` (CAS values, TTL ticks, metadump times). Cases that depend only on their own
keys share one pair of servers (flushed between cases); the others get a fresh pair each.

The reference is live where the pinned memcached is installed, else its recorded replies (see
``test_differential``); the shared cases also run against a node with four event loops.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import transcripts
from differential_corpus import Case, flush, start_reference
from meta_corpus import META_CASES, OPS_CASES, normalise_meta, run_meta_case
from procs import MULTI_LOOP_ENV, ServerProc, start_node
from reference import live_memcached

CORPUS = "meta"


class Pair:
    """The reference memcached (None where the transcripts stand in for it, or when ``env`` is
    given) and our node, started with the same arguments, stopped by PID."""

    def __init__(self, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.args, self.env = args, env
        self.ref: ServerProc | None = None
        if env is not None or not live_memcached():
            self.ours = start_node(*args, env=env)
            return
        with ThreadPoolExecutor(max_workers=2) as pool:
            ref_f, ours_f = pool.submit(start_reference, *args), pool.submit(start_node, *args)
            try:
                self.ref, self.ours = ref_f.result(), ours_f.result()
            except BaseException:
                for f in (ref_f, ours_f):
                    if f.exception() is None:
                        f.result().stop(signal.SIGKILL)
                raise

    def stop(self) -> None:
        if self.ref is not None:
            self.ref.stop(signal.SIGKILL)  # it holds nothing worth a slow clean stop
        self.ours.stop()

    def servers(self) -> list[ServerProc]:
        return [self.ours] if self.ref is None else [self.ref, self.ours]

    def alive(self) -> bool:
        return all(srv.proc.poll() is None for srv in self.servers())

    def replay(self, c: Case) -> tuple[list[bytes], list[bytes]]:
        """(reference replies, ours), both normalised; the reference's come from the
        transcript when no live reference runs."""
        if self.ref is None:
            return transcripts.expected(CORPUS, c.name), normalise_meta(
                replay_on(self.ours, c)
            )
        with ThreadPoolExecutor(max_workers=2) as pool:
            ref, ours = pool.submit(replay_on, self.ref, c), pool.submit(replay_on, self.ours, c)
            return normalise_meta(ref.result()), normalise_meta(ours.result())

    def flush(self) -> None:
        for srv in self.servers():
            flush(srv)


def replay_on(srv: ServerProc, c: Case) -> list[bytes]:
    """One case's raw replies from one server, on a new connection."""
    with srv.connect() as sock:
        return run_meta_case(sock, c)


@pytest.fixture(scope="module")
def shared() -> Iterator[list[Pair]]:
    holder = [Pair()]
    yield holder
    holder[0].stop()


@pytest.fixture(scope="module")
def multi_loop() -> Iterator[list[Pair]]:
    holder = [Pair(env=MULTI_LOOP_ENV)]
    yield holder
    holder[0].stop()


def shared_case(holder: list[Pair]) -> Pair:
    """The shared pair, restarted if a previous case took a server down, and flushed."""
    if not holder[0].alive():
        holder[0].stop()
        holder[0] = Pair(holder[0].args, holder[0].env)
    holder[0].flush()
    return holder[0]


def compare(c: Case, pair: Pair) -> None:
    ref, ours = pair.replay(c)
    for i, (r, o) in enumerate(zip(ref, ours, strict=False)):
        assert o == r, f"step {i}:\n memcached: {r[:600]!r}\n ours:      {o[:600]!r}"
    assert len(ours) == len(ref)
    if pair.ref is not None:
        recorded = transcripts.expected(CORPUS, c.name)
        assert recorded == ref, f"the transcript is stale for {c.name}: {recorded!r} != {ref!r}"


CASES = META_CASES + OPS_CASES
SHARED_CASES = [c for c in CASES if not c.fresh and all(st.sentinel for st in c.steps)]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_meta_differential(c: Case, shared: list[Pair]) -> None:
    pair = Pair(c.server_args) if c.fresh else shared_case(shared)
    try:
        compare(c, pair)
    finally:
        if c.fresh:
            pair.stop()


@pytest.mark.parametrize("c", SHARED_CASES, ids=[c.name for c in SHARED_CASES])
def test_meta_differential_multi_loop(c: Case, multi_loop: list[Pair]) -> None:
    """The shared cases again, on a node with four event loops, against the transcript."""
    compare(c, shared_case(multi_loop))


def test_meta_corpus_matches_its_transcript() -> None:
    assert len(CASES) >= 142
    assert {c.name for c in CASES} == set(transcripts.load(CORPUS))


def test_metadump_order_and_cas_values_do_not_change_the_normalised_reply() -> None:
    """Two servers dump the same items in different LRU orders with their own CAS values: the
    normalised replies are equal (a background LRU thread reorders memcached's dump)."""
    a = b"key=k%2F2 exp=-1 la=5 cas=7 cls=1\nkey=k%3A1 exp=-1 la=5 cas=9 cls=1\nEND\r\n"
    b = b"key=k%3A1 exp=-1 la=6 cas=2 cls=1\nkey=k%2F2 exp=-1 la=6 cas=1 cls=1\nEND\r\n"
    assert normalise_meta([a]) == normalise_meta([b])
    assert normalise_meta([a]) != normalise_meta([a.replace(b"cas=9", b"cas=7")])

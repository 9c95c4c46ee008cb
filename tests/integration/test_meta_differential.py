"""Meta commands and operational commands (lru_crawler, stats detail), differentially: each
case goes to real memcached and to our node, and the replies must be equal after
``normalise_meta`` (CAS values, TTL ticks, metadump times). Cases that depend only on their own
keys share one pair of servers (flushed between cases); the others get a fresh pair each.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from differential_corpus import Case, start_reference
from meta_corpus import META_CASES, OPS_CASES, normalise_meta, run_meta_case
from procs import ServerProc, have_memcached, start_node

if not have_memcached():
    pytest.skip("memcached is not installed", allow_module_level=True)


class Pair:
    """Real memcached and our node, started with the same arguments, stopped by PID."""

    def __init__(self, args: tuple[str, ...] = ()) -> None:
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
        self.ref.stop(signal.SIGKILL)  # it holds nothing worth a slow clean stop
        self.ours.stop()

    def alive(self) -> bool:
        return self.ref.proc.poll() is None and self.ours.proc.poll() is None

    def replay(self, c: Case) -> tuple[list[bytes], list[bytes]]:
        def one(srv: ServerProc) -> list[bytes]:
            with srv.connect() as sock:
                return run_meta_case(sock, c)

        with ThreadPoolExecutor(max_workers=2) as pool:
            ref, ours = pool.submit(one, self.ref), pool.submit(one, self.ours)
            return ref.result(), ours.result()

    def flush(self) -> None:
        for srv in (self.ref, self.ours):
            with srv.connect() as s:
                s.sendall(b"flush_all\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    reply += chunk


@pytest.fixture(scope="module")
def shared() -> Iterator[list[Pair]]:
    holder = [Pair()]
    yield holder
    holder[0].stop()


CASES = META_CASES + OPS_CASES


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_meta_differential(c: Case, shared: list[Pair]) -> None:
    if c.fresh:
        pair = Pair(c.server_args)
    else:
        if not shared[0].alive():
            shared[0].stop()
            shared[0] = Pair()
        pair = shared[0]
        pair.flush()
    try:
        raw_ref, raw_ours = pair.replay(c)
    finally:
        if c.fresh:
            pair.stop()
    ref, ours = normalise_meta(raw_ref), normalise_meta(raw_ours)
    for i, (r, o) in enumerate(zip(ref, ours, strict=False)):
        assert o == r, f"step {i}:\n memcached: {r[:600]!r}\n ours:      {o[:600]!r}"
    assert len(ours) == len(ref)

"""Differential tests: replay every corpus case on memcached 1.6.18 and on our node, compare.

The reference is the pinned memcached (``reference.py``): live where ``memcached -V`` says
1.6.18, and its recorded replies (``transcripts.py``) elsewhere or with ``REFERENCE=transcripts``.
Live runs also check that the transcript still holds each reply. Set ``DIFF_OURS=memcached`` to
put a second memcached in our node's place: every case must then pass, which proves that reading
and normalisation are deterministic and that a failure against our node is a real difference
rather than harness noise.

The cases that share one server run a second time against a node with four event loops
(``MULTI_LOOP_ENV``), compared with the recorded replies, so the hand-offs between loops are
exercised by the same byte-for-byte corpus.
"""

from __future__ import annotations

import difflib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pytest
import transcripts
from differential_corpus import CASES, Case, flush, normalise, run_case, start_reference
from procs import MULTI_LOOP_ENV, ServerProc, start_node
from reference import live_memcached, need_memcached

OURS_KIND = os.environ.get("DIFF_OURS", "node")
CORPUS = "classic"


def start_ours(*args: str) -> ServerProc:
    """Our node, or a second memcached when validating the harness itself."""
    if OURS_KIND == "memcached":
        return start_reference(*args)
    return start_node(*args)


def live() -> bool:
    """Compare against a running memcached (validating the harness always needs one)."""
    if OURS_KIND == "memcached":
        need_memcached()
        return True
    return live_memcached()


A = TypeVar("A")
B = TypeVar("B")


def _both(fn_ref: Callable[[], A], fn_ours: Callable[[], B]) -> tuple[A, B]:
    """Run two independent actions at once: quiet-period waits then cost one wait, not two."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.submit(fn_ref), pool.submit(fn_ours)
        return a.result(), b.result()


@dataclass
class Pair:
    """The reference memcached (None when the transcripts stand in for it) and the server
    under test, started with the same arguments."""

    ref: ServerProc | None
    ours: ServerProc
    args: tuple[str, ...]
    env: dict[str, str] | None = None  # added to our node's environment: only ours then runs

    @classmethod
    def start(cls, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Pair:
        if env is not None or not live():
            return cls(None, start_node(*args, env=env), args, env)
        with ThreadPoolExecutor(max_workers=2) as pool:
            ref_f, ours_f = pool.submit(start_reference, *args), pool.submit(start_ours, *args)
            try:
                ref, ours = ref_f.result(), ours_f.result()
            except BaseException:
                # Never leave the half that did start running behind a failed start.
                for f in (ref_f, ours_f):
                    if f.exception() is None:
                        f.result().stop(signal.SIGKILL)
                raise
        return cls(ref, ours, args)

    def stop(self) -> None:
        """Stop both at once; memcached gets SIGKILL because its SIGTERM/SIGINT stop lingers for
        about a second, which over ~50 fresh pairs would dominate the suite's runtime (it holds
        nothing worth a clean shutdown). Our node gets the ordinary SIGTERM."""
        ours_sig = signal.SIGKILL if OURS_KIND == "memcached" else signal.SIGTERM
        ref = self.ref
        _both(lambda: ref and ref.stop(signal.SIGKILL), lambda: self.ours.stop(ours_sig))

    def servers(self) -> list[ServerProc]:
        return [self.ours] if self.ref is None else [self.ref, self.ours]

    def alive(self) -> bool:
        return all(srv.proc.poll() is None for srv in self.servers())

    def flush(self) -> None:
        """Forget the previous case's items (on its own connection, so no case sees it)."""
        for srv in self.servers():
            flush(srv)


@pytest.fixture(scope="module")
def shared_pair() -> Iterator[list[Pair]]:
    """One pair for all cases that only depend on their own keys; a one-slot list so a case can
    replace a pair that a crashing server took down without failing every later case."""
    holder = [Pair.start()]
    yield holder
    holder[0].stop()


@pytest.fixture(scope="module")
def multi_loop_node() -> Iterator[list[Pair]]:
    """Our node alone with four event loops, for the second pass (compared with transcripts)."""
    holder = [Pair.start(env=MULTI_LOOP_ENV)]
    yield holder
    holder[0].stop()


def shared_case(holder: list[Pair]) -> Pair:
    """The shared pair, restarted if a previous case took a server down, and flushed."""
    if not holder[0].alive():
        holder[0].stop()
        holder[0] = Pair.start(holder[0].args, holder[0].env)
    holder[0].flush()
    return holder[0]


def _replay(srv: ServerProc, c: Case) -> list[bytes]:
    with srv.connect() as sock:
        if any(b"stats conns" in chunk for st in c.steps for chunk in st.chunks):
            _settle_connections(sock)
        return run_case(sock, c)


def _settle_connections(sock: socket.socket, timeout: float = 3.0) -> None:
    """Wait until the server has reaped the readiness probe's connection: a server that is
    slow to notice that close (a loaded machine) would list it in ``stats conns``."""
    deadline = time.monotonic() + timeout
    while True:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(65536)
        current = int(reply.split(b"STAT curr_connections ")[1].split(b"\r\n")[0])
        if current <= 2 or time.monotonic() > deadline:  # the listener and this connection
            return
        time.sleep(0.02)


def _show(b: bytes, limit: int = 700) -> str:
    """Head and tail of a reply: the tail shows how it ended (sentinel, <EOF>, cut short)."""
    text = repr(b)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} ...({len(b)} bytes)... {text[-limit // 2 :]}"


def _describe(c: Case, ref: list[bytes], ours: list[bytes]) -> str:
    lines = [f"case {c.name}: replies differ after normalisation"]
    for i, st in enumerate(c.steps):
        lines.append(f"step {i} request: {_show(b''.join(st.chunks), 300)}")
        r = ref[i] if i < len(ref) else b"<no step>"
        o = ours[i] if i < len(ours) else b"<no step>"
        if r != o:
            at = next((k for k in range(min(len(r), len(o))) if r[k] != o[k]), min(len(r), len(o)))
            lines.append(f"  first difference at byte {at}")
        lines.append(f"  memcached: {_show(r)}")
        lines.append(f"  ours:      {_show(o)}")
        if r != o and max(len(r), len(o)) > 300:
            # Long replies (stats blocks, big values) are unreadable as one repr: add a line diff.
            diff = difflib.unified_diff(
                [repr(x) for x in r.split(b"\n")],
                [repr(x) for x in o.split(b"\n")],
                "memcached",
                "ours",
                lineterm="",
                n=1,
            )
            lines.extend("  | " + d[:200] for d in list(diff)[:60])
    return "\n".join(lines)


# Where we differ from memcached on purpose. Each entry says why; the test still runs and must
# keep failing (strict), so a change in either server is noticed.
KNOWN_DIFFERENCES = {
    "binary_protocol_noop": "the binary protocol is not supported: the connection is closed",
    "binary_protocol_get_miss": "the binary protocol is not supported: the connection is closed",
}


def _param(c: Case) -> object:
    # Known differences are our node's; a second memcached (DIFF_OURS=memcached) has none.
    why = KNOWN_DIFFERENCES.get(c.name) if OURS_KIND == "node" else None
    marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
    return pytest.param(c, id=c.name, marks=marks)


@pytest.mark.parametrize("c", [_param(c) for c in CASES])
def test_differential(c: Case, shared_pair: list[Pair]) -> None:
    """The node's reply to each corpus case equals memcached 1.6.18's, after normalisation."""
    pair = Pair.start(c.server_args) if c.fresh else shared_case(shared_pair)
    try:
        if pair.ref is None:
            ref, ours = transcripts.expected(CORPUS, c.name), normalise(
                _replay(pair.ours, c)
            )
        else:
            live_ref = pair.ref
            raw_ref, raw_ours = _both(lambda: _replay(live_ref, c), lambda: _replay(pair.ours, c))
            ref, ours = normalise(raw_ref), normalise(raw_ours)
    finally:
        if c.fresh:
            pair.stop()
    assert ours == ref, _describe(c, ref, ours)
    if pair.ref is not None:
        recorded = transcripts.expected(CORPUS, c.name)
        assert recorded == ref, "the transcript is stale: " + _describe(c, recorded, ref)


SHARED_CASES = [c for c in CASES if not c.fresh and all(st.sentinel for st in c.steps)]


@pytest.mark.parametrize("c", [_param(c) for c in SHARED_CASES])
def test_differential_multi_loop(c: Case, multi_loop_node: list[Pair]) -> None:
    """The same cases on a node that spreads connections over four event loops."""
    pair = shared_case(multi_loop_node)
    ours = normalise(_replay(pair.ours, c))
    ref = transcripts.expected(CORPUS, c.name)
    assert ours == ref, _describe(c, ref, ours)


def test_corpus_size() -> None:
    """Guard against cases being lost in a refactor: the corpus and its transcript agree, and
    the corpus holds what it held when this guard was last raised."""
    assert len(CASES) >= 394
    assert {c.name for c in CASES} == set(transcripts.load(CORPUS))

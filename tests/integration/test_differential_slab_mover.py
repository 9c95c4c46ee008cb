"""Differential page moves: ``slabs reassign`` must leave memcached's accounting.

After each move both servers must show the same pages per class (``total_pages``, used and free
chunks), the same global page pool (``slab_global_page_pool``), the same ``total_malloced``
(a move hands a page on, it never allocates or frees one), the same items and the same mover
counters; and every reply, values of moved items included, must be the same bytes. Moves go
to another class, to the global pool (``slabs reassign N 0``) and out of it again, with plain
items and with chunked ones (larger than slab_chunk_max), and the refusals (NOSPARE, BADCLASS,
SAME) are compared too.

Where the two differ by design (see ``storage/pagemover.py``): memcached empties a class's
oldest page and the node its last, so ``slab_reassign_rescues`` and ``_chunk_rescues`` (and
``total_items``, which counts a rescue as memcached relinks the item) are compared only for
moves whose source pages hold the same number of items on both: the first move out of a class
whose every page is half full. ``slab_reassign_evictions_nomem`` (the items that do not fit in
the pages left), the pages and the item counts are compared after every move; the values read
back are compared where no item was lost (which ones are lost differs).
Live only: there is no transcript of it (``need_memcached`` says why it skips).
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from differential_corpus import setcmd, start_reference
from procs import ServerProc, start_node
from reference import need_memcached
from test_ops import stats

ARGS = ("-m", "64", "-o", "slab_reassign,slab_automove=0")
SMALL = b"s" * 100  # class 4 (192-byte chunks, 5461 a page) with the keys below
PER_PAGE = 5461
HUGE = 600_000  # over slab_chunk_max (512 KB): a header, a 512 KB chunk and a remainder
# memcached relinks a rescued item, which counts in total_items: these move with the rescues
RESCUE_FIELDS = ("slab_reassign_rescues", "slab_reassign_chunk_rescues", "total_items")
STATS_FIELDS = ("slab_global_page_pool", "slabs_moved", "slab_reassign_running",
                "slab_reassign_evictions_nomem", "slab_reassign_busy_items", "curr_items",
                "bytes", "evictions")
ITEM_FIELDS = (":number", ":mem_requested", ":evicted", ":outofmemory")


def _small_key(i: int) -> bytes:
    return b"k:%06d" % i


def _huge_value(i: int) -> bytes:
    return (b"%03d" % i) * (HUGE // 3)


@dataclass
class Run:
    """One server's side of the script: its socket and what it answered, in order."""

    sock: socket.socket
    seen: list[tuple[str, object]]
    last: dict[str, int] = field(default_factory=dict)  # RESCUE_FIELDS at the last snapshot

    def ask(self, data: bytes, ends: tuple[bytes, ...] = (b"\r\n",)) -> bytes:
        self.sock.sendall(data)
        buf = b""
        deadline = time.monotonic() + 30
        while not buf.endswith(ends):
            assert time.monotonic() < deadline, buf[-200:]
            chunk = self.sock.recv(1 << 20)
            assert chunk, buf[-200:]
            buf += chunk
        return buf

    def quiet(self, data: bytes) -> None:
        """noreply commands, then a round trip so they have all run."""
        self.sock.sendall(data)
        assert self.ask(b"mn\r\n", (b"MN\r\n",)) == b"MN\r\n"

    def snap(self, tag: str, rescues: bool = True) -> None:
        slabs = stats(self.sock, b"slabs")
        items = stats(self.sock, b"items")
        general = stats(self.sock)
        got = dict(slabs)
        got.update({k: v for k, v in items.items() if k.endswith(ITEM_FIELDS)})
        got.update({k: general[k] for k in STATS_FIELDS})
        now = {k: int(general[k]) for k in RESCUE_FIELDS}
        if rescues:  # what this step added (the totals carry earlier moves' differences)
            got.update({f"{k} added": str(v - self.last.get(k, 0)) for k, v in now.items()})
        self.last = now
        self.seen.append((tag, got))

    def reassign(self, src: int, dst: int, rescues: bool = True) -> None:
        """``slabs reassign``; when it is taken, wait for the move to finish, then snapshot."""
        before = int(stats(self.sock)["slabs_moved"])
        reply = self.ask(b"slabs reassign %d %d\r\n" % (src, dst))
        self.seen.append((f"reassign {src} {dst}", reply))
        if reply == b"OK\r\n":
            deadline = time.monotonic() + 20
            while True:
                st = stats(self.sock)
                if int(st["slabs_moved"]) > before and st["slab_reassign_running"] == "0":
                    break
                assert time.monotonic() < deadline, st
                time.sleep(0.05)
        self.snap(f"after reassign {src} {dst}", rescues)


def script(run: Run) -> None:
    """Deterministic: the same bytes to both servers, automove off so only requests move."""
    # Class 4: 3 full pages, then every other key deleted, so every page is half full.
    n = 3 * PER_PAGE
    run.quiet(b"".join(b"set %s 0 0 100 noreply\r\n%s\r\n" % (_small_key(i), SMALL)
                       for i in range(n)))
    run.quiet(b"".join(b"delete %s noreply\r\n" % _small_key(i) for i in range(0, n, 2)))
    run.snap("filled")
    run.reassign(4, 20)  # to an empty class: the first move, comparable rescues
    got = run.ask(b"get " + b" ".join(_small_key(i) for i in range(1, n, 97)) + b"\r\n",
                  (b"END\r\n",))
    run.seen.append(("small values after the move", got))
    # to the global pool: the two pages left hold more than one can, so items are lost (the
    # same number on both; which ones differs, see the module docstring)
    run.reassign(4, 0, rescues=False)
    for src, dst in ((0, 9), (-1, 0), (4, 4), (4, 64), (64, 4), (-2, 4), (4, -1)):
        run.reassign(src, dst)  # refused: NOSPARE, BADCLASS, SAME
    run.seen.append(("a new class takes the pooled page",
                     run.ask(setcmd(b"newclass", b"n" * 1500))))
    run.snap("after the pool was drained")  # a set counts in total_items: compared
    # Chunked items: 20 of them (class 39 gets 10 pages), every other one deleted.
    for i in range(20):
        run.seen.append((f"set huge {i}", run.ask(setcmd(b"huge:%d" % i, _huge_value(i)))))
    run.quiet(b"".join(b"delete huge:%d noreply\r\n" % i for i in range(0, 20, 2)))
    run.snap("chunked items")
    run.reassign(39, 0)  # each of its pages holds one live data chunk: comparable rescues
    run.reassign(39, 0, rescues=False)
    run.reassign(0, 12, rescues=False)  # out of the pool to a class with no page
    run.reassign(39, 12, rescues=False)
    got = run.ask(b"get " + b" ".join(b"huge:%d" % i for i in range(20)) + b"\r\n",
                  (b"END\r\n",))
    run.seen.append(("chunked values after the moves", got))
    run.quiet(b"".join(b"set after:%d 0 0 300 noreply\r\n%s\r\n" % (i, b"a" * 300)
                       for i in range(3000)))
    run.snap("after more sets")


def _replay(start: Callable[..., ServerProc]) -> list[tuple[str, object]]:
    srv = start(*ARGS)
    try:
        with srv.connect(timeout=30) as sock:
            run = Run(sock, [])
            script(run)
            return run.seen
    finally:
        srv.stop(signal.SIGKILL if start is start_reference else signal.SIGTERM)


def _differences(ref: list[tuple[str, object]], ours: list[tuple[str, object]]) -> list[str]:
    out = []
    for (tag, want), (_, got) in zip(ref, ours, strict=True):
        if want == got:
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            keys = sorted(set(want) | set(got))
            diff = [f"{k}: memcached {want.get(k)} ours {got.get(k)}"
                    for k in keys if want.get(k) != got.get(k)]
            out.append(f"{tag}:\n  " + "\n  ".join(diff))
        else:
            out.append(f"{tag}: memcached {want!r:.200} ours {got!r:.200}")
    return out


def test_page_moves_keep_memcacheds_accounting() -> None:
    need_memcached()
    ref = _replay(start_reference)
    ours = _replay(start_node)
    problems = _differences(ref, ours)
    assert not problems, "\n".join(problems)
    # the script did what it is for: pages moved out of both classes, to and from the pool,
    # and the first moves rescued and the chunked one rescued chunks
    final = ref[-1][1]
    assert isinstance(final, dict)
    assert final["slabs_moved"] == "6" and int(final["slab_reassign_evictions_nomem"]) > 0
    first = next(v for tag, v in ref if tag == "after reassign 4 20")
    chunked = next(v for tag, v in ref if tag == "after reassign 39 0")  # the first of two
    assert isinstance(first, dict) and isinstance(chunked, dict)
    assert int(first["slab_reassign_rescues added"]) == PER_PAGE // 2
    assert int(chunked["slab_reassign_chunk_rescues added"]) > 0
    assert {tag for tag, v in ref if v == b"NOSPARE source class has no spare pages\r\n"}
    assert int(final["total_malloced"]) > 10 * 1024 * 1024

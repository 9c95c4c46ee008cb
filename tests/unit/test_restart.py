"""Restoring a kept ``-e`` segment (storage/restart.py) on real stores and real files.

What a restart must do: find every item stored by another interpreter (whose ``hash()`` differs),
keep the segment.py rule (only ``keep`` areas keep their bytes), give back a page that a stopped
page move had fenced off, drop a large item whose chunk list is gone without leaking its chunks,
and treat a damaged ``.meta`` file as no clean stop at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from memcache_server.commands.context import new_store
from memcache_server.config import ServerConfig
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.pagemover import PageMove
from memcache_server.storage.restart import (
    CORRUPT,
    FAILED,
    LAYOUT_VERSION,
    MISSING,
    MemoryFile,
)
from memcache_server.storage.segment import ALIGN, Segment
from memcache_server.storage.slabclass import DATA_CHUNK
from memcache_server.storage.store import Store
from tests.unit.test_pagemover import check_free_list, class_of, fill
from tests.unit.test_store import T0, get, put

ROOT = Path(__file__).resolve().parent.parent.parent


def config(path: Path, **kw: object) -> ServerConfig:
    return ServerConfig(memory_limit_mb=8, memory_file=str(path), **kw)  # type: ignore[arg-type]


def reopen(store: Store, path: Path) -> Store:
    """Save as a clean stop does, and build the store again from the file."""
    assert store.memory_file is not None
    store.memory_file.save(store, T0 - 2)
    return new_store(config(path), ManualClock(T0))


def test_items_stored_by_another_interpreter_are_found(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    child = textwrap.dedent(f"""
        from memcache_server.commands.context import new_store
        from memcache_server.config import ServerConfig
        from memcache_server.storage.clock import ManualClock
        from memcache_server.storage.store import Mode
        store = new_store(ServerConfig(memory_limit_mb=8, memory_file={str(path)!r}),
                          ManualClock({T0}))
        for i in range(5000):
            store.store(Mode.SET, b"key%d" % i, i, 0, b"value%d\\r\\n" % i)
        store.memory_file.save(store, {T0 - 2})
        print(hash(b"key0"))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) != hash(b"key0")  # the index it left is useless here
    store = new_store(config(path), ManualClock(T0))
    assert store.curr_items == 5000
    for i in range(5000):
        assert get(store, b"key%d" % i) == b"value%d" % i
    assert get(store, b"key5000") is None


def test_only_areas_carved_to_keep_keep_their_bytes(tmp_path: Path) -> None:
    path = str(tmp_path / "seg")
    first = Segment(4 * ALIGN, path)
    first.carve(ALIGN, keep=True)[1][:3] = b"old"
    first.carve(ALIGN)[1][:3] = b"old"
    first.close()
    again = Segment(4 * ALIGN, path, keep=True)
    assert bytes(again.carve(ALIGN, keep=True)[1][:3]) == b"old"
    assert bytes(again.carve(ALIGN)[1][:3]) == bytes(3)  # re-initialised, as on a new segment
    again.close()
    fresh = Segment(4 * ALIGN, path)  # without keep the file is emptied
    assert bytes(fresh.carve(ALIGN, keep=True)[1][:3]) == bytes(3)
    fresh.close()


def test_a_page_move_cut_short_by_the_stop_gives_its_page_back(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    store = new_store(config(path), ManualClock(T0))
    keys = fill(store, 25_000)
    cid = class_of(store, 100)
    move = PageMove(store, cid, 0)
    assert move.begin()
    move.step(50)  # the stop comes in the middle of the move
    assert store.classes[cid].kill_lo != 1 << 62
    store = reopen(store, path)
    c = store.classes[cid]
    assert c.kill_lo == 1 << 62
    check_free_list(store, cid)
    alive = [k for k in keys if get(store, k) is not None]
    assert len(alive) == store.curr_items
    assert put(store, b"new", b"v" * 100) == 0


def test_a_large_item_whose_chain_is_broken_is_dropped_and_its_chunks_freed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache"
    store = new_store(config(path), ManualClock(T0))
    assert put(store, b"small", b"s" * 10) == 0
    assert put(store, b"big", os.urandom(700 * 1024)) == 0
    data = [(c, s) for c in store.classes[1:] for s in c.all_slots()
            if c.u1[8 * s + 41] & DATA_CHUNK]
    assert len(data) >= 2
    c, s = data[-1]
    c.u1[8 * s + 41] = 0  # as if one data chunk of the chain were lost
    assert store.memory_file is not None
    store.memory_file.save(store, T0 - 2)
    store = new_store(config(path), ManualClock(T0))
    assert get(store, b"small") == b"s" * 10
    assert get(store, b"big") is None
    assert store.curr_items == 1
    for cl in store.classes[1:]:
        check_free_list(store, cl.cid)
    assert sum(cl.used_chunks for cl in store.classes[1:]) == 1  # only "small" holds a chunk


def test_a_large_item_comes_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    store = new_store(config(path), ManualClock(T0))
    big = os.urandom(900 * 1024)
    assert put(store, b"big", big, flags=3) == 0
    store = reopen(store, path)
    assert get(store, b"big") == big


def test_a_damaged_meta_file_means_no_clean_stop(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    meta = Path(str(path) + ".meta")
    mf = MemoryFile(str(path), {"maxbytes": "8388608"}, 4096)
    for text, notes in (
        ("garbage\n", [CORRUPT, FAILED]),
        ("Tmain\nKmaxbytes 8388608\n", [MISSING, FAILED]),
        (
            f"Tmain\nKmaxbytes 8388608\nKsegment_layout {LAYOUT_VERSION}\nKsegment_bytes 4096\n",
            [MISSING, FAILED],
        ),
    ):
        meta.write_text(text)
        assert mf.load() == (None, notes)
        assert not meta.exists()  # read once, whatever it held


def test_items_another_process_stored_in_the_shared_store_come_back(tmp_path: Path) -> None:
    """Under the process model the supervisor saves what worker processes stored."""
    path = tmp_path / "cache"
    store = new_store(config(path), ManualClock(T0))
    store.share()  # the lock every process mapping the segment takes
    assert put(store, b"parent", b"p") == 0
    pid = os.fork()
    if pid == 0:  # a worker process: store through the same segment, then go
        ok = all(put(store, b"child%d" % i, b"c%d" % i) == 0 for i in range(100))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store = reopen(store, path)
    assert store.curr_items == 101
    assert get(store, b"parent") == b"p"
    assert all(get(store, b"child%d" % i) == b"c%d" % i for i in range(100))

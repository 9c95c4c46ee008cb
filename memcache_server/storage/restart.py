"""The restartable cache (``-e PATH``): memcached's ``PATH.meta`` file, and bringing items back.

memcached's design, kept: item memory is the mapped file itself (``Segment`` with a path), and
at a clean stop the node writes ``PATH.meta``, the settings that fix how the memory is carved
and the state that lives outside it. At start the node reads that file and removes it at once,
so its presence is the clean-stop marker: a node that was killed (SIGKILL, a crash) leaves none
and the next one starts empty, as does one whose layout settings differ. The messages are
memcached 1.6.18's, word for word; a corrupt file, which memcached aborts on, only empties the
cache here (it is a cache).

The format is memcached's: ``T<tag>`` opens a section, ``K<key> <value>`` lines follow. Section
``main`` holds memcached's layout settings in its order, then this node's own: the segment
layout version (bump ``LAYOUT_VERSION`` when an area's meaning changes) and the segment size
(any added area changes it, so a file carved by another build is never reused). Everything else
an item needs, the chain of a large item's data chunks included, is in the segment.

What comes back is segment.py's rule: the areas carved with ``keep``. Everything else reads as
zeros and its owner re-initialises it. The derived structures (key index, LRUs, free lists,
counts) are rebuilt from the per-chunk metadata by the repair pass (``repair.py``), the same
one that recovers the store after a worker died holding its lock: the index must be rebuilt
anyway, since the hashes in it were Python's ``hash()`` of another process, and the pass drops
a large item whose chain is not whole. Counters start at zero.

Time: items keep absolute unix times (expiry, last access, flush), so a TTL keeps its instant
across a stop and an item that expired meanwhile is dead on its first read. The process start
time is restored as memcached restores it (``uptime`` runs on; absolute exptimes at or before the
first start stay expired).

Bounds: ``PATH.meta`` is read up to ``META_MAX_BYTES``; a larger one counts as corrupt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from memcache_server.storage.items import Items
from memcache_server.storage.repair import repair
from memcache_server.storage.segment import MemoryFileError

__all__ = ["MemoryFile", "Saved", "restore", "LAYOUT_VERSION", "META_SUFFIX"]

LAYOUT_VERSION = 4  # 4: item headers in their chunks (3: a data chunk's blen is its bytes)
META_SUFFIX = ".meta"
# Largest PATH.meta read back (a few dozen short lines are expected).
META_MAX_BYTES = 1 << 20

NO_META = "[restart] no metadata save file, starting with a clean cache"
INCOMPATIBLE = "[restart] restart incompatible due to setting for [{}] [old value: {}]"
MISSING = "[restart] missing some metadata lines"
CORRUPT = "[restart] corrupt metadata file"
FAILED = "[restart] failed to validate metadata, starting with a clean cache"


@dataclass(frozen=True, slots=True)
class Saved:
    """What a clean stop left outside the segment: the process start time."""

    process_started: int


class MemoryFile:
    """The ``-e`` file and its ``.meta`` companion, for a store of one layout."""

    __slots__ = ("path", "meta_path", "layout")

    def __init__(self, path: str, settings: Mapping[str, str], segment_bytes: int) -> None:
        self.path = path
        self.meta_path = path + META_SUFFIX
        self.layout = {
            **settings,
            "segment_layout": str(LAYOUT_VERSION),
            "segment_bytes": str(segment_bytes),
        }

    def load(self) -> tuple[Saved | None, list[str]]:
        """Read and remove ``PATH.meta``: what to restore (None: start empty), and the lines
        to print. Raises ``MemoryFileError`` when the file itself cannot be opened (first, as
        memcached opens it before reading its metadata)."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise MemoryFileError(f"failed to open file for mmap: {exc.strerror}") from None
        try:
            with open(self.meta_path, "rb") as f:
                raw = f.read(META_MAX_BYTES + 1)
        except FileNotFoundError:
            return None, [NO_META]
        except OSError:
            return None, [CORRUPT, FAILED]
        try:
            os.unlink(self.meta_path)  # read once: a crash from here on must not reuse it
        except OSError:
            pass
        return self._check(raw)

    def _check(self, raw: bytes) -> tuple[Saved | None, list[str]]:
        sections = _parse(raw) if len(raw) <= META_MAX_BYTES else None
        if sections is None or "main" not in sections:
            return None, [CORRUPT, FAILED]
        main = sections["main"]
        for key, want in self.layout.items():
            if key not in main:
                return None, [MISSING, FAILED]
            if main[key] != want:
                return None, [INCOMPATIBLE.format(key, main[key]), MISSING, FAILED]
        try:
            started = int(main["process_started"])
        except (KeyError, ValueError):
            return None, [MISSING, FAILED]
        return Saved(started), []

    def save(self, store: Items, process_started: int) -> None:
        """Write ``PATH.meta`` for a clean stop. Takes the store's lock and keeps it: nothing
        may change the segment after its state was written, and the process is exiting."""
        store.lock.acquire()
        lines = ["Tmain"]
        lines += [f"K{key} {value}" for key, value in self.layout.items()]
        lines.append(f"Kprocess_started {process_started}")
        lines.append(f"Kstop_time {int(time.time())}")
        store.segment.map.flush()  # a no-op on tmpfs; on a disk file, the pages reach it
        tmp = self.meta_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.meta_path)  # whole or absent, never half written


def _parse(raw: bytes) -> dict[str, dict[str, str]] | None:
    """memcached's T/K lines as {tag: {key: value}}; None when a line is neither."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        if line.startswith("T"):
            current = sections.setdefault(line[1:], {})
        elif line.startswith("K") and current is not None:
            key, _, value = line[1:].partition(" ")
            current[key] = value
        else:
            return None
    return sections


def restore(store: Items, saved: Saved) -> int:
    """Bring a kept segment's items back into this process: un-fence a page a stopped move had
    fenced, then rebuild every derived structure from the chunk metadata (``repair``), which
    drops a large item whose chain is not whole and frees chunks no item owns. Returns the
    items dropped that way. O(slots) for the scan plus O(items) to hash every key again."""
    for c in store.classes:
        c.relist_fenced()
    return repair(store).broken

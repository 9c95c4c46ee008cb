"""Run-time settings and requests every process of a node must see: words of the segment.

Why: under a GIL the node serves from several worker processes forked from a supervisor, and
the background threads (LRU crawler, slab rebalancer) run in the supervisor. A command that
changes a setting (``verbosity``, ``lru_crawler sleep``, ``slabs automove``) or asks for work
(``lru_crawler crawl``, ``slabs reassign``, ``shutdown``) runs in whichever worker read it, so
what it changes must live in the segment, not in that process's objects. Each holder below
(the node's ``NodeSettings``, the ``Crawler``, the ``Rebalancer``) keeps ``words``, a view of
this one area, and reads its settings through ``segment.Word`` descriptors, so the code that
uses them reads like plain attributes. None of these are on the request path.

The indexes are named here, once, so two holders never use the same word. A holder built
without a node (a unit test's crawler) gets a private area of the same shape.
"""

from __future__ import annotations

from typing import Any

from memcache_server.storage.segment import Word

__all__ = ["NodeSettings", "RealWord", "private_words", "SETTINGS_BYTES"]

SETTINGS_WORDS = 64  # the area's size in words, with room to spare
SETTINGS_BYTES = SETTINGS_WORDS * 8

# node-wide (NodeSettings)
S_VERBOSITY, S_STOPPING, S_STOP_REQUESTED, S_STOP_GRACEFUL = 0, 1, 2, 3
# the LRU crawler (storage/crawler.py)
S_CRAWLER_ENABLED, S_CRAWLER_SLEEP, S_CRAWLER_TOCRAWL = 8, 9, 10
S_CRAWLER_RUNNING, S_CRAWLER_STARTS = 11, 12
S_CRAWL_PENDING, S_CRAWL_CLASSES, S_CRAWL_TOCRAWL = 13, 14, 15  # a `lru_crawler crawl` request
# the slab rebalancer (storage/rebalancer.py)
S_AUTOMOVE, S_AUTOMOVE_RATIO, S_MOVING = 24, 25, 26
S_REASSIGN_PENDING, S_REASSIGN_SRC, S_REASSIGN_DST, S_REASSIGN_PICK = 27, 28, 29, 30


def private_words() -> memoryview:
    """An area of the settings' shape that only this object sees."""
    return memoryview(bytearray(SETTINGS_BYTES)).cast("q")


class RealWord:
    """Like ``segment.Word`` for a float: word ``index`` read as a double (``obj.reals``, the
    same area cast to ``d``)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, obj: Any, owner: Any = None) -> float:
        reals: memoryview = obj.reals
        return float(reals[self.index])

    def __set__(self, obj: Any, value: float) -> None:
        obj.reals[self.index] = value


class NodeSettings:
    """The node-wide settings and requests: verbosity, ``stats detail`` on/off, a stop
    request (``shutdown`` from any worker; the supervisor's wait loop reads it)."""

    __slots__ = ("words",)

    verbosity = Word(S_VERBOSITY)
    stop_requested = Word(S_STOP_REQUESTED)  # how many stop requests were made
    stop_graceful = Word(S_STOP_GRACEFUL)
    # 1 once the supervisor stops its workers: a worker forked just before (its stop signal
    # may land while it still ignores signals, as its spawner does) reads it once it listens
    stopping = Word(S_STOPPING)

    def __init__(self, words: memoryview | None = None) -> None:
        self.words = words if words is not None else private_words()

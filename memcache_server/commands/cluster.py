"""What a cache node knows of its cluster: the document it serves, and its discovery counters.

Every cache node answers ``config get cluster`` and the legacy ``get AmazonElastiCache:cluster``
with the document it holds (clients poll cache nodes round-robin, not only the endpoint).

The document and the discovery counters live in a bounded area of the node's shared segment
(``CLUSTER_AREA_BYTES``: a header of words, then at most ``MAX_DOCUMENT`` bytes), because the
membership thread runs in the supervisor and a ``config set`` in any worker process, while
every worker serves what was stored last. Writers take a lock that is exclusive across
processes and bump a sequence word around the copy (odd while writing); a reader copies the
bytes and retries if the sequence moved, then keeps the parsed reply until the sequence
changes again, so the read path is one word compare and never a lock.

``config set``/``config delete`` and writes to the legacy key are refused unless the operator
started the node with ``--allow-config-writes``: nobody on the data port may repoint the cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server.protocol import constants as C
from memcache_server.protocol.document import (
    BAD_DOCUMENT,
    CONFIG_WRITES_REFUSED,
    LEGACY_READ_ONLY,
    MAX_DOCUMENT,
    NO_DOCUMENT,
    UNKNOWN_CONFIG_KEY,
    ClusterDocument,
    DocumentError,
    config_reply,
    legacy_value,
    parse_document,
    supersedes,
)
from memcache_server.storage.seglock import SegmentLock
from memcache_server.storage.segment import Word

if TYPE_CHECKING:
    from memcache_server.commands.session import Session

__all__ = [
    "ClusterView",
    "ViewCounters",
    "CLUSTER_AREA_BYTES",
    "CONFIG_WRITES_REFUSED",
    "LEGACY_READ_ONLY",
    "CLUSTER_HANDLERS",
]


# (document, raw bytes as served, whole `config get cluster` reply)
_Held = tuple[ClusterDocument | None, bytes, bytes]
_EMPTY: _Held = (None, b"", NO_DOCUMENT)

# The shared area: header words, then the document's bytes.
W_SEQ, W_LENGTH, W_FLAGS, W_COUNTERS = 0, 1, 2, 3  # W_LENGTH holds len + 1 (0: no document)
HEADER_BYTES = 128
CLUSTER_AREA_BYTES = HEADER_BYTES + MAX_DOCUMENT
READ_TRIES = 10_000  # copies a reader attempts while writers keep moving the sequence


class ViewCounters:
    """Words of the shared area. The membership thread writes the first six; workers count
    ``config_requests`` under the view's lock (discovery requests are rare, a lock is cheap)."""

    __slots__ = ("words",)

    joins = Word(W_COUNTERS)
    leaves = Word(W_COUNTERS + 1)
    removals = Word(W_COUNTERS + 2)
    heartbeats = Word(W_COUNTERS + 3)
    heartbeat_failures = Word(W_COUNTERS + 4)
    config_updates = Word(W_COUNTERS + 5)
    config_requests = Word(W_COUNTERS + 6)

    def __init__(self, words: memoryview) -> None:
        self.words = words


class ClusterView:
    """The cluster document a cache node serves."""

    def __init__(
        self,
        allow_writes: bool = False,
        member: bool = False,
        area: memoryview | None = None,
        lock: threading.Lock | SegmentLock | None = None,
    ) -> None:
        """``area`` (``CLUSTER_AREA_BYTES`` of the segment) and ``lock`` (exclusive across the
        processes sharing it) make the view node-wide; without them it is this process's."""
        self.allow_writes = allow_writes
        # refuse storage commands to the legacy key (read on the set path: a plain attribute)
        self.legacy_read_only = not allow_writes
        # a member (started with --join) shows its cluster counters in `stats`
        self.member = member
        if area is None:
            area = memoryview(bytearray(HEADER_BYTES + MAX_DOCUMENT))
        self.words = area[:HEADER_BYTES].cast("q")
        self.data = area[HEADER_BYTES:CLUSTER_AREA_BYTES]
        self.counters = ViewCounters(self.words)
        # more `stats` fields from the membership side (a --warm hand-over's progress), by name
        self.extra_stats: dict[str, Callable[[], list[tuple[str, object]]]] = {}
        self._seen: tuple[int, _Held] = (0, _EMPTY)  # (sequence, what it held then)
        self._lock = lock if lock is not None else threading.Lock()

    # ------------------------------------------------------------------ the shared copy

    @property
    def _held(self) -> _Held:
        """What the area holds now: the cached reply while the sequence word is unchanged."""
        seen = self._seen
        if self.words[W_SEQ] == seen[0]:
            return seen[1]
        w = self.words
        for _ in range(READ_TRIES):
            seq = int(w[W_SEQ])
            if seq & 1:
                continue  # a writer is copying; it holds its lock only for the copy
            n = int(w[W_LENGTH]) - 1
            flags = int(w[W_FLAGS])
            raw = bytes(self.data[: max(n, 0)])
            if w[W_SEQ] == seq:
                break
        else:  # a writer died mid-copy: serve what was read last until the next write
            return seen[1]
        held = _EMPTY if n < 0 else (parse_document(raw), raw, config_reply(raw, flags))
        self._seen = (seq, held)
        return held

    def _store(self, held: _Held, flags: int = 0) -> None:
        """Publish ``held`` (the caller holds the lock; the document fits the area)."""
        w = self.words
        raw = held[1]
        w[W_SEQ] += 2 if w[W_SEQ] & 1 else 1  # odd: copying (even past a writer that died)
        self.data[: len(raw)] = raw
        w[W_LENGTH] = len(raw) + 1 if held[0] is not None else 0
        w[W_FLAGS] = flags
        w[W_SEQ] += 1
        self._seen = (int(w[W_SEQ]), held)

    # ------------------------------------------------------------------ reads (worker threads)

    @property
    def document(self) -> ClusterDocument | None:
        return self._held[0]

    def config_reply(self, args: list[bytes]) -> bytes:
        """``config <args...>``: get answers the document; set/delete only if allowed."""
        if not args:
            return C.ERROR
        sub = args[0]
        if sub == b"get":
            if len(args) != 2:
                return C.ERROR
            with self._lock:
                self.counters.config_requests += 1
            return self._held[2] if args[1] == b"cluster" else C.END
        if sub == b"set" and len(args) == 6:  # the framer's fixed shape, block last
            noreply = args[4] == b"noreply"
            reply = self._config_set(args[1], args[2], args[5]) if self.allow_writes else None
            return b"" if noreply else (reply or CONFIG_WRITES_REFUSED)
        if sub == b"delete" and len(args) in (2, 3):
            noreply = len(args) == 3 and args[2] == b"noreply"
            if not self.allow_writes:
                return b"" if noreply else CONFIG_WRITES_REFUSED
            reply = self._config_delete(args[1])
            return b"" if noreply else reply
        return C.ERROR

    def legacy_value_into(self, key: bytes, out: bytearray) -> bool:
        """On a get miss for ``AmazonElastiCache:cluster``: append the document as an item
        (flags 0). False when the node holds no document (the get stays a miss)."""
        doc, raw, _ = self._held
        if doc is None:
            return False
        with self._lock:
            self.counters.config_requests += 1
        out += legacy_value(key, raw)
        return True

    # ------------------------------------------------------------------ writes

    def offer(self, doc: ClusterDocument) -> bool:
        """A document pulled from the config node: taken if it supersedes the one held."""
        with self._lock:
            if not supersedes(doc, self._held[0]):
                return False
            raw = doc.encode()
            if len(raw) > MAX_DOCUMENT:
                return False
            self._store((doc, raw, config_reply(raw)))
            self.counters.config_updates += 1
            return True

    def _config_set(self, key: bytes, flags: bytes, block: bytes) -> bytes:
        """An operator-allowed ``config set cluster``: stored verbatim (the ElastiCache engine
        is a blob store; libmemcached's tests read back exactly what they wrote), but only a
        document our parser accepts, so the node never serves what a client could not use."""
        if key != b"cluster":
            return UNKNOWN_CONFIG_KEY
        if block[-2:] != b"\r\n":
            return C.BAD_CHUNK
        raw = block[:-2]
        try:
            doc = parse_document(raw)
        except DocumentError:
            return BAD_DOCUMENT
        if not doc.nodes:
            return BAD_DOCUMENT
        with self._lock:
            self._store((doc, raw, config_reply(raw, int(flags))), int(flags))
            self.counters.config_updates += 1
        return C.STORED

    def _config_delete(self, key: bytes) -> bytes:
        with self._lock:
            if key != b"cluster" or self._held[0] is None:
                return C.NOT_FOUND
            self._store(_EMPTY)
        return C.DELETED

    # ------------------------------------------------------------------ stats

    def stats(self) -> list[tuple[str, object]]:
        """Fields appended to `stats`: only on a cluster member or a node holding a document,
        so a standalone node's `stats` stays field-for-field memcached's."""
        doc = self._held[0]
        if not self.member and doc is None:
            return []
        c = self.counters
        return [
            ("cluster_version", doc.version if doc else 0),
            ("cluster_nodes", len(doc.nodes) if doc else 0),
            ("cluster_joins", c.joins),
            ("cluster_leaves", c.leaves),
            ("cluster_removals", c.removals),
            ("cluster_heartbeats", c.heartbeats),
            ("cluster_heartbeat_failures", c.heartbeat_failures),
            ("cluster_config_requests", c.config_requests),
            ("cluster_config_updates", c.config_updates),
            *(field for fields in list(self.extra_stats.values()) for field in fields()),
        ]


def cmd_config(s: Session, tokens: list[bytes]) -> None:
    """``config get|set|delete cluster``: the document this node serves."""
    s.out += s.ctx.cluster.config_reply(tokens[1:])


CLUSTER_HANDLERS = {b"config": cmd_config}

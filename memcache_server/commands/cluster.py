"""What a cache node knows of its cluster: the document it serves, and its discovery counters.

Every cache node answers ``config get cluster`` and the legacy ``get AmazonElastiCache:cluster``
with the document it holds (clients poll cache nodes round-robin, not only the endpoint). Worker
threads read the current reply through one attribute (a tuple swapped whole, so a reader never
sees half an update) and never take a lock on the read path; the membership thread, or an
operator-allowed ``config set``, replaces it under a lock.

``config set``/``config delete`` and writes to the legacy key are refused unless the operator
started the node with ``--allow-config-writes``: nobody on the data port may repoint the cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memcache_server.protocol import constants as C
from memcache_server.protocol.document import (
    BAD_DOCUMENT,
    CONFIG_WRITES_REFUSED,
    LEGACY_READ_ONLY,
    NO_DOCUMENT,
    UNKNOWN_CONFIG_KEY,
    ClusterDocument,
    DocumentError,
    config_reply,
    legacy_value,
    parse_document,
    supersedes,
)

if TYPE_CHECKING:
    from memcache_server.commands.session import Session

__all__ = [
    "ClusterView",
    "ViewCounters",
    "CONFIG_WRITES_REFUSED",
    "LEGACY_READ_ONLY",
    "CLUSTER_HANDLERS",
]


# (document, raw bytes as served, whole `config get cluster` reply)
_Held = tuple[ClusterDocument | None, bytes, bytes]
_EMPTY: _Held = (None, b"", NO_DOCUMENT)


@dataclass(slots=True)
class ViewCounters:
    """Plain integers. The membership thread writes the first six; ``config_requests`` is
    written by workers under the view's lock (discovery requests are rare, a lock is cheap)."""

    joins: int = 0
    leaves: int = 0
    removals: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    config_updates: int = 0
    config_requests: int = 0


class ClusterView:
    """The cluster document a cache node serves."""

    def __init__(self, allow_writes: bool = False, member: bool = False) -> None:
        self.allow_writes = allow_writes
        # refuse storage commands to the legacy key (read on the set path: a plain attribute)
        self.legacy_read_only = not allow_writes
        # a member (started with --join) shows its cluster counters in `stats`
        self.member = member
        self.counters = ViewCounters()
        # more `stats` fields from the membership side (a --warm hand-over's progress), by name
        self.extra_stats: dict[str, Callable[[], list[tuple[str, object]]]] = {}
        self._held: _Held = _EMPTY
        self._lock = threading.Lock()

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
            self._held = (doc, raw, config_reply(raw))
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
            self._held = (doc, raw, config_reply(raw, int(flags)))
            self.counters.config_updates += 1
        return C.STORED

    def _config_delete(self, key: bytes) -> bytes:
        with self._lock:
            if key != b"cluster" or self._held[0] is None:
                return C.NOT_FOUND
            self._held = _EMPTY
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

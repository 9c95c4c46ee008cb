"""Membership and version numbering of one config node: who is in the cluster, and which version
of the document says so.

Owned by the config node's single loop thread (no lock). Time comes from an injected monotonic
clock so the rules can be tested without sleeping. The rules (spec: discovery.md section 3):

- a node is in the document once it has registered (it does so only once it serves), and stays
  while it heartbeats; one silent for ``timeout`` seconds is removed;
- a node that leaves (or that an operator removes) is tombstoned: its late heartbeats do not
  bring it back; only a fresh ``join`` (a restarted process) does;
- every change of the document's node list gets the next version, and that document is written
  to the state file *before* anyone can read it; the version continues from the state file after
  a restart and also stays above any version a node reports holding, so it never repeats even if
  the state file was lost;
- after a restart the saved members are served as they were, unconfirmed, until their heartbeats
  confirm them or the timeout removes them: the membership is rebuilt from heartbeats without a
  burst of partial documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memcache_server.discovery.document import (
    MAX_VERSION,
    NO_DOCUMENT,
    ClusterDocument,
    NodeAddress,
    config_reply,
)
from memcache_server.discovery.statefile import (
    check_writable,
    load_removed,
    load_state,
    save_removed,
    save_state,
)

__all__ = ["Registry", "Member", "RegistryCounters", "VersionExhausted", "RegistryFull"]

Key = tuple[str, int]
# Bound on members and on tombstones: a document of 4096 nodes is ~200 KB, far past real clusters.
MAX_MEMBERS = 4096


class VersionExhausted(RuntimeError):
    """The version reached 2^31-1: clients could not parse the next one."""


class RegistryFull(RuntimeError):
    """MAX_MEMBERS nodes are registered already."""


@dataclass(slots=True)
class Member:
    address: NodeAddress
    last_seen: float
    confirmed: bool  # heard from since this config node started (False: restored from state)


@dataclass(slots=True)
class RegistryCounters:
    """Plain integers for `stats` (and, later, metrics); only the loop thread writes them."""

    joins: int = 0
    leaves: int = 0
    removals: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    config_requests: int = 0
    publish_failures: int = 0  # a changed membership that could not be made durable (retried)


@dataclass(slots=True)
class Listing:
    """One row of `cluster nodes`."""

    address: NodeAddress
    state: str
    age: float


@dataclass
class Registry:
    state_path: Path
    timeout: float
    now: Callable[[], float] = time.monotonic
    persist: Callable[[Path, ClusterDocument], None] = save_state
    persist_removed: Callable[[Path, set[Key]], None] = save_removed
    counters: RegistryCounters = field(default_factory=RegistryCounters)

    def __post_init__(self) -> None:
        check_writable(self.state_path)
        restored = load_state(self.state_path)
        t = self.now()
        self.published: ClusterDocument | None = restored
        self.version = restored.version if restored else 0
        self.floor = self.version  # the next version is above this and above every held one
        self.members: dict[Key, Member] = {}
        if restored:
            self.members = {n.key: Member(n, t, False) for n in restored.nodes}
        self.tombstones: dict[Key, tuple[float, str]] = {}  # -> (last heard, "left"/"removed")
        # an operator's removals outlive this process: restored, and kept out of the document
        self.saved_removed = load_removed(self.state_path)
        for key in self.saved_removed:
            self.tombstones[key] = (t, "removed")
            self.members.pop(key, None)
        self.dirty = restored is not None and len(self.members) != len(restored.nodes)
        self._reply = self._make_reply()

    # ------------------------------------------------------------------ membership

    def register(self, address: NodeAddress, held_version: int, fresh: bool) -> None:
        """A join (``fresh``: the node process just started) or a heartbeat."""
        if 0 <= held_version <= MAX_VERSION:
            self.floor = max(self.floor, held_version)
        key = address.key
        t = self.now()
        if fresh:
            self.tombstones.pop(key, None)  # a restarted process is welcome again
        else:
            self.counters.heartbeats += 1
            tomb = self.tombstones.get(key)
            if tomb is not None:
                self.tombstones[key] = (t, tomb[1])  # still alive: keep it out until it restarts
                return
        member = self.members.get(key)
        if member is None:
            if len(self.members) >= MAX_MEMBERS:
                raise RegistryFull(f"the cluster already has {MAX_MEMBERS} nodes")
            # a heartbeat from a node this config node had not heard of (it restarted) joins too
            self.counters.joins += 1
            self.members[key] = Member(address, t, True)
            self.dirty = True
            return
        if fresh:
            self.counters.joins += 1  # the node's process restarted
        if member.address != address:
            member.address = address  # same node, new IP: the text changes, so does the version
            self.dirty = True
        member.last_seen = t
        member.confirmed = True

    def leave(self, hostname: str, port: int) -> bool:
        """A node stopping gracefully: out of the document now, before it stops serving."""
        if self._drop((hostname, port), tombstone="left"):
            self.counters.leaves += 1
            return True
        return False

    def remove(self, hostname: str, port: int) -> bool:
        """An operator's removal; the node stays out until its process restarts, and the
        removal is saved beside the state file so a config-node restart keeps it. Removing a
        node the cluster does not know changes nothing."""
        key = (hostname, port)
        if key not in self.members and key not in self.tombstones:
            return False
        if self._drop(key, tombstone="removed"):
            self.counters.removals += 1
            return True
        return False

    def expire(self) -> int:
        """Remove members silent for longer than the timeout; forget stale tombstones."""
        t = self.now()
        dead = [k for k, m in self.members.items() if t - m.last_seen > self.timeout]
        for k in dead:
            self._drop(k, tombstone="")
        self.counters.removals += len(dead)
        for k in [k for k, (seen, _) in self.tombstones.items() if t - seen > self.timeout]:
            del self.tombstones[k]
        return len(dead)

    def _drop(self, key: Key, tombstone: str) -> bool:
        """Take a member out; ``tombstone`` (the reason) keeps its late heartbeats out too."""
        if tombstone:
            if len(self.tombstones) >= MAX_MEMBERS:
                oldest = min(self.tombstones, key=self.tombstones.__getitem__)
                del self.tombstones[oldest]
            self.tombstones[key] = (self.now(), tombstone)
        if self.members.pop(key, None) is None:
            return False
        self.dirty = True
        return True

    # ------------------------------------------------------------------ publishing

    def publish(self) -> bool:
        """Give a changed node list the next version, persist it, then make it visible.

        Raises OSError if the state file cannot be written: nothing is published then, and the
        next call tries again. Returns whether a new version was published."""
        removed = {k for k, (_, why) in self.tombstones.items() if why == "removed"}
        if removed != self.saved_removed:  # saved before the document that leaves them out
            self.persist_removed(self.state_path, removed)
            self.saved_removed = removed
        if not self.dirty:
            return False
        nodes = tuple(m.address for m in self.members.values())
        if self.published is not None and set(nodes) == set(self.published.nodes):
            self.dirty = False  # e.g. a node left and came back between two publications
            return False
        version = max(self.version, self.floor) + 1
        if version > MAX_VERSION:
            raise VersionExhausted(f"cluster version would exceed {MAX_VERSION}")
        doc = ClusterDocument(version, nodes)
        self.persist(self.state_path, doc)
        self.version = version
        self.published = doc
        self.dirty = False
        self._reply = self._make_reply()
        return True

    def _make_reply(self) -> bytes:
        doc = self.published
        if doc is None or not doc.nodes:
            return NO_DOCUMENT
        return config_reply(doc.encode())

    def reply(self) -> bytes:
        """The current `config get cluster` answer (``END`` while the cluster is empty)."""
        return self._reply

    def document(self) -> ClusterDocument | None:
        doc = self.published
        return doc if doc is not None and doc.nodes else None

    # ------------------------------------------------------------------ operators

    def listing(self) -> list[Listing]:
        t = self.now()
        rows = []
        for m in sorted(self.members.values(), key=lambda m: m.address.key):
            age = t - m.last_seen
            if not m.confirmed:
                state = "restored"
            elif age > self.timeout / 2:
                state = "late"
            else:
                state = "up"
            rows.append(Listing(m.address, state, age))
        return rows

    def removed(self) -> list[Listing]:
        """Nodes kept out of the document: left, or removed by an operator (hostname, port)."""
        t = self.now()
        return [
            Listing(NodeAddress(host, "", port), why, t - seen)
            for (host, port), (seen, why) in sorted(self.tombstones.items())
        ]

"""Membership kept in etcd, so several config nodes serve one cluster.

Keys under the cluster's prefix ``P``::

    P members/<host>:<port>   "host|ip|port"         on the node's lease (TTL: heartbeat timeout)
    P removed/<host>:<port>   "left" | "removed"     on the same lease: a tombstone
    P document                the published node list; its mod_revision is the version

Why this shape:

- A node's liveness is its lease: any config node renews it on a heartbeat (the lease id is in
  the member key, which every config node sees), and etcd deletes the key when nobody has for a
  heartbeat timeout. So a killed node leaves whichever config node it talked to, and nothing
  is removed while etcd itself is unreachable: etcd re-arms every lease when it comes back.
- A leave or an operator's removal swaps the member key for a tombstone on the same lease, in
  one transaction. The removed node's heartbeats keep the lease, and so the tombstone, alive,
  which keeps it out; once it goes quiet the tombstone expires; a restarted process (a join)
  deletes it. Removals thus survive config-node restarts, as the issue asks.
- The version is the etcd revision at which the ``document`` key was last written. Revisions
  only rise, across any number of config nodes and restarts, and every config node serves the
  value and version of that one key, so they all publish the same document. The key is written
  by compare-and-swap (on its mod_revision) whenever the member set differs from it; when
  several config nodes race, one write wins and the others see it through their watch.

Threads: a watch thread mirrors the prefix (a full range, then a watch from the next revision,
restarted whenever it breaks or idles) and writes the document key; a worker thread runs the
requests of the config node's loop (join, heartbeat, leave, remove) one at a time, and hands
each reply back through a callback. The loop never blocks on etcd: while etcd is unreachable it
keeps answering ``config get cluster`` with the last document, and the requests fail fast.
"""

from __future__ import annotations

import math
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from memcache_server.discovery.document import (
    MAX_VERSION,
    NO_DOCUMENT,
    ClusterDocument,
    DocumentError,
    NodeAddress,
    config_reply,
)
from memcache_server.discovery.etcd_client import (
    Compacted,
    EtcdClient,
    EtcdError,
    KeyValue,
    Op,
    WatchEvent,
    WatchIdle,
)
from memcache_server.discovery.registry import MAX_MEMBERS, Listing, RegistryCounters

__all__ = ["EtcdRegistry", "EtcdSettings", "default_prefix"]

Key = tuple[str, int]
Done = Callable[[bytes], None]
DELETED = b"DELETED\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
BUSY = b"SERVER_ERROR config node busy\r\n"
CLUSTER_FULL = b"SERVER_ERROR cluster is full\r\n"
MAX_QUEUE = 4096  # requests waiting for etcd; beyond this they are refused at once
FAIL_FAST = 0.5  # after a failed call, answer errors without trying etcd for this long
WATCH_IDLE = 5.0  # a watch silent this long is restarted (and a dead etcd noticed)


def default_prefix(cluster: str) -> str:
    return f"/memcache-server/clusters/{cluster}/"


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    endpoints: list[tuple[str, int]]
    prefix: str
    heartbeat_timeout: float
    io_timeout: float = 2.0
    tls: ssl.SSLContext | None = None  # https:// endpoints: CA, and a client certificate

    @property
    def ttl(self) -> int:
        """etcd leases count whole seconds (and etcd raises a TTL below its minimum, ~2 s)."""
        return max(1, math.ceil(self.heartbeat_timeout))


@dataclass(frozen=True, slots=True)
class _Member:
    address: NodeAddress
    lease: int


def _key_suffix(key: Key) -> bytes:
    return f"{key[0]}:{key[1]}".encode("ascii")


def _parse_suffix(suffix: bytes) -> Key | None:
    host, _, port = suffix.decode("ascii", "replace").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _parse_address(value: bytes) -> NodeAddress | None:
    parts = value.decode("ascii", "replace").split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    try:
        return NodeAddress(parts[0], parts[1], int(parts[2])).checked_ip()
    except DocumentError:
        return None


def _parse_nodes(value: bytes) -> tuple[NodeAddress, ...] | None:
    nodes = [_parse_address(token) for token in value.split()]
    if any(n is None for n in nodes):
        return None
    return tuple(n for n in nodes if n is not None)


class EtcdRegistry:
    """The config node's membership when it runs on etcd (see the module docstring)."""

    def __init__(self, settings: EtcdSettings, verbose: int = 0) -> None:
        self.settings = settings
        self.verbose = verbose
        p = settings.prefix.encode()
        self.prefix = p
        self.members_prefix = p + b"members/"
        self.removed_prefix = p + b"removed/"
        self.document_key = p + b"document"
        self.counters = RegistryCounters()
        # the mirror of the prefix, written by the watch thread under the condition's lock
        self._cond = threading.Condition()
        self._members: dict[Key, _Member] = {}
        self._tombstones: dict[Key, tuple[str, int]] = {}  # -> (reason, lease)
        self._doc_nodes: tuple[NodeAddress, ...] = ()
        self._doc_revision = 0
        self._revision = 0
        self._synced = False
        self._heard: dict[Key, float] = {}  # last heartbeat or write seen by this config node
        # what the loop thread reads: swapped whole, never half-updated
        self.version = 0
        self._published: tuple[ClusterDocument | None, bytes] = (None, NO_DOCUMENT)
        self._queue: queue.Queue[tuple[Callable[[EtcdClient], bytes], Done]] = queue.Queue(
            MAX_QUEUE
        )
        self._stop = threading.Event()
        self._fail_until = 0.0
        self._failing: set[str] = set()  # which thread is logging an outage (logged once)
        self._threads = [
            threading.Thread(target=self._watch_loop, name="etcd-watch", daemon=True),
            threading.Thread(target=self._work_loop, name="etcd-worker", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop both threads, waiting a moment only: they hold nothing that needs saving (etcd
        has it all), and a watch blocked in a read would hold up the exit for WATCH_IDLE."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(0.5)

    def _client(self) -> EtcdClient:
        s = self.settings
        return EtcdClient(s.endpoints, s.io_timeout, s.tls)

    def _log(self, text: str) -> None:
        print(f"config-node: {text}", file=sys.stderr, flush=True)

    def _outage(self, who: str, exc: Exception | None) -> None:
        """Log the start and the end of an outage once each, not every retry."""
        if exc is not None and who not in self._failing:
            self._failing.add(who)
            self._log(f"etcd ({who}): {exc}")
        elif exc is None and who in self._failing:
            self._failing.discard(who)
            self._log(f"etcd answers again ({who})")

    # ------------------------------------------------------------------ what the loop reads

    def reply(self) -> bytes:
        return self._published[1]

    def document(self) -> ClusterDocument | None:
        return self._published[0]

    @property
    def published(self) -> ClusterDocument | None:
        return self._published[0]

    def expire(self) -> int:
        """Nothing to do: etcd expires the leases."""
        return 0

    def publish(self) -> bool:
        """Nothing to do: the watch thread publishes what etcd holds."""
        return False

    def listing(self) -> list[Listing]:
        now = time.monotonic()
        with self._cond:
            rows = [
                Listing(m.address, "up", now - self._heard.get(k, now))
                for k, m in sorted(self._members.items())
            ]
        return rows

    def removed(self) -> list[Listing]:
        now = time.monotonic()
        with self._cond:
            return [
                Listing(NodeAddress(k[0], "", k[1]), why, now - self._heard.get(k, now))
                for k, (why, _) in sorted(self._tombstones.items())
            ]

    # ------------------------------------------------------------------ requests from the loop

    def submit(self, request: Callable[[EtcdClient], bytes], done: Done) -> None:
        """Run ``request`` on the worker thread; ``done(reply)`` is called there with its reply
        (or at once, with an error reply, when too many requests are waiting)."""
        try:
            self._queue.put_nowait((request, done))
        except queue.Full:
            done(BUSY)

    def register(self, address: NodeAddress, fresh: bool) -> Callable[[EtcdClient], bytes]:
        return lambda client: self._register(client, address, fresh)

    def drop(self, key: Key, reason: str) -> Callable[[EtcdClient], bytes]:
        return lambda client: self._drop(client, key, reason)

    # ------------------------------------------------------------------ worker thread

    def _work_loop(self) -> None:
        client = self._client()
        while not self._stop.is_set():
            try:
                request, done = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            reply = self._run(client, request)
            try:
                done(reply)
            except Exception as exc:  # a callback must never kill the worker
                self._log(f"reply callback failed: {exc!r}")
        client.close()

    def _run(self, client: EtcdClient, request: Callable[[EtcdClient], bytes]) -> bytes:
        if time.monotonic() < self._fail_until or not self._synced:
            self.counters.heartbeat_failures += 1
            return b"SERVER_ERROR cluster store (etcd) unavailable\r\n"
        try:
            reply = request(client)
        except EtcdError as exc:
            self._fail_until = time.monotonic() + FAIL_FAST
            self.counters.heartbeat_failures += 1
            self._outage("requests", exc)
            return b"SERVER_ERROR cluster store (etcd) unavailable\r\n"
        self._outage("requests", None)
        return reply

    def _member_key(self, key: Key) -> bytes:
        return self.members_prefix + _key_suffix(key)

    def _removed_key(self, key: Key) -> bytes:
        return self.removed_prefix + _key_suffix(key)

    def _register(self, client: EtcdClient, address: NodeAddress, fresh: bool) -> bytes:
        """A join (a new process: clears a tombstone) or a heartbeat (renews the lease)."""
        key = address.key
        with self._cond:
            member = self._members.get(key)
            tomb = self._tombstones.get(key)
            self._heard[key] = time.monotonic()
            if len(self._heard) > 2 * MAX_MEMBERS:  # forget nodes that are in etcd no more
                known = self._members.keys() | self._tombstones.keys() | {key}
                self._heard = {k: v for k, v in self._heard.items() if k in known}
        value = address.token().encode("ascii")
        if member is None and len(self._members) >= MAX_MEMBERS:
            return CLUSTER_FULL
        if fresh:
            lease = client.grant(self.settings.ttl)
            client.txn(
                [], [Op.delete(self._removed_key(key)), Op.put(self._member_key(key), value, lease)]
            )
            return self.reply()
        self.counters.heartbeats += 1
        if tomb is not None:  # left or removed, and still beating: keep its tombstone alive
            if tomb[1]:
                client.keepalive(tomb[1])
            return self.reply()
        if member is not None and client.keepalive(member.lease) > 0:
            if member.address != address:  # same node, new IP
                client.put(self._member_key(key), value, member.lease)
            return self.reply()
        # unknown here (its lease expired, or etcd lost it): back in, unless a removal stands
        lease = client.grant(self.settings.ttl)
        client.txn(
            [client.mod_revision_is(self._removed_key(key), 0)],
            [Op.put(self._member_key(key), value, lease)],
        )
        return self.reply()

    def _drop(self, client: EtcdClient, key: Key, reason: str) -> bytes:
        """A leave or an operator's removal: member key -> tombstone, then wait (bounded) for
        the document without the node, so a leaving node serves it while it drains."""
        with self._cond:
            member = self._members.get(key)
        lease = member.lease if member is not None and client.keepalive(member.lease) else 0
        if not lease:
            lease = client.grant(self.settings.ttl)
        _, revision, responses = client.txn(
            [],
            [
                Op.delete(self._member_key(key)),
                Op.put(self._removed_key(key), reason.encode(), lease),
            ],
        )
        deleted = int(responses[0].get("response_delete_range", {}).get("deleted", 0))
        if deleted:
            self._wait_published(revision)
        if reason == "left":
            return self.reply()
        return DELETED if deleted else NOT_FOUND

    def _wait_published(self, revision: int) -> None:
        """Until the mirror has seen ``revision`` and the document matches the members."""
        deadline = time.monotonic() + self.settings.io_timeout
        with self._cond:
            while not self._stop.is_set():
                if self._revision >= revision and self._document_current():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    # ------------------------------------------------------------------ watch thread

    def _watch_loop(self) -> None:
        client = self._client()
        resync = True
        while not self._stop.is_set():
            try:
                if resync:
                    revision, kvs = client.range_prefix(self.prefix)
                    self._load(revision, kvs)
                    resync = False
                    self._outage("watch", None)
                    self._reconcile(client)
                for events in client.watch(self.prefix, self._revision + 1, WATCH_IDLE):
                    self._apply(events)
                    self._outage("watch", None)
                    self._reconcile(client)
                    if self._stop.is_set():
                        break
            except WatchIdle:
                continue
            except Compacted:
                resync = True
            except EtcdError as exc:  # from the watch, a range or a document write
                self._outage("watch", exc)
                resync = True  # read everything again: nothing is lost, a failed write retried
                self._stop.wait(0.25)
        client.close()

    def _load(self, revision: int, kvs: list[KeyValue]) -> None:
        with self._cond:
            self._members.clear()
            self._tombstones.clear()
            self._doc_nodes, self._doc_revision = (), 0
            for kv in kvs:
                self._put(kv, count=False)  # a re-read after an outage is not a join
            self._revision = revision
            self._synced = True
            self._publish()
            self._cond.notify_all()

    def _apply(self, events: list[WatchEvent]) -> None:
        with self._cond:
            for ev in events:
                if ev.deleted:
                    self._delete(ev.kv, events)
                else:
                    self._put(ev.kv)
                self._revision = max(self._revision, ev.kv.mod_revision)
            self._publish()
            self._cond.notify_all()

    def _put(self, kv: KeyValue, count: bool = True) -> None:
        if kv.key.startswith(self.members_prefix):
            address = _parse_address(kv.value)
            key = _parse_suffix(kv.key[len(self.members_prefix) :])
            if address is None or key != address.key:
                return  # not ours to interpret: written by hand, and wrongly
            if key not in self._members and count:
                self.counters.joins += 1
            self._members[key] = _Member(address, kv.lease)
            self._heard.setdefault(key, time.monotonic())
        elif kv.key.startswith(self.removed_prefix):
            key = _parse_suffix(kv.key[len(self.removed_prefix) :])
            if key is not None:
                self._tombstones[key] = (kv.value.decode("ascii", "replace"), kv.lease)
        elif kv.key == self.document_key:
            nodes = _parse_nodes(kv.value)
            if nodes is not None:
                self._doc_nodes, self._doc_revision = nodes, kv.mod_revision

    def _delete(self, kv: KeyValue, batch: list[WatchEvent]) -> None:
        if kv.key.startswith(self.members_prefix):
            key = _parse_suffix(kv.key[len(self.members_prefix) :])
            if key is None or self._members.pop(key, None) is None:
                return
            # a tombstone written in the same transaction says why; none: the lease expired
            why = next(
                (
                    e.kv.value
                    for e in batch
                    if not e.deleted
                    and e.kv.mod_revision == kv.mod_revision
                    and e.kv.key == self._removed_key(key)
                ),
                b"",
            )
            if why == b"left":
                self.counters.leaves += 1
            else:
                self.counters.removals += 1
            if self.verbose:
                self._log(f"{key[0]}:{key[1]} {why.decode() or 'expired'}")
        elif kv.key.startswith(self.removed_prefix):
            key = _parse_suffix(kv.key[len(self.removed_prefix) :])
            if key is not None:
                self._tombstones.pop(key, None)
                if key not in self._members:
                    self._heard.pop(key, None)

    def _document_current(self) -> bool:
        return {m.address for m in self._members.values()} == set(self._doc_nodes)

    def _publish(self) -> None:
        """Make the mirrored document key what the loop serves (under the lock)."""
        version = self._doc_revision
        if not version or version == self.version:
            return
        if version < self.version:  # only if etcd lost its data: clients would reject it
            self._log(f"etcd revision went back ({version} < {self.version}): not published")
            return
        if version > MAX_VERSION:
            self._log(f"etcd revision {version} is past what clients parse: not published")
            return
        doc = ClusterDocument(version, self._doc_nodes)
        self.version = version
        self._published = (
            doc if doc.nodes else None,
            config_reply(doc.encode()) if doc.nodes else NO_DOCUMENT,
        )
        if self.verbose:
            self._log(f"published version {version} with {len(doc.nodes)} node(s)")

    def _reconcile(self, client: EtcdClient) -> None:
        """Write the document key if the member set differs from it (compare-and-swap)."""
        with self._cond:
            if self._document_current() and self._doc_revision:
                return
            line = ClusterDocument(1, tuple(m.address for m in self._members.values())).node_line()
            seen = self._doc_revision
        client.txn(
            [client.mod_revision_is(self.document_key, seen)], [Op.put(self.document_key, line)]
        )

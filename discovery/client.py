"""An auto-discovering memcached client: pymemcache connections placed by a libketama ring.

``ClusterClient`` fetches the cluster document from a configuration endpoint (or from cache
nodes it already knows), keeps it current from one background thread, and sends each key to the
node the ring names. This is the only module that imports pymemcache.

Threads and locks: any number of application threads call the cache methods. They read
``self._topology`` once per call, an immutable snapshot (ring + connections) that is replaced
by plain assignment, so a cache call never waits for discovery and never sees a half-built ring.
``self._lock`` guards what is rebuilt (document, node health, connection cache) and is taken on
the request path only after a connection error, or on the first success after one. The
background thread fetches documents, probes ejected nodes, and never touches a live connection.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from memcache_server.discovery import patterns
from memcache_server.discovery.document import (
    CONFIG_GET,
    LEGACY_GET,
    DocumentError,
    node_tuples,
    parse_reply,
)
from memcache_server.discovery.ring import HashRing, Naming, Node, Scheme

__all__ = [
    "ClusterClient",
    "ClusterUnavailable",
    "DiscoveryStats",
    "fetch_document",
    "owner_ring",
    "parse_address",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")
Address = tuple[str, int]
Key = str | bytes

#: errors that mean "this node did not answer", as opposed to an answer we did not like
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, MemcacheUnexpectedCloseError)
#: while no document has ever been accepted, retry discovery at least this often (seconds)
STARTUP_RETRY = 1.0
#: added to the default hand-over window: a --warm node's catch-up pass on a busy node
HANDOVER_SLACK = 5.0
_RECV = 65536


class ClusterUnavailable(MemcacheError):  # type: ignore[misc]
    """No live node to send the key to (none known yet, or every one is ejected)."""


def parse_address(spec: str | Address, default_port: int = 11211) -> Address:
    """``"host:port"``, ``"host"`` or ``("host", port)`` -> ``("host", port)``."""
    if isinstance(spec, tuple):
        return (spec[0], int(spec[1]))
    node = Node.from_spec(spec) if ":" in spec else Node(spec, "", default_port)
    return (node.hostname, node.port)


# --------------------------------------------------------------------------- fetching documents


def _read_reply(sock: socket.socket, deadline: float) -> tuple[bytes | None, bool]:
    buf = b""
    while True:
        reply = parse_reply(buf)
        if reply is not None:
            return reply.document, reply.unsupported
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("discovery reply timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(_RECV)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a discovery reply")
        buf += chunk


def fetch_document(address: Address, timeout: float = 2.0) -> bytes | None:
    """Ask one server for the cluster document; ``None`` if it has none (``END``).

    Sends ``config get cluster``; a server that answers ``ERROR`` (engine older than 1.4.14, or
    plain memcached) is asked the legacy ``get AmazonElastiCache:cluster``. The whole exchange,
    connect included, is bounded by ``timeout``. Each call resolves the host name afresh, so a
    configuration endpoint that moves to another address is followed.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(CONFIG_GET)
        document, unsupported = _read_reply(sock, deadline)
        if unsupported:
            sock.sendall(LEGACY_GET)
            document, unsupported = _read_reply(sock, deadline)
            if unsupported:
                raise DocumentError("server supports neither config get nor the legacy key")
        return document


def probe(address: Address, timeout: float) -> bool:
    """Does a memcached answer ``version`` at ``address`` within ``timeout``?"""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"version\r\n")
            buf = b""
            while b"\r\n" not in buf and len(buf) < 1024:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                buf += chunk
            return buf.startswith(b"VERSION ")
    except OSError:
        return False


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class DiscoveryStats:
    """Counters of what discovery and failure handling did (a snapshot).

    ``updates`` counts accepted documents; ``unchanged`` identical ones; ``stale`` lower
    versions; ``invalid`` unparsable or empty documents; ``fetch_errors`` sources that did not
    answer; ``no_document`` sources that had none; ``ejections``/``readmissions`` nodes taken
    out of and put back into the local ring.
    """

    version: int | None = None
    polls: int = 0
    updates: int = 0
    unchanged: int = 0
    stale: int = 0
    invalid: int = 0
    fetch_errors: int = 0
    no_document: int = 0
    ejections: int = 0
    readmissions: int = 0


@dataclass(frozen=True, slots=True)
class _Topology:
    """What a cache call needs, swapped whole: the live ring and a connection per member."""

    members: tuple[Node, ...]
    ring: HashRing
    clients: Mapping[Node, Any]  # Node -> pymemcache PooledClient


@dataclass(slots=True)
class _Handover:
    """The ring before the last change, for ``window`` seconds after it (see ``ClusterClient``:
    moved keys are read from their old owner first, and written keys invalidated there)."""

    old: _Topology
    until: float
    dead: set[Node] = field(default_factory=set)  # old owners that did not answer: skipped
    errors: dict[Node, int] = field(default_factory=dict)  # consecutive, per old owner


@dataclass(slots=True)
class _Health:
    failures: int = 0
    ejected_until: float | None = None


class ClusterClient:
    """A pymemcache-based client that finds the cluster's nodes by itself.

    Give it a configuration endpoint (``"cfg.example:11211"``), seed nodes, or both::

        client = ClusterClient("cfg.cache.local:11211", poll_interval=60)
        client.set("user:42", b"...", expire=300)
        client.get("user:42")

    Discovery: the constructor waits at most ``initial_timeout`` for a first document (from the
    endpoint, then from the seeds); without one it serves the seeds as a static list (or nothing)
    and keeps trying in the background. Then every ``poll_interval`` seconds (±``poll_jitter``,
    so a fleet of clients does not poll in step) it asks, in turn, the endpoint and one of the
    nodes it knows, falling back to the other on failure. It accepts a document only if its
    version is higher, or equal with a different node list: a lagging node cannot roll the
    cluster back. Cache calls always use the last good ring.

    Failures: a node with ``failure_limit`` consecutive connection errors (refused, reset,
    timed out, closed mid-reply) is ejected from the local ring for ``dead_timeout`` seconds (its
    keys go to the ring successors), then probed with ``version`` from the background thread and
    put back only if it answers. Misses and protocol errors never eject. An accepted document
    always wins: it replaces the membership and clears local ejections.

    Errors: with ``ignore_exc=False`` (the default) a connection or protocol error is raised,
    as pymemcache does; with ``ignore_exc=True`` a read reads as a miss and a write returns
    ``False``. ``get_or_load``/``write_through`` never raise because of the cache.

    Other knobs: ``scheme``/``naming`` choose the placement (see ``discovery.ring``; they must
    match the other clients of the cluster); ``fetch_timeout`` bounds one discovery exchange or
    probe; ``connect_timeout``/``timeout`` bound each cache call, so a dead host costs at most
    that much before it counts as a failure; ``serde`` is pymemcache's (values are bytes
    without one); ``background=False`` runs no thread (no polls, no probes: call ``poll()``
    yourself); ``rng`` seeds the jitter.

    Hand-over: clients switch to a new document at different moments, and ``--warm`` nodes
    copy keys between owners. For ``handover_window`` seconds after a change (default: twice
    the poll interval plus its jitter, plus ``HANDOVER_SLACK``: the longest another client like
    this one keeps the old ring, and as long again and a few seconds for the nodes to catch up
    on its last writes), a key whose owner
    changed is read from its old owner first (a hit there is the latest value: every client
    still on the old ring writes there, and this one deletes it there after each write to the
    new owner), then from the new owner; ``gets``/``cas`` use the new owner only (a CAS token
    belongs to one node). 0 turns this off.
    """

    def __init__(
        self,
        endpoint: str | Address | None = None,
        *,
        seeds: Iterable[str | Address | Node] = (),
        scheme: Scheme = Scheme.KETAMA,
        naming: Naming = Naming.HOSTNAME,
        poll_interval: float = 60.0,
        poll_jitter: float = 0.2,
        initial_timeout: float = 5.0,
        fetch_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        failure_limit: int = 2,
        dead_timeout: float = 60.0,
        ignore_exc: bool = False,
        serde: Any = None,
        background: bool = True,
        rng: random.Random | None = None,
        handover_window: float | None = None,
    ) -> None:
        if failure_limit < 1:
            raise ValueError("failure_limit must be at least 1")
        if poll_interval <= 0 or not 0 <= poll_jitter < 1:
            raise ValueError("poll_interval must be > 0 and poll_jitter in [0, 1)")
        self._endpoint = parse_address(endpoint) if endpoint is not None else None
        self._seeds = tuple(_seed_node(s) for s in seeds)
        if self._endpoint is None and not self._seeds:
            raise ValueError("give a configuration endpoint, seed nodes, or both")
        self.scheme, self.naming = scheme, naming
        self.poll_interval, self.poll_jitter = poll_interval, poll_jitter
        self.fetch_timeout = fetch_timeout
        self.failure_limit, self.dead_timeout = failure_limit, dead_timeout
        self.ignore_exc = ignore_exc
        # as long as another client polling like this one may still use the old ring, and
        # as long again for --warm nodes to catch up on what such a client wrote meanwhile
        if handover_window is None:
            handover_window = 2 * poll_interval * (1 + poll_jitter) + HANDOVER_SLACK
        self.handover_window = handover_window
        self._handover: _Handover | None = None
        self._client_kwargs: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "no_delay": True,
            "serde": serde,
            "default_noreply": False,
            "allow_unicode_keys": True,
        }
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stats = DiscoveryStats()
        self._document: tuple[int, tuple[Node, ...]] | None = None
        self._health: dict[Node, _Health] = {}
        self._failing: set[Node] = set()  # read without the lock on the success path
        self._connections: dict[Address, Any] = {}
        self._cycle = 0
        self._node_cursor = 0
        self._topology = _Topology((), HashRing((), scheme=scheme, naming=naming), {})
        with self._lock:
            self._rebuild_locked()
        self._initial_fetch(initial_timeout)
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="cluster-discovery", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the background thread and close every connection."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            conns = list(self._connections.values())
            self._connections.clear()
        for conn in conns:
            conn.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ introspection

    @property
    def version(self) -> int | None:
        """Version of the document in use (``None`` before the first one)."""
        doc = self._document
        return doc[0] if doc else None

    @property
    def members(self) -> tuple[Node, ...]:
        """The cluster's nodes as last discovered (or the seeds), ejected ones included."""
        return self._topology.members

    @property
    def live_nodes(self) -> tuple[Node, ...]:
        """The nodes keys are placed on now: the members minus locally ejected ones."""
        return self._topology.ring.nodes

    @property
    def ring(self) -> HashRing:
        """The live ring (immutable; a later change builds a new one)."""
        return self._topology.ring

    def owner(self, key: Key) -> Node:
        """The node a call for ``key`` goes to now. Raises ``ClusterUnavailable`` if none."""
        ring = self._topology.ring
        if not ring:
            raise ClusterUnavailable("no live node")
        return ring.owner(key)

    def stats(self) -> DiscoveryStats:
        """A snapshot of the discovery and failure-handling counters."""
        with self._lock:
            return self._stats

    # ------------------------------------------------------------------ routing

    def _call(
        self,
        key: Key,
        default: T,
        op: Callable[[Any], T],
        strict: bool = False,
        write: bool = False,
    ) -> T:
        topo = self._topology
        if not topo.ring:
            if self.ignore_exc and not strict:
                return default
            raise ClusterUnavailable("no live node")
        node = topo.ring.owner(key)
        result = self._on_node(node, topo.clients[node], default, op, strict)
        if write and self._handover is not None:
            self._invalidate_old([key])
        return result

    # ------------------------------------------------------------------ hand-over

    def _old_owners(self, keys: Iterable[Key]) -> dict[Node, list[Key]]:
        """Keys whose owner changed in the hand-over window, by their old (answering) owner."""
        h = self._handover
        if h is None:
            return {}
        if time.monotonic() >= h.until:
            self._wake.set()  # the background thread ends it (closes its connections)
            return {}
        ring = self._topology.ring
        moved: dict[Node, list[Key]] = defaultdict(list)
        for key in keys:
            old = h.old.ring.owner(key)
            if old not in h.dead and (not ring or ring.owner(key) != old):
                moved[old].append(key)
        return moved

    def _on_old(self, node: Node, op: Callable[[Any], T], default: T) -> T:
        """Run ``op`` on an old owner; ``failure_limit`` connection errors in a row mark
        it dead for this hand-over (no ejection: it may have left the cluster)."""
        h = self._handover
        if h is None:
            return default
        try:
            result = op(h.old.clients[node])
        except CONNECTION_ERRORS:
            h.errors[node] = h.errors.get(node, 0) + 1
            if h.errors[node] >= self.failure_limit:
                h.dead.add(node)
            return default
        except MemcacheError:
            return default
        h.errors.pop(node, None)
        return result

    def _read_old(self, keys: Iterable[Key]) -> dict[Key, Any]:
        nothing: dict[Key, Any] = {}
        found: dict[Key, Any] = {}
        for node, batch in self._old_owners(keys).items():
            found.update(self._on_old(node, _get_many(batch), nothing))
        return found

    def _invalidate_old(self, keys: Iterable[Key]) -> None:
        for node, batch in self._old_owners(keys).items():
            self._on_old(node, _delete_many(batch), None)

    def _end_handover(self) -> None:
        with self._lock:
            h = self._handover
            if h is not None and time.monotonic() >= h.until:
                self._handover = None
                self._rebuild_locked()

    def _on_node(
        self, node: Node, conn: Any, default: T, op: Callable[[Any], T], strict: bool
    ) -> T:
        try:
            result = op(conn)
        except CONNECTION_ERRORS:
            self._failed(node)
            if self.ignore_exc and not strict:
                return default
            raise
        except MemcacheError:
            # the node answered: a protocol error is the request's fault, not the node's
            if self.ignore_exc and not strict:
                return default
            raise
        if node in self._failing:
            self._succeeded(node)
        return result

    def _by_owner(self, keys: Iterable[Key]) -> tuple[_Topology, dict[Node, list[Key]]]:
        topo = self._topology
        batches: dict[Node, list[Key]] = defaultdict(list)
        if not topo.ring:
            if self.ignore_exc:
                return topo, batches
            raise ClusterUnavailable("no live node")
        for key in keys:
            batches[topo.ring.owner(key)].append(key)
        return topo, batches

    # ------------------------------------------------------------------ cache calls

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` on a miss."""
        if self._handover is not None:
            found = self._read_old([key])
            if key in found:
                return found[key]
        return self._call(key, default, lambda c: c.get(key, default))

    def gets(self, key: Key) -> tuple[Any, Any]:
        """``(value, cas)`` of ``key``, ``(None, None)`` on a miss."""
        return self._call(key, (None, None), lambda c: c.gets(key))

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The values found, one request per node; a failed node's keys are simply absent
        with ``ignore_exc`` (raised otherwise)."""
        keys = list(keys)
        found: dict[Key, Any] = self._read_old(keys) if self._handover is not None else {}
        topo, batches = self._by_owner(k for k in keys if k not in found)
        nothing: dict[Key, Any] = {}
        for node, batch in batches.items():
            found.update(self._on_node(node, topo.clients[node], nothing, _get_many(batch), False))
        return found

    def set(self, key: Key, value: Any, expire: int = 0) -> bool:
        """Store ``value``; ``True`` once the node said ``STORED``."""
        return self._call(
            key, False, lambda c: bool(c.set(key, value, expire, noreply=False)), write=True
        )

    def set_many(self, values: Mapping[Key, Any], expire: int = 0) -> list[Key]:
        """Store several values, one request per node; returns the keys not stored."""
        topo, batches = self._by_owner(values)
        failed: list[Key] = [] if topo.ring else list(values)
        for node, batch in batches.items():
            chunk = {k: values[k] for k in batch}
            failed += self._on_node(
                node, topo.clients[node], list(batch), _set_many(chunk, expire), False
            )
        if self._handover is not None:
            self._invalidate_old(values)
        return failed

    def add(self, key: Key, value: Any, expire: int = 0) -> bool:
        """Store only if absent; ``False`` if the key exists."""
        return self._call(
            key, False, lambda c: bool(c.add(key, value, expire, noreply=False)), write=True
        )

    def replace(self, key: Key, value: Any, expire: int = 0) -> bool:
        """Store only if present."""
        return self._call(
            key, False, lambda c: bool(c.replace(key, value, expire, noreply=False)), write=True
        )

    def cas(self, key: Key, value: Any, cas: Any, expire: int = 0) -> bool | None:
        """Compare-and-set: ``True`` stored, ``False`` changed since ``gets``, ``None`` gone."""
        result: bool | None = self._call(
            key, False, lambda c: c.cas(key, value, cas, expire, noreply=False), write=True
        )
        return result

    def delete(self, key: Key) -> bool:
        """Delete; ``True`` if the key existed."""
        return self._call(key, False, lambda c: bool(c.delete(key, noreply=False)), write=True)

    def delete_many(self, keys: Iterable[Key]) -> None:
        """Delete several keys (one request per key, as pymemcache's HashClient does)."""
        for key in keys:
            self.delete(key)

    def incr(self, key: Key, value: int = 1) -> int | None:
        """Increment a decimal value; ``None`` if the key is missing."""
        result: int | None = self._call(
            key, None, lambda c: c.incr(key, value, noreply=False), write=True
        )
        return result

    def decr(self, key: Key, value: int = 1) -> int | None:
        """Decrement a decimal value (floors at 0); ``None`` if the key is missing."""
        result: int | None = self._call(
            key, None, lambda c: c.decr(key, value, noreply=False), write=True
        )
        return result

    def touch(self, key: Key, expire: int = 0) -> bool:
        """Reset the expiry of ``key``; ``True`` if it exists."""
        return self._call(
            key, False, lambda c: bool(c.touch(key, expire, noreply=False)), write=True
        )

    # ------------------------------------------------------------------ caching patterns

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], V],
        ttl: int,
        *,
        guard: patterns.StampedeGuard | None = patterns.DEFAULT_GUARD,
    ) -> V:
        """Lazy loading (cache-aside) with stampede protection; see ``patterns.lazy_load``."""
        return patterns.lazy_load(_StrictCache(self), key, loader, ttl, guard=guard)

    def write_through(
        self, key: str, value: V, store_write: Callable[[V], object], ttl: int
    ) -> bool:
        """Write the data store, then the cache; see ``patterns.write_through``."""
        return patterns.write_through(_StrictCache(self), key, value, store_write, ttl)

    # ------------------------------------------------------------------ failure handling

    def _failed(self, node: Node) -> None:
        with self._lock:
            health = self._health.get(node)
            if health is None or health.ejected_until is not None:
                return  # a node discovery already dropped, or one already out
            health.failures += 1
            self._failing.add(node)
            if health.failures < self.failure_limit:
                return
            health.ejected_until = time.monotonic() + self.dead_timeout
            self._stats = replace(self._stats, ejections=self._stats.ejections + 1)
            log.warning("ejecting %s after %d connection errors", node, health.failures)
            self._rebuild_locked()
        self._wake.set()

    def _succeeded(self, node: Node) -> None:
        with self._lock:
            health = self._health.get(node)
            if health is not None and health.ejected_until is None:
                health.failures = 0
                self._failing.discard(node)

    def _probe_due(self) -> float | None:
        """Probe ejected nodes whose dead timeout ran out; return when the next one is due."""
        now = time.monotonic()
        with self._lock:
            due = [
                n
                for n, h in self._health.items()
                if h.ejected_until is not None and h.ejected_until <= now
            ]
        back = [n for n in due if probe(n.address, self.fetch_timeout)]
        with self._lock:
            now = time.monotonic()
            for node in due:
                health = self._health.get(node)
                if health is None or health.ejected_until is None:
                    continue
                if node in back:
                    self._health[node] = _Health()
                    self._failing.discard(node)
                    self._stats = replace(self._stats, readmissions=self._stats.readmissions + 1)
                    log.warning("%s answers again: back in the ring", node)
                else:
                    health.ejected_until = now + self.dead_timeout
            if back:
                self._rebuild_locked()
            pending = [h.ejected_until for h in self._health.values() if h.ejected_until]
        return min(pending) if pending else None

    # ------------------------------------------------------------------ topology

    def _rebuild_locked(self) -> None:
        members = self._document[1] if self._document else self._seeds
        for node in members:
            self._health.setdefault(node, _Health())
        for node in [n for n in self._health if n not in members]:
            del self._health[node]
            self._failing.discard(node)
        live = [n for n in members if self._health[n].ejected_until is None]
        ring = HashRing(live, scheme=self.scheme, naming=self.naming)
        clients = {n: self._connection_locked(n.address) for n in members}
        self._topology = _Topology(tuple(sorted(members)), ring, clients)
        in_use = {n.address for n in members}
        if self._handover is not None:  # still read and invalidated during the hand-over
            in_use |= {n.address for n in self._handover.old.members}
        for addr in [a for a in self._connections if a not in in_use]:
            self._connections.pop(addr).close()

    def _connection_locked(self, address: Address) -> Any:
        conn = self._connections.get(address)
        if conn is None:
            conn = PooledClient(address, **self._client_kwargs)
            self._connections[address] = conn
        return conn

    def offer(self, document: bytes) -> str:
        """Consider a cluster document; returns what became of it.

        ``"updated"`` (higher version, or equal version with a different node list),
        ``"unchanged"``, ``"stale"`` (lower version) or ``"invalid"`` (unparsable, empty, or
        two nodes hashing under one name). Only ``"updated"`` changes the ring.
        """
        try:
            version, tuples = node_tuples(document)
            nodes = tuple(sorted({Node(*t) for t in tuples}))
            HashRing(nodes, scheme=self.scheme, naming=self.naming)
        except ValueError as exc:
            log.warning("ignoring a cluster document: %s", exc)
            self._count("invalid")
            return "invalid"
        with self._lock:
            current = self._document
            if current is not None and version < current[0]:
                outcome = "stale"
            elif current is not None and (version, nodes) == current:
                outcome = "unchanged"
            else:
                outcome = "updated"
                previous = self._topology
                if self.handover_window > 0 and previous.ring and current is not None:
                    until = time.monotonic() + self.handover_window
                    self._handover = _Handover(previous, until)
                self._document = (version, nodes)
                # discovery wins: the new membership starts with a clean bill of health
                self._health.clear()
                self._failing.clear()
                self._rebuild_locked()
                self._stats = replace(self._stats, version=version)
            counter = "updates" if outcome == "updated" else outcome
            self._stats = replace(self._stats, **{counter: getattr(self._stats, counter) + 1})
        if outcome == "updated":
            log.info("cluster version %d: %d nodes", version, len(nodes))
        return outcome

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats = replace(self._stats, **{name: getattr(self._stats, name) + 1})

    # ------------------------------------------------------------------ discovery

    def _next_node(self) -> tuple[str, Address] | None:
        """The known node to ask next, round-robin over the members (or the seeds)."""
        known = self._topology.members or self._seeds
        if not known:
            return None
        node = known[self._node_cursor % len(known)]
        self._node_cursor += 1
        return f"node {node.hostname}:{node.port}", node.address

    def _sources(self) -> Iterator[tuple[str, Address]]:
        """Where this poll asks, in order: alternately the endpoint or a known node first."""
        self._cycle += 1
        order = ("endpoint", "node") if self._cycle % 2 else ("node", "endpoint")
        for kind in order:
            if kind == "endpoint" and self._endpoint is not None:
                yield "endpoint", self._endpoint
            elif kind == "node":
                source = self._next_node()
                if source is not None:
                    yield source

    def poll(self) -> str | None:
        """One discovery round now; what became of the document, ``None`` if none was had."""
        self._count("polls")
        for label, address in self._sources():
            try:
                document = fetch_document(address, self.fetch_timeout)
            except (OSError, DocumentError) as exc:
                log.info("discovery: %s (%s:%d) failed: %s", label, *address, exc)
                self._count("fetch_errors")
                continue
            if document is None:
                self._count("no_document")
                continue
            return self.offer(document)
        return None

    def _initial_fetch(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        addresses = ([self._endpoint] if self._endpoint else []) + [s.address for s in self._seeds]
        while addresses:
            for address in addresses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    document = fetch_document(address, min(self.fetch_timeout, remaining))
                except (OSError, DocumentError):
                    self._count("fetch_errors")
                    continue
                if document is not None and self.offer(document) == "updated":
                    return
            if self._seeds and self._endpoint is None:
                return  # a static list of plain nodes: serve it, look again in the background
            self._stop.wait(min(0.1, max(deadline - time.monotonic(), 0)))

    def _next_poll_delay(self) -> float:
        interval = self.poll_interval
        if self._document is None and self._endpoint is not None:
            interval = min(interval, STARTUP_RETRY)
        return interval * self._rng.uniform(1 - self.poll_jitter, 1 + self.poll_jitter)

    def _run(self) -> None:
        next_poll = time.monotonic() + self._next_poll_delay()
        while not self._stop.is_set():
            next_probe = self._probe_due()
            h = self._handover
            if h is not None:
                self._end_handover()
                next_probe = h.until if next_probe is None else min(next_probe, h.until)
            now = time.monotonic()
            if now >= next_poll:
                try:
                    self.poll()
                except Exception:  # never let the thread die: cache calls rely on it
                    log.exception("discovery poll failed")
                next_poll = time.monotonic() + self._next_poll_delay()
                continue
            wake_at = next_poll if next_probe is None else min(next_poll, next_probe)
            self._wake.wait(max(wake_at - now, 0.001))
            self._wake.clear()


def owner_ring(
    endpoint: str | None,
    nodes: str | None,
    *,
    scheme: str = "ketama",
    naming: str = "hostname",
    timeout: float = 2.0,
) -> HashRing:
    """The ring a client would build: from one fetch of ``endpoint``, or a ``"h:p,h:p"`` list.

    For operators asking "which node has this key"; raises ``OSError`` if the endpoint does not
    answer and ``ValueError`` if it has no usable document.
    """
    if endpoint is not None:
        document = fetch_document(parse_address(endpoint), timeout)
        if document is None:
            raise ValueError(f"{endpoint} has no cluster document")
        members = [Node(*t) for t in node_tuples(document)[1]]
    else:
        members = [_seed_node(spec) for spec in (nodes or "").split(",") if spec.strip()]
        if not members:
            raise ValueError("no node given")
    return HashRing(members, scheme=Scheme(scheme), naming=Naming(naming))


def _seed_node(spec: str | Address | Node) -> Node:
    if isinstance(spec, Node):
        return spec
    host, port = parse_address(spec)
    return Node(host, "", port)


def _get_many(keys: list[Key]) -> Callable[[Any], dict[Key, Any]]:
    return lambda c: dict(c.get_many(keys))


def _delete_many(keys: list[Key]) -> Callable[[Any], None]:
    return lambda c: c.delete_many(keys, noreply=False)


def _set_many(values: dict[Key, Any], expire: int) -> Callable[[Any], list[Key]]:
    return lambda c: list(c.set_many(values, expire, noreply=False))


class _StrictCache:
    """The client seen by the caching patterns: errors raise whatever ``ignore_exc`` says,
    so a pattern can tell a cache outage (go to the data store now) from a miss."""

    def __init__(self, client: ClusterClient) -> None:
        self._client = client

    def get(self, key: str) -> Any:
        found = self._client._read_old([key]) if self._client._handover is not None else {}
        if key in found:
            return found[key]
        return self._client._call(key, None, lambda c: c.get(key), strict=True)

    def set(self, key: str, value: Any, expire: int = 0) -> bool:
        return self._client._call(
            key,
            False,
            lambda c: bool(c.set(key, value, expire, noreply=False)),
            strict=True,
            write=True,
        )

    def add(self, key: str, value: Any, expire: int = 0) -> bool:
        return self._client._call(
            key,
            False,
            lambda c: bool(c.add(key, value, expire, noreply=False)),
            strict=True,
            write=True,
        )

    def delete(self, key: str) -> bool:
        return self._client._call(
            key, False, lambda c: bool(c.delete(key, noreply=False)), strict=True, write=True
        )

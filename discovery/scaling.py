"""Planned scale-out and scale-in without a miss storm (``--warm``).

Join: before the node is published, it reads the current document from the config node, works
out which keys the ring with it added gives it, and copies them from their current owners
(``Scaling.warm_up``). Then it registers, and catch-up passes run for the hand-over window so writes
made meanwhile by clients still on the old ring reach it too.

Leave: before a graceful leave, the node pushes its items to their owners in the ring without
it (``Scaling.push_out``); after the leave, catch-up passes run for the drain period.

Placement is the clients' default, libketama by hostname (``discovery.ring``): that is what the
node computes; clients configured otherwise get the items copied to the wrong nodes (misses,
never wrong values). See ``discovery.handover`` for why a copy never shows an old value.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from memcache_server.discovery.document import (
    CONFIG_GET,
    ClusterDocument,
    NodeAddress,
    parse_config_reply,
)
from memcache_server.discovery.handover import Address, Handover, HandoverProgress
from memcache_server.discovery.ring import HashRing, Node
from memcache_server.discovery.view import ClusterView
from memcache_server.discovery.wire import EndpointConnection, ReplyError

__all__ = ["CATCH_UP_EVERY", "Scaling", "current_document"]

#: seconds between catch-up passes
CATCH_UP_EVERY = 0.2


def _node(a: NodeAddress) -> Node:
    return Node(a.hostname, a.ip, a.port)


def current_document(config: Address, timeout: float) -> ClusterDocument | None:
    """The document the config node publishes now (None if it has none)."""
    with EndpointConnection(config[0], config[1], timeout) as conn:
        return parse_config_reply(conn.call(CONFIG_GET))


class Scaling:
    """The ``--warm`` hand-overs of one member node, around its join and its leave.

    ``window`` is how long clients may keep using the old ring after a change is published
    (the node's drain period): catch-up passes run that long. Progress is kept on the node's
    ``ClusterView`` (``extra_stats``), so ``stats`` shows it."""

    def __init__(
        self,
        view: ClusterView,
        config: Address,
        me: NodeAddress,
        local: Address,
        rate: int,
        window: float,
    ) -> None:
        self.view, self.config, self.me, self.local = view, config, me, local
        self.rate, self.window = rate, window
        self.timeout = 5.0

    def _progress(self, name: str) -> HandoverProgress:
        """A fresh progress record, shown in `stats` as ``cluster_<name>_*``."""
        progress = HandoverProgress()
        self.view.extra_stats[name] = lambda: progress.fields(f"cluster_{name}")
        return progress

    @staticmethod
    def log(text: str) -> None:
        print(f"cluster: {text}", file=sys.stderr, flush=True)

    def _copy(
        self,
        what: str,
        sources: list[Address],
        route: Callable[[Address, bytes], Address | None],
        progress: HandoverProgress,
    ) -> Handover:
        """The bulk copy of a hand-over (``what``: "warm-up" or "drain", for the log)."""
        handover = Handover(
            sources,
            route,
            rate=self.rate,
            timeout=self.timeout,
            log=lambda text: self.log(f"{what}: {text}"),
            progress=progress,
        )
        handover.copy()
        return handover

    def warm_up(self, progress: HandoverProgress) -> Handover | None:
        """Copy the keys this node will own from their owners now; None if there is nothing
        to warm from (no document yet, or no other node). One catch-up pass follows the bulk
        copy, for the writes made while it ran."""
        current = current_document(self.config, self.timeout)
        others = [n for n in (current.nodes if current else ()) if n.key != self.me.key]
        if not others:
            self.log("warm-up: no other node in the cluster: nothing to copy")
            progress.state = "done"
            return None
        mine = _node(self.me)
        now = HashRing([_node(n) for n in others])
        ring = HashRing([_node(n) for n in others] + [mine])
        local = self.local

        def route(source: Address, key: bytes) -> Address | None:
            """Mine in the new ring, and the source's now (else the source's is a leftover)."""
            return local if ring.owner(key) == mine and now.owner(key).address == source else None

        self.log(f"warm-up: copying my keys from {len(others)} nodes, at most {self._rate}")
        sources = [_node(n).address for n in others]
        handover = self._copy("warm-up", sources, route, progress)
        handover.catch_up(0.0, 0.0)
        progress.state = "catching-up"
        return handover

    def push_out(
        self, document: ClusterDocument | None, progress: HandoverProgress
    ) -> Handover | None:
        """Copy every item of this node to its owner in the ring without it; None if no
        other node would take them."""
        others = [_node(n) for n in (document.nodes if document else ()) if n.key != self.me.key]
        if not others:
            progress.state = "done"
            return None
        now = HashRing([*others, _node(self.me)])
        ring = HashRing(others)

        def route(_source: Address, key: bytes) -> Address | None:
            """Its owner without me, for the keys I own now (others I hold are leftovers)."""
            owner = now.owner(key)
            if (owner.hostname, owner.port) != self.me.key:
                return None
            return ring.owner(key).address

        self.log(f"drain: pushing my items to {len(others)} nodes, at most {self._rate}")
        return self._copy("drain", [self.local], route, progress)

    @property
    def _rate(self) -> str:
        return f"{self.rate}/s" if self.rate else "any rate"

    def warm_then(self, join: Callable[[], None], stop: threading.Event) -> None:
        """In a thread: warm up, then ``join()`` (register), then catch up for the window."""
        threading.Thread(
            target=self._warm_then, args=(join, stop), name="cluster-warm", daemon=True
        ).start()

    def _warm_then(self, join: Callable[[], None], stop: threading.Event) -> None:
        progress = self._progress("warm")
        handover = None
        try:
            handover = self.warm_up(progress)
        except (OSError, ValueError, ReplyError) as exc:  # config node down, or no document
            progress.state = "failed"
            self.log(f"warm-up failed, joining cold: {exc}")
        if stop.is_set():
            return
        join()
        if handover is not None:
            handover.catch_up(time.monotonic() + self.window, CATCH_UP_EVERY, stop)

    def push_around(self, leave_and_drain: Callable[[], None]) -> None:
        """Push every item to its next owner, then ``leave_and_drain()`` while catch-up passes
        carry over what clients still on the old ring write meanwhile; one last pass at the
        end."""
        progress = self._progress("drain")
        try:  # the config node's list is the one clients will switch to
            document = current_document(self.config, 2.0)
        except (OSError, ValueError, ReplyError) as exc:
            self.log(f"drain: config node unreachable ({exc}): pushing by the last document")
            document = self.view.document
        try:
            handover = self.push_out(document, progress)
        except OSError as exc:
            progress.state = "failed"
            self.log(f"drain: push failed: {exc}")
            handover = None
        if handover is None:
            leave_and_drain()
            return
        done = threading.Event()
        catch_up = threading.Thread(
            target=handover.catch_up,
            args=(time.monotonic() + self.window + 60, CATCH_UP_EVERY, done),
            name="cluster-drain",
            daemon=True,
        )
        catch_up.start()
        try:
            leave_and_drain()
        finally:
            done.set()
            catch_up.join(self.window + 30)

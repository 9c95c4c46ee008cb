"""A cache node's membership: register with the config node once serving, heartbeat, leave.

One background thread owns the connection to the config node. It sends ``cluster_join`` once
(retried until it succeeds), then ``cluster_heartbeat`` every interval; each reply carries the
current document, which the node takes if it supersedes the one it holds. A failed call is
counted and the connection dropped; the node keeps serving its last document meanwhile (clients
that poll nodes keep working while the config node is down).

``--join a:p,b:p`` names several config nodes (on etcd they serve one cluster): a node starts
with the first, a failed call is retried at once on the next one (each at most once per beat),
and the node stays with whichever answered. Predictable on purpose: an operator reads from the
flag which config node a node talks to; to spread the heartbeats, list them in another order on
other nodes, or join through one load-balanced name (a Kubernetes Service).

On a graceful stop the main thread calls ``leave_and_drain``: the heartbeat thread stops, the
node leaves (the config node publishes a version without it), and it keeps serving for the drain
period so clients have time to pick up the new list before its port closes.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from memcache_server.discovery.document import (
    ClusterDocument,
    DocumentError,
    NodeAddress,
    parse_config_reply,
)
from memcache_server.discovery.view import ClusterView
from memcache_server.discovery.wire import (
    EndpointConnection,
    ReplyError,
    leave_line,
    register_line,
    split_host_port,
)

__all__ = ["JoinSettings", "MembershipClient", "advertised_address", "parse_join"]

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True, slots=True)
class JoinSettings:
    endpoints: tuple[tuple[str, int], ...]  # the config nodes, any of which will do
    token: str | None = None
    interval: float = 1.0
    drain_seconds: float = 5.0

    @property
    def io_timeout(self) -> float:
        """Connect/read timeout of one call: long enough for a loaded machine, short enough
        that a hung config node never delays a leave for long."""
        return max(2.0, min(5.0, 2 * self.interval))


def parse_join(text: str) -> tuple[tuple[str, int], ...]:
    """``--join HOST:PORT[,HOST:PORT...]``; raises ValueError naming the bad entry."""
    endpoints = tuple(split_host_port(part.strip()) for part in text.split(",") if part.strip())
    if not endpoints:
        raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {text!r}")
    return endpoints


def _resolve_ipv4(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError):
        return ""


def advertised_address(
    advertise: str | None, listen: tuple[str, ...], bound_port: int
) -> NodeAddress:
    """The (hostname, ip, port) this node publishes.

    ``--advertise HOST[:PORT]`` wins; otherwise the first listen address (or the machine's
    hostname when listening on every interface) and the bound port. A hostname is resolved to
    its IPv4 address for the ip field (left empty if it does not resolve)."""
    if advertise:
        host, port = split_host_port(advertise, bound_port)
    else:
        host, port = (listen[0] if listen else ""), bound_port
        if host in WILDCARDS:
            host = socket.gethostname()
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        ip = host
    except ValueError:
        ip = _resolve_ipv4(host)
    return NodeAddress(host, ip, port)


class MembershipClient:
    """The membership thread of one cache node."""

    def __init__(
        self, view: ClusterView, settings: JoinSettings, address: NodeAddress, verbose: int = 0
    ) -> None:
        self.view = view
        self.settings = settings
        self.address = address
        self.verbose = verbose
        self._stop = threading.Event()
        self._conn: EndpointConnection | None = None
        self._thread = threading.Thread(target=self._run, name="cluster-membership", daemon=True)
        self._listed = False  # in the last document we received
        self._failing = False
        self._current = 0  # index of the config node in use

    def start(self) -> None:
        self._thread.start()

    def log(self, text: str) -> None:
        print(f"cluster: {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ heartbeat thread

    def _run(self) -> None:
        joined = False
        while not self._stop.is_set():
            doc_version = self.view.document.version if self.view.document else 0
            line = register_line(self.address, doc_version, self.settings.token, not joined)
            if self._call(line):
                c = self.view.counters
                if joined:
                    c.heartbeats += 1
                else:
                    joined = True
                    c.joins += 1
                    if self.verbose:
                        self.log(f"joined {self._endpoint()} as {self.address.token()}")
            self._stop.wait(self.settings.interval)
        self._disconnect()

    def _endpoint(self) -> str:
        host, port = self.settings.endpoints[self._current]
        return f"{host}:{port}"

    def _request(self, line: bytes) -> ClusterDocument | None:
        """Send ``line`` to the current config node, then to each other one once (twice to a
        lone one), until one answers with a document (or none yet); raises the last failure."""
        endpoints = self.settings.endpoints
        # one config node (or one Service name): still a second try, on a fresh connection
        attempts = max(2, len(endpoints))
        said: set[int] = set()  # each config node's failure is logged once per request
        for attempt in range(attempts):
            try:
                if self._conn is None:
                    host, port = endpoints[self._current]
                    self._conn = EndpointConnection(host, port, self.settings.io_timeout)
                return parse_config_reply(self._conn.call(line))
            except (OSError, ReplyError, DocumentError) as exc:
                self.view.counters.heartbeat_failures += 1
                self._disconnect()
                if not self._failing and self._current not in said:
                    said.add(self._current)
                    self.log(f"config node {self._endpoint()}: {exc or type(exc).__name__}")
                if attempt == attempts - 1:
                    raise
                self._current = (self._current + 1) % len(endpoints)
                if self.verbose:
                    self.log(f"trying config node {self._endpoint()}")
        raise AssertionError("unreachable")

    def _call(self, line: bytes) -> bool:
        """One request; True if a config node answered with a usable document (or none)."""
        try:
            doc = self._request(line)
        except (OSError, ReplyError, DocumentError):
            self._failing = True
            return False
        if self._failing:
            self._failing = False
            self.log(f"config node {self._endpoint()} answers again")
        if doc is not None:
            listed = any(n.key == self.address.key for n in doc.nodes)
            if self.view.offer(doc) and self._listed and not listed:
                self.view.counters.removals += 1  # dropped by the config node (timeout/operator)
            self._listed = listed
        return True

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    # ------------------------------------------------------------------ main thread

    def leave(self) -> bool:
        """Stop heartbeating and leave the cluster; True if the config node confirmed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.settings.io_timeout * len(self.settings.endpoints) + 1)
        line = leave_line(self.address.hostname, self.address.port, self.settings.token)
        try:
            doc = self._request(line)
        except (OSError, ReplyError, DocumentError) as exc:
            self.log(f"could not leave through {self._endpoint()}: {exc or type(exc).__name__}")
            return False
        finally:
            self._disconnect()
        self.view.counters.leaves += 1
        if doc is not None:
            self.view.offer(doc)  # clients polling this node during the drain see the new list
        if self.verbose:
            self.log(f"left {self._endpoint()}")
        return True

    def leave_and_drain(self, drain: float, hurry: Callable[[], bool]) -> None:
        """Leave, then keep serving for ``drain`` seconds (cut short once ``hurry()`` is true:
        a flag a signal handler sets, so it is polled rather than waited on).

        No drain when the leave failed (config node unreachable): no new list without this node
        is published, so waiting would not tell any client; the heartbeat timeout removes it."""
        if not self.leave():
            return
        deadline = time.monotonic() + drain
        while not hurry():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.05, left))

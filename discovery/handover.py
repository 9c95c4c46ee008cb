"""Moving items between nodes when the ring changes: the warm-up of a joining node (``--warm``)
and the push of a leaving one (``--drain-seconds``), so a planned scale-out or scale-in keeps
the hit ratio instead of turning a share of the keys into misses.

A hand-over copies, from a source node, every item whose key the new ring routes to a target
(value, flags, remaining TTL), using only memcached's own commands: ``lru_crawler metadump all``
lists the source's keys with their CAS, pipelined ``mg`` reads them, pipelined ``ms`` writes
them. The copy is rate-bounded (items per second) so the serving nodes keep their latency.

Never older than the latest write. Clients switch to the new ring at different moments, so
for a while writes for a moving key may land on either node. The rules:

- The first copy of a key is an *add* (``ms`` mode E): a value a client already wrote to the
  target is newer than anything copied, and is never overwritten.
- The copy records the source's CAS and the target's CAS. Catch-up passes (during the
  hand-over window after the change is published) list the source again: a key whose source
  CAS moved was written there since the last pass, by a client still on the old ring (our
  ``ClusterClient`` deletes the old owner's copy after each write to the new owner during its
  hand-over window, so what survives on the source is the later write). It is copied again,
  compare-and-swapped against the target's CAS read just before (``ms ... C<cas>``): a client
  write racing the copy on the target wins (``EX``).
- A key gone from the source (deleted by a client on the old ring, or invalidated there by a
  client already on the new one) is deleted from the target the same way, only if the target
  still holds our copy (``md ... C<cas>``).
- A key written on the source again after it was gone there is copied the same way.

Clients that write the new owner without invalidating the old one (most ElastiCache clients):
when, between two catch-up passes, such a client writes the new owner and a client still on
the old ring then writes the old one, the later write wins as it should; in the opposite order
within one pass interval the old ring's (earlier) write is copied over the later one. That
needs two clients writing one key within ~``CATCH_UP_EVERY`` plus one pass, during a switch.

Keys travel base64-encoded (meta flag ``b``), so any key a client stored is copied intact.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = ["Handover", "HandoverError", "HandoverProgress", "Item", "MetaConnection"]

Address = tuple[str, int]
#: keys per pipelined batch of mg/ms
BATCH = 500
_RECV = 1 << 16
MAX_LINE = 8192
PROGRESS_EVERY = 2.0  # seconds between progress lines in the log
THIRTY_DAYS = 60 * 60 * 24 * 30


class HandoverError(Exception):
    """A node did not answer as memcached does (or not at all)."""


@dataclass(frozen=True, slots=True)
class Item:
    value: bytes
    flags: int
    ttl: int  # remaining seconds, 0: never expires
    cas: int


def _ttl(remaining: int) -> int | None:
    """``mg``'s remaining TTL (-1: never) as an ``ms`` T token, None for an item about to
    expire. Beyond 30 days memcached reads T as a unix time, so those become absolute."""
    if remaining < 0:
        return 0
    if remaining == 0:
        return None
    if remaining > THIRTY_DAYS:
        return int(time.time()) + remaining
    return remaining


class MetaConnection:
    """A blocking meta-protocol connection with a read buffer; every read has a timeout."""

    def __init__(self, address: Address, timeout: float = 5.0) -> None:
        self.address = address
        self._sock = socket.create_connection(address, timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def close(self) -> None:
        self._sock.close()

    def _fill(self) -> None:
        chunk = self._sock.recv(_RECV)
        if not chunk:
            raise HandoverError(f"{self.address[0]}:{self.address[1]} closed the connection")
        self._buf += chunk

    def line(self) -> bytes:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_LINE:
                raise HandoverError("reply line too long")
            self._fill()
        out = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return out.rstrip(b"\r\n")

    def exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[: n + 2]
        return out

    def metadump(self) -> dict[bytes, int]:
        """Every live key of the node -> its CAS."""
        self._sock.sendall(b"lru_crawler metadump all\r\n")
        keys: dict[bytes, int] = {}
        while (row := self.line()) != b"END":
            if not row.startswith(b"key="):
                raise HandoverError(f"metadump: {row[:200]!r}")
            fields = dict(f.split(b"=", 1) for f in row.split(b" ") if b"=" in f)
            keys[unquote_to_bytes(fields[b"key"])] = int(fields[b"cas"])
        return keys

    def fetch(self, keys: list[bytes]) -> dict[bytes, Item]:
        """The items found (misses are simply absent); one round trip."""
        out = bytearray()
        for key in keys:
            out += b"mg %s b v f t c k q\r\n" % base64.b64encode(key)
        self._sock.sendall(bytes(out + b"mn\r\n"))
        found: dict[bytes, Item] = {}
        while (row := self.line()) != b"MN":
            parts = row.split(b" ")
            if parts[0] != b"VA":
                raise HandoverError(f"mg: {row[:200]!r}")
            value = self.exact(int(parts[1]))
            f = {p[:1]: p[1:] for p in parts[2:] if p}
            ttl = _ttl(int(f[b"t"]))
            if ttl is not None:
                # memcached echoes a binary key in base64 (with a bare `b`), others as they are
                key = base64.b64decode(f[b"k"]) if b"b" in f else f[b"k"]
                found[key] = Item(value, int(f[b"f"]), ttl, int(f[b"c"]))
        return found

    def store(self, items: list[tuple[bytes, Item, int | None]]) -> list[tuple[bytes, int]]:
        """Write ``(key, item, expected)``: an add when ``expected`` is None, else a
        compare-and-swap against that CAS. Returns, per item, the reply code and the new CAS."""
        out = bytearray()
        for key, item, expected in items:
            mode = b"ME" if expected is None else b"C%d" % expected
            out += b"ms %s %d b c T%d F%d %s\r\n" % (
                base64.b64encode(key),
                len(item.value),
                item.ttl,
                item.flags,
                mode,
            )
            out += item.value + b"\r\n"
        self._sock.sendall(bytes(out))
        return [self._code() for _ in items]

    def delete_if(self, keys: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """Delete each key only while it still holds that CAS."""
        out = b"".join(b"md %s b C%d\r\n" % (base64.b64encode(k), cas) for k, cas in keys)
        self._sock.sendall(out)
        return [self._code() for _ in keys]

    def _code(self) -> tuple[bytes, int]:
        parts = self.line().split(b" ")
        if parts[0] not in (b"HD", b"NS", b"EX", b"NF"):
            raise HandoverError(f"reply: {b' '.join(parts)[:200]!r}")
        cas = next((int(p[1:]) for p in parts[1:] if p.startswith(b"c")), 0)
        return parts[0], cas


@dataclass(slots=True)
class HandoverProgress:
    """What the hand-over did so far (plain integers, shown in ``stats`` as ``cluster_warm_*``
    or ``cluster_drain_*`` and in the node's log)."""

    state: str = "idle"  # idle, copying, catching-up, done, failed
    keys_seen: int = 0  # keys listed on the sources that the new ring moves
    copied: int = 0  # first copies stored (adds)
    bytes_copied: int = 0
    updated: int = 0  # catch-up: values written on the source since, copied over the target
    deleted: int = 0  # catch-up: keys deleted on the source, deleted from the target too
    kept: int = 0  # the target had a newer value (a client wrote it there): it wins
    passes: int = 0
    errors: int = 0
    seconds: float = 0.0

    def fields(self, prefix: str) -> list[tuple[str, object]]:
        return [
            (f"{prefix}_state", self.state),
            (f"{prefix}_keys", self.keys_seen),
            (f"{prefix}_copied", self.copied),
            (f"{prefix}_bytes", self.bytes_copied),
            (f"{prefix}_updated", self.updated),
            (f"{prefix}_deleted", self.deleted),
            (f"{prefix}_kept", self.kept),
            (f"{prefix}_passes", self.passes),
            (f"{prefix}_errors", self.errors),
            (f"{prefix}_seconds", f"{self.seconds:.3f}"),
        ]


@dataclass(slots=True)
class _Copy:
    source_cas: int
    target: Address
    target_cas: int


@dataclass
class Handover:
    """Copy the keys ``route`` sends elsewhere from each source to its target, then catch up.

    ``route(key)`` names the target address of a key, or None for keys that stay. ``rate``
    bounds items copied per second (0: unbounded). Connections are opened per pass and closed
    after it, with ``timeout`` on every exchange."""

    sources: list[Address]
    route: Callable[[bytes], Address | None]
    rate: int = 0
    timeout: float = 5.0
    log: Callable[[str], None] = lambda _text: None
    progress: HandoverProgress = field(default_factory=HandoverProgress)
    _copies: dict[tuple[Address, bytes], _Copy] = field(default_factory=dict)
    # keys that vanished from a source after we copied them (deleted there)
    _gone: set[tuple[Address, bytes]] = field(default_factory=set)
    _started: float = field(default_factory=time.monotonic)
    _reported: float = field(default_factory=time.monotonic)
    _budget_start: float = 0.0
    _budget_used: int = 0

    def copy(self) -> None:
        """The bulk pass: every moving key, added to its target."""
        self.progress.state = "copying"
        self._started = time.monotonic()
        self._pass(first=True)
        self.log(
            f"copied {self.progress.copied} of {self.progress.keys_seen} keys "
            f"({self.progress.bytes_copied} bytes) in {self.progress.seconds:.2f}s"
        )

    def catch_up(self, until: float, every: float, stop: threading.Event | None = None) -> None:
        """Catch-up passes until ``until`` (monotonic), ``every`` seconds apart, and one last
        pass at the end (the window during which clients still on the old ring may write)."""
        self.progress.state = "catching-up"
        while True:
            self._pass(first=False)
            left = until - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                break
            if stop is not None:
                stop.wait(min(every, left))
            else:
                time.sleep(min(every, left))
        self.progress.state = "done"
        p = self.progress
        self.log(f"caught up: {p.updated} updated, {p.deleted} deleted, {p.kept} kept newer")

    # ------------------------------------------------------------------ passes

    def _pass(self, first: bool) -> None:
        for source in self.sources:
            try:
                self._pass_source(source, first)
            except (OSError, HandoverError, ValueError, KeyError) as exc:  # a bad reply too
                self.progress.errors += 1
                self.log(f"hand-over from {source[0]}:{source[1]} failed: {exc}")
        self.progress.passes += 1
        self.progress.seconds = time.monotonic() - self._started

    def _pass_source(self, source: Address, first: bool) -> None:
        src = MetaConnection(source, self.timeout)
        targets: dict[Address, MetaConnection] = {}
        try:
            listed = src.metadump()
            moving: dict[Address, list[bytes]] = {}
            for key in listed:
                target = self.route(key)
                if target is not None and target != source:
                    moving.setdefault(target, []).append(key)
            if first:
                self.progress.keys_seen += sum(len(v) for v in moving.values())
            copied_to = {c.target for (s, _k), c in self._copies.items() if s == source}
            for target in set(moving) | copied_to:  # the latter for keys deleted since
                keys = moving.get(target, [])
                conn = targets.get(target) or targets.setdefault(
                    target, MetaConnection(target, self.timeout)
                )
                changed = [k for k in keys if self._changed(source, k, listed[k])]
                for i in range(0, len(changed), BATCH):
                    batch = changed[i : i + BATCH]
                    self._throttle(len(batch))
                    self._copy_batch(source, src, target, conn, batch)
                    self._report(first)
                self._deleted(source, src, listed, target, conn)
        finally:
            src.close()
            for conn in targets.values():
                conn.close()

    def _report(self, first: bool) -> None:
        """A progress line in the log at most every few seconds of a long bulk copy."""
        now = time.monotonic()
        if first and now - self._reported >= PROGRESS_EVERY:
            self._reported = now
            p = self.progress
            rate = p.copied / max(now - self._started, 1e-9)
            self.log(f"{p.copied} of {p.keys_seen}+ keys copied ({rate:.0f}/s)")

    def _changed(self, source: Address, key: bytes, cas: int) -> bool:
        """Not copied yet, written on the source since our copy, or back after a delete."""
        done = self._copies.get((source, key))
        return done is None or done.source_cas != cas or (source, key) in self._gone

    def _copy_batch(
        self,
        source: Address,
        src: MetaConnection,
        target: Address,
        dst: MetaConnection,
        keys: list[bytes],
    ) -> None:
        items = src.fetch(keys)
        again = [k for k in items if (source, k) in self._copies or (source, k) in self._gone]
        now_there = dst.fetch(again) if again else {}
        writes: list[tuple[bytes, Item, int | None]] = []
        for key, item in items.items():
            expected = None  # a first copy: an add, a client's own write on the target wins
            if key in now_there:
                # written on the source since we last looked: every client still on the old
                # ring writes there, and ours invalidate it there after writing the new owner,
                # so the source's value is the later one. It replaces the target's value
                # compare-and-swapped against the CAS just read: a write racing us wins.
                expected = now_there[key].cas
            self._gone.discard((source, key))
            writes.append((key, item, expected))
        p = self.progress
        for (key, item, expected), (code, cas) in zip(writes, dst.store(writes), strict=True):
            if code == b"HD":
                self._copies[(source, key)] = _Copy(item.cas, target, cas)
                if expected is not None:
                    p.updated += 1
                else:
                    p.copied += 1
                    p.bytes_copied += len(item.value)
            else:  # NS/EX/NF: a client wrote (or deleted) it on the target meanwhile: it wins
                p.kept += 1
                self._copies[(source, key)] = _Copy(item.cas, target, -1)

    def _deleted(
        self,
        source: Address,
        src: MetaConnection,
        listed: dict[bytes, int],
        target: Address,
        dst: MetaConnection,
    ) -> None:
        unlisted = [
            key
            for (s, key), c in self._copies.items()
            if s == source and c.target == target and key not in listed
        ]
        # a metadump walks a live table and may miss an item: only a miss on `mg` is gone
        still = set()
        for i in range(0, len(unlisted), BATCH):
            still |= set(src.fetch(unlisted[i : i + BATCH]))
        vanished = [
            (key, self._copies[(source, key)].target_cas) for key in unlisted if key not in still
        ]
        for key, _cas in vanished:
            del self._copies[(source, key)]
            self._gone.add((source, key))
        gone = [(key, cas) for key, cas in vanished if cas >= 0]  # our copy is still there
        for i in range(0, len(gone), BATCH):
            batch = gone[i : i + BATCH]
            for code, _ in dst.delete_if(batch):
                if code == b"HD":
                    self.progress.deleted += 1
                else:
                    self.progress.kept += 1

    def _throttle(self, n: int) -> None:
        """Sleep so that at most ``rate`` items per second are copied (a one-second window)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        if now - self._budget_start >= 1.0:
            self._budget_start, self._budget_used = now, 0
        if self._budget_used + n > self.rate:
            time.sleep(max(self._budget_start + 1.0 - now, 0))
            self._budget_start, self._budget_used = time.monotonic(), 0
        self._budget_used += n

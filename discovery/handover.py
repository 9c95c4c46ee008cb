"""Moving items between nodes when the ring changes: the warm-up of a joining node (``--warm``)
and the push of a leaving one (``--drain-seconds``), so a planned scale-out or scale-in keeps
the hit ratio instead of turning a share of the keys into misses.

A hand-over copies, from a source node, every item the source owns in the current ring and
whose key the new ring routes to a target (an item a node holds without owning it is a leftover
of an earlier ring, older than its owner's: never copied)
(value, flags, remaining TTL), using only memcached's own commands: ``lru_crawler metadump all``
lists the source's keys with their CAS, pipelined ``mg`` reads them, pipelined ``ms`` writes
them. The copy is rate-bounded (items per second) so the serving nodes keep their latency.

Never older than the latest write. Clients switch to the new ring at different moments, so
for a while writes for a moving key land on either node: clients still on the old ring write
the source, switched ones write the target (and our ``ClusterClient`` then deletes the source's
copy; that delete may still be on its way while a pass runs). The copy reads the target first,
then the source, then stores with a condition the target checks, so a client's write landing
anywhere in between makes the store fail rather than be overwritten. The rules:

- The bulk pass (before the change is published: no client routes these keys to the target
  yet) replaces what the target holds, compare-and-swapped against the CAS just read (an add
  where it holds nothing): what is there is a leftover of an earlier ring, older than the
  source's value (the old owner of a scale-out keeps its copies; when that node leaves later,
  its items go back there).
- A catch-up pass (each ``CATCH_UP_EVERY`` through the window after the change) looks at the
  source again: the keys already copied, by CAS; the last pass lists it whole. A key whose
  source CAS moved since our copy was written there by a client on the old ring. It is copied
  again only while the target still holds exactly our last copy (``ms ... C<our cas>``): then
  no client wrote the target since, and the source holds the latest write.
  A key we never copied (or that was gone) is added (``ms`` mode E).
- Written on both nodes since the last pass (the target holds anything but our last copy, or
  the store failed): which write is later cannot be told apart (a switched client's write whose
  delete on the source is still on its way, or a write on the old ring after a switched one),
  so the key is deleted from both, each only while it holds what we read. A miss is never
  stale; that needs two clients writing one key within one pass of each other during a switch.
- A key gone from the source (deleted by a client on the old ring, or invalidated there by a
  switched one; confirmed with ``mg``, since a metadump walks a live table) is deleted from
  the target only while the target still holds our copy (``md ... C<cas>``).

What a copy cannot see: a client on the old ring deleting a key the target holds a copy of.
Until the next pass deletes it there too, a switched client that misses on the source reads
the copy (at most one pass interval; a later write is never hidden).

Keys travel base64-encoded (meta flag ``b``), so any key a client stored is copied intact.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = ["Handover", "HandoverError", "HandoverProgress", "Item", "MetaConnection"]

Address = tuple[str, int]
#: keys per pipelined batch of mg/ms: a serving node answers a batch in one go, so its other
#: clients wait behind it (measured on a -t 1 node: ~8 ms for 500 keys, ~1.5 ms for 100)
BATCH = 100
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

    def _mg(self, keys: list[bytes], flags: bytes, code: bytes) -> Iterator[tuple[
            list[bytes], dict[bytes, bytes], bytes]]:
        """One pipelined round of quiet ``mg <key> b <flags> k q`` ended by ``mn``: for each
        hit, its reply words, its flags and its key (decoded from base64 where memcached
        echoes it so). A reply other than ``code`` is a broken hand-over."""
        out = bytearray()
        for key in keys:
            out += b"mg %s b %s k q\r\n" % (base64.b64encode(key), flags)
        self._sock.sendall(bytes(out + b"mn\r\n"))
        first_flag = 2 if code == b"VA" else 1
        while (row := self.line()) != b"MN":
            parts = row.split(b" ")
            if parts[0] != code:
                raise HandoverError(f"mg: {row[:200]!r}")
            f = {p[:1]: p[1:] for p in parts[first_flag:] if p}
            # memcached echoes a binary key in base64 (with a bare `b`), others as they are
            key = base64.b64decode(f[b"k"]) if b"b" in f else f[b"k"]
            yield parts, f, key

    def fetch(self, keys: list[bytes]) -> dict[bytes, Item]:
        """The items found (misses are simply absent); one round trip."""
        found: dict[bytes, Item] = {}
        for parts, f, key in self._mg(keys, b"v f t c", b"VA"):
            value = self.exact(int(parts[1]))
            ttl = _ttl(int(f[b"t"]))
            if ttl is not None:
                found[key] = Item(value, int(f[b"f"]), ttl, int(f[b"c"]))
        return found

    def cas_of(self, keys: list[bytes]) -> dict[bytes, int]:
        """The CAS of each key present (misses are absent); one round trip, no values."""
        return {key: int(f[b"c"]) for _parts, f, key in self._mg(keys, b"c", b"HD")}

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
        """Delete each key only while it still holds that CAS (-1: whatever it holds)."""
        out = b"".join(
            b"md %s b%s\r\n" % (base64.b64encode(k), b" C%d" % cas if cas >= 0 else b"")
            for k, cas in keys
        )
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
    kept: int = 0  # gone from the source, but a client wrote the target since: it wins
    dropped: int = 0  # written on both nodes since the last pass: deleted from both
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
            (f"{prefix}_dropped", self.dropped),
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

    ``route(source, key)`` names the target address of a key the source owns now, or None for
    keys that stay and keys the source holds without owning them. ``rate``
    bounds items copied per second (0: unbounded). Connections are opened per pass and closed
    after it, with ``timeout`` on every exchange."""

    sources: list[Address]
    route: Callable[[Address, bytes], Address | None]
    rate: int = 0
    timeout: float = 5.0
    log: Callable[[str], None] = lambda _text: None
    progress: HandoverProgress = field(default_factory=HandoverProgress)
    #: opens the connections of a pass (a seam where a test interposes a client's write)
    connect: Callable[[Address, float], MetaConnection] = MetaConnection
    _copies: dict[tuple[Address, bytes], _Copy] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _reported: float = field(default_factory=time.monotonic)
    _paced_from: float = 0.0
    _paced: int = 0

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
        pass at the end (the window during which clients still on the old ring may write).

        A metadump builds its whole reply in one go on the serving node (~0.1 s for 10,000
        items on a -t 1 node, every other client waiting), so the passes in between list only
        the keys already copied, by their CAS, in small ``mg`` batches; keys new on the source
        since are found by the last pass's metadump (meanwhile switched clients read them on
        the source)."""
        self.progress.state = "catching-up"
        while True:
            left = until - time.monotonic() - every
            last = left <= 0 or (stop is not None and stop.is_set())
            self._pass(first=False, full=last)
            left = until - time.monotonic()
            if last or left <= 0 or (stop is not None and stop.is_set()):
                if not last:  # stopped early: the full listing still runs once
                    self._pass(first=False, full=True)
                break
            if stop is not None:
                stop.wait(min(every, left))
            else:
                time.sleep(min(every, left))
        self.progress.state = "done"
        p = self.progress
        self.log(
            f"caught up: {p.updated} updated, {p.deleted} deleted, {p.kept} kept newer, "
            f"{p.dropped} dropped (written on both nodes)"
        )

    # ------------------------------------------------------------------ passes

    def _pass(self, first: bool, full: bool = True) -> None:
        for source in self.sources:
            try:
                self._pass_source(source, first, full)
            except (OSError, HandoverError, ValueError, KeyError) as exc:  # a bad reply too
                self.progress.errors += 1
                self.log(f"hand-over from {source[0]}:{source[1]} failed: {exc}")
        self.progress.passes += 1
        self.progress.seconds = time.monotonic() - self._started

    def _pass_source(self, source: Address, first: bool, full: bool) -> None:
        src = self.connect(source, self.timeout)
        targets: dict[Address, MetaConnection] = {}
        try:
            listed = src.metadump() if full else self._list_copied(source, src)
            moving: dict[Address, list[bytes]] = {}
            for key in listed:
                target = self.route(source, key)
                if target is not None and target != source:
                    moving.setdefault(target, []).append(key)
            if first:
                self.progress.keys_seen += sum(len(v) for v in moving.values())
            copied_to = {c.target for (s, _k), c in self._copies.items() if s == source}
            for target in set(moving) | copied_to:  # the latter for keys deleted since
                keys = moving.get(target, [])
                conn = targets.get(target) or targets.setdefault(
                    target, self.connect(target, self.timeout)
                )
                changed = [k for k in keys if self._changed(source, k, listed[k])]
                for i in range(0, len(changed), BATCH):
                    batch = changed[i : i + BATCH]
                    self._throttle(len(batch))
                    self._copy_batch(source, src, target, conn, batch, first)
                    self._report(first)
                self._deleted(source, src, listed, target, conn)
        finally:
            src.close()
            for conn in targets.values():
                conn.close()

    def _list_copied(self, source: Address, src: MetaConnection) -> dict[bytes, int]:
        """The keys copied from ``source`` that it still holds, with their CAS."""
        copied = [key for (s, key) in self._copies if s == source]
        listed: dict[bytes, int] = {}
        for i in range(0, len(copied), BATCH):
            batch = copied[i : i + BATCH]
            self._throttle(len(batch))
            listed.update(src.cas_of(batch))
        return listed

    def _report(self, first: bool) -> None:
        """A progress line in the log at most every few seconds of a long bulk copy."""
        now = time.monotonic()
        if first and now - self._reported >= PROGRESS_EVERY:
            self._reported = now
            p = self.progress
            rate = p.copied / max(now - self._started, 1e-9)
            self.log(f"{p.copied} of {p.keys_seen}+ keys copied ({rate:.0f}/s)")

    def _changed(self, source: Address, key: bytes, cas: int) -> bool:
        """Not copied (or not copied since it was gone), or written on the source since."""
        done = self._copies.get((source, key))
        return done is None or done.source_cas != cas

    def _copy_batch(
        self,
        source: Address,
        src: MetaConnection,
        target: Address,
        dst: MetaConnection,
        keys: list[bytes],
        first: bool,
    ) -> None:
        """Copy ``keys`` by the rules in the module docstring: the bulk pass replaces what the
        target holds (nobody routes these keys there yet); a catch-up pass writes only over our
        own last copy, or adds; a key written on both sides since the last pass is dropped."""
        # the target first (a client's write after this read fails our store); the bulk pass
        # adds, and reads the target only for the few keys it already holds
        there = {} if first else dst.fetch(keys)
        items = src.fetch(keys)
        writes: list[tuple[bytes, Item, int | None]] = []
        contested: list[tuple[bytes, int, int | None]] = []  # key, source CAS, target CAS
        for key, item in items.items():
            now = there.get(key)
            done = self._copies.pop((source, key), None)
            if first or (done is None and now is None):
                writes.append((key, item, None))
            elif done is not None and now is not None and now.cas == done.target_cas:
                writes.append((key, item, now.cas))  # the target still holds our copy
            else:  # a client wrote (or deleted) it on the target too: which is later is unknown
                contested.append((key, item.cas, now.cas if now is not None else None))
        failed = self._store(source, target, dst, writes, first)
        if first and failed:  # leftovers of an earlier ring: replaced, CAS-guarded
            now_there = dst.fetch([key for key, _ in failed])
            again: list[tuple[bytes, Item, int | None]] = [
                (key, item, now_there[key].cas) for key, item in failed if key in now_there
            ]
            failed = self._store(source, target, dst, again, first)
        contested += [(key, item.cas, -1) for key, item in failed]
        if contested:
            self._drop(src, dst, contested)

    def _store(
        self,
        source: Address,
        target: Address,
        dst: MetaConnection,
        writes: list[tuple[bytes, Item, int | None]],
        first: bool,
    ) -> list[tuple[bytes, Item]]:
        """Store on the target and record our copies; returns the writes that failed (NS, EX,
        NF: a client wrote or deleted the key there after we looked, or a bulk add found a
        leftover)."""
        p = self.progress
        failed = []
        for (key, item, expected), (code, cas) in zip(writes, dst.store(writes), strict=True):
            if code == b"HD":
                self._copies[(source, key)] = _Copy(item.cas, target, cas)
                if first or expected is None:
                    p.copied += 1
                    p.bytes_copied += len(item.value)
                else:
                    p.updated += 1
            else:
                failed.append((key, item))
        return failed

    def _drop(
        self, src: MetaConnection, dst: MetaConnection, keys: list[tuple[bytes, int, int | None]]
    ) -> None:
        """Delete keys written on both nodes since the last pass from both: the source only
        while it still holds the value we read (a later write there is caught next pass), the
        target while it holds the value we saw (-1: whatever it holds). A miss is never stale."""
        src.delete_if([(key, cas) for key, cas, _ in keys])
        dst.delete_if([(key, cas) for key, _, cas in keys if cas is not None])
        self.progress.dropped += len(keys)

    def _deleted(
        self,
        source: Address,
        src: MetaConnection,
        listed: dict[bytes, int],
        target: Address,
        dst: MetaConnection,
    ) -> None:
        """Keys copied earlier and gone from the source since: deleted from the target only
        while it still holds our copy (a client's write there is later than the delete)."""
        unlisted = [
            key
            for (s, key), c in self._copies.items()
            if s == source and c.target == target and key not in listed
        ]
        # a metadump walks a live table and may miss an item: only a miss on `mg` is gone
        still = set()
        for i in range(0, len(unlisted), BATCH):
            still |= set(src.fetch(unlisted[i : i + BATCH]))
        gone = [
            (key, self._copies.pop((source, key)).target_cas)
            for key in unlisted
            if key not in still
        ]
        for i in range(0, len(gone), BATCH):
            batch = gone[i : i + BATCH]
            for code, _ in dst.delete_if(batch):
                if code == b"HD":
                    self.progress.deleted += 1
                else:
                    self.progress.kept += 1

    def _throttle(self, n: int) -> None:
        """Hold the copy to ``rate`` items per second, spread evenly: each batch waits until its
        items are due, so the serving nodes see small batches at a steady pace, never a burst
        (a one-second budget spent at once is ``rate`` items back to back)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        due = self._paced_from + self._paced / self.rate
        if now - due > 1.0:  # idle a while (between passes): no credit for the pause
            self._paced_from, self._paced, due = now, 0, now
        if due > now:
            time.sleep(due - now)
        self._paced += n

"""Concurrency integrity: racing clients on shared keys end with exact results, and no read
ever returns a torn value or another key's value.

Sixteen client threads, each with its own connection, hit a node with 4 worker threads, once
with the default single event loop and once with four (``MULTI_LOOP_ENV``), so connections are
served by different loops at once. The exact-count races also run against real memcached, as a
check on the expectations themselves.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from procs import MULTI_LOOP_ENV, NODE_LOOPS, ServerProc, start_memcached, start_node
from reference import need_memcached

THREADS = 16


class Client:
    """A minimal blocking text-protocol client over one socket."""

    def __init__(self, srv: ServerProc) -> None:
        self.sock = srv.connect(timeout=20)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def call(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.line()

    def get_many(self, cmd: bytes, keys: list[bytes]) -> dict[bytes, tuple[bytes, bytes]]:
        """{key: (value, cas or b"")} for a get/gets of ``keys``."""
        self.sock.sendall(cmd + b" " + b" ".join(keys) + b"\r\n")
        found: dict[bytes, tuple[bytes, bytes]] = {}
        while True:
            header = self.line()
            if header == b"END":
                return found
            parts = header.split(b" ")
            assert parts[0] == b"VALUE", header
            value = self.exact(int(parts[3]) + 2)
            assert value.endswith(b"\r\n"), header
            found[parts[1]] = (value[:-2], parts[4] if len(parts) > 4 else b"")


@pytest.fixture(params=[*NODE_LOOPS, "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProc]:
    """Our node with one event loop, with four, and the reference."""
    if request.param in NODE_LOOPS:
        srv = start_node("-t", "4", env=NODE_LOOPS[request.param])
        yield srv
        srv.stop()
    else:
        need_memcached()
        srv = start_memcached("-t", "4")
        yield srv
        srv.stop(signal.SIGKILL)


def race(srv: ServerProc, body: Callable[[Client, int], None]) -> None:
    """Run ``body(client, thread_index)`` on THREADS threads at once; re-raise any failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(i: int) -> None:
        client = Client(srv)
        try:
            start.wait(10)
            body(client, i)
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_incr_decr_cas_append_add_races_end_exact(server: ServerProc) -> None:
    setup = Client(server)
    for key, value in ((b"counter", b"1000000"), (b"cas", b"0"), (b"log", b"")):
        assert setup.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)) == b"STORED"
    rounds = 150
    cas_retries = [0] * THREADS
    add_wins = [0] * THREADS

    def body(c: Client, i: int) -> None:
        for j in range(rounds):
            assert c.call(b"incr counter 3\r\n").isdigit()
            assert c.call(b"decr counter 1\r\n").isdigit()
            token = b"%d:%d;" % (i, j)
            assert c.call(b"append log 0 0 %d\r\n%s\r\n" % (len(token), token)) == b"STORED"
            if j % 3 == 0:  # compare-and-swap increment, retried until it wins
                while True:
                    value, cas = c.get_many(b"gets", [b"cas"])[b"cas"]
                    new = b"%d" % (int(value) + 1)
                    reply = c.call(b"cas cas 0 0 %d %s\r\n%s\r\n" % (len(new), cas, new))
                    if reply == b"STORED":
                        break
                    assert reply == b"EXISTS", reply
                    cas_retries[i] += 1
            reply = c.call(b"add race:%d 0 0 1\r\n%d\r\n" % (j, i % 10))
            assert reply in (b"STORED", b"NOT_STORED"), reply
            add_wins[i] += reply == b"STORED"

    race(server, body)
    final = setup.get_many(b"get", [b"counter", b"cas", b"log"])
    assert final[b"counter"][0] == b"%d" % (1_000_000 + THREADS * rounds * 2)
    assert final[b"cas"][0] == b"%d" % (THREADS * len(range(0, rounds, 3)))
    log = final[b"log"][0]
    tokens = log.split(b";")[:-1]
    assert sorted(tokens) == sorted(
        b"%d:%d" % (i, j) for i in range(THREADS) for j in range(rounds)
    )
    for i in range(THREADS):  # each thread's appends landed in its own order
        mine = [int(t.split(b":")[1]) for t in tokens if t.split(b":")[0] == b"%d" % i]
        assert mine == sorted(mine)
    assert sum(add_wins) == rounds  # exactly one add per key won
    setup.close()
    print(f"\ncas retries under contention: {sum(cas_retries)}")


def _value_for(key: bytes, rng: random.Random) -> bytes:
    """A value that names its key and carries its own checksum: torn or foreign reads show."""
    size = rng.choice([0, 10, 1000, 30_000, 200_000, 700_000])  # 700 KB is chunked
    body = rng.randbytes(size)
    header = b"%s|%d|" % (key, size)
    return header + hashlib.sha256(header + body).digest() + body


def _check(key: bytes, value: bytes) -> None:
    name, size, rest = value.split(b"|", 2)
    assert name == key, f"asked for {key!r}, got a value of {name!r}"
    digest, body = rest[:32], rest[32:]
    assert len(body) == int(size), f"{key!r}: torn value, {len(body)} of {int(size)} bytes"
    assert hashlib.sha256(b"%s|%s|" % (name, size) + body).digest() == digest, f"{key!r}: corrupt"


@pytest.fixture(params=list(NODE_LOOPS))
def node4(request: pytest.FixtureRequest) -> Iterator[ServerProc]:
    srv = start_node("-t", "4", env=NODE_LOOPS[request.param])
    yield srv
    srv.stop()


def test_random_sets_and_gets_never_return_a_torn_or_foreign_value(node4: ServerProc) -> None:
    server = node4
    keys = [b"shared:%d" % i for i in range(40)]
    checked = [0] * THREADS
    deadline = time.monotonic() + 2.0

    def body(c: Client, i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.45:
                key = rng.choice(keys)
                value = _value_for(key, rng)
                reply = c.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
                assert reply == b"STORED", reply
            else:
                wanted = rng.sample(keys, 1 if roll < 0.8 else 8)
                for key, (value, _) in c.get_many(b"get", wanted).items():
                    assert key in wanted
                    _check(key, value)
                    checked[i] += 1

    race(server, body)
    assert sum(checked) > 200
    print(f"\nvalues read and verified: {sum(checked)}")


def test_threads_do_not_see_each_others_replies(node4: ServerProc) -> None:
    """Pipelined requests on 16 connections at once: every reply goes to its own connection."""

    def body(c: Client, i: int) -> None:
        mine = [b"own:%d:%d" % (i, j) for j in range(50)]
        c.sock.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k) for k in mine))
        for _ in mine:
            assert c.line() == b"STORED"
        for _ in range(20):
            got = c.get_many(b"get", mine)
            assert got == {k: (k, b"") for k in mine}

    race(node4, body)


def test_values_stay_whole_while_pages_move_under_them() -> None:
    """Clients write and read checksummed values of many sizes while a page is moved between
    classes again and again (rescuing items and chunks of large items as they are read)."""
    server = start_node("-t", "4", "-m", "16", "-o", "slab_automove=0", env=MULTI_LOOP_ENV)
    keys = [b"moving:%d" % i for i in range(400)]
    checked = [0] * THREADS
    deadline = time.monotonic() + 4.0
    moves = [0]

    def rescues(c: Client) -> int:
        c.sock.sendall(b"stats\r\n")
        n = 0
        while (line := c.line()) != b"END":
            if line.split(b" ")[1] in (b"slab_reassign_rescues", b"slab_reassign_chunk_rescues"):
                n += int(line.rsplit(b" ", 1)[1])
        return n

    def mover() -> None:
        c = Client(server)
        rng = random.Random(99)
        # Which pages move is up to the timing: past the clients' deadline it goes on (while
        # their items stay stored, bounded) until a moved page has held a live item or chunk.
        last = deadline + 15.0
        try:
            while time.monotonic() < deadline or (time.monotonic() < last and not rescues(c)):
                reply = c.call(b"slabs reassign -1 %d\r\n" % rng.randrange(1, 40))
                assert reply.startswith((b"OK", b"BUSY", b"BADCLASS", b"NOSPARE")), reply
                moves[0] += reply == b"OK"
                time.sleep(0.01)
        finally:
            c.close()

    def body(c: Client, i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < deadline:
            key = rng.choice(keys)
            if rng.random() < 0.5:
                size = rng.choice([10, 100, 1000, 10_000, 100_000, 700_000])
                body = rng.randbytes(size)
                header = b"%s|%d|" % (key, size)
                value = header + hashlib.sha256(header + body).digest() + body
                reply = c.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
                assert reply in (b"STORED", b"SERVER_ERROR out of memory storing object"), reply
            else:
                for got, (value, _) in c.get_many(b"get", [key]).items():
                    assert got == key
                    _check(key, value)
                    checked[i] += 1

    try:
        t = threading.Thread(target=mover)
        t.start()
        race(server, body)
        t.join(30)
        c = Client(server)
        c.sock.sendall(b"stats\r\nstats slabs\r\nstats items\r\n")
        stat: dict[bytes, int] = {}
        ends = 0
        while ends < 3:
            line = c.line()
            if line == b"END":
                ends += 1
            elif line.startswith(b"STAT "):
                _, name, value = line.split(b" ", 2)
                stat[name] = int(value) if value.isdigit() else -1
        c.close()
        assert stat[b"slabs_moved"] >= 3 and moves[0] >= 3, (stat[b"slabs_moved"], moves[0])
        assert stat[b"slab_reassign_rescues"] + stat[b"slab_reassign_chunk_rescues"] > 0
        cids = {int(k.split(b":")[0]) for k in stat if k.endswith(b":total_pages")}
        for cid in cids:
            total = stat[b"%d:total_pages" % cid] * stat[b"%d:chunks_per_page" % cid]
            used, free = stat[b"%d:used_chunks" % cid], stat[b"%d:free_chunks" % cid]
            assert used + free == total, (cid, used, free, total)
        items = sum(
            v for k, v in stat.items() if k.startswith(b"items:") and k.endswith(b":number")
        )
        assert items == stat[b"curr_items"]
        assert sum(checked) > 100
        print(f"\npages moved: {stat[b'slabs_moved']}, values verified: {sum(checked)}")
    finally:
        server.stop()

"""A node run as ``-t 4`` worker processes under a supervisor: one cache, every worker serving.

Real node processes (started by ``procs.start_node``). Which worker serves a connection is read
from /proc: the server side of the connection is a socket in exactly one worker's descriptor
table. The tests check that several workers serve, that writes through any connection are seen
through every other, that CAS and incr/decr stay exact across processes, that page moves run
while every worker serves, that a worker killed (under load, or holding the store lock) costs
no acknowledged write and is replaced, and that stops leave nothing behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from procs import ServerProc, start_node

WORKERS = 4


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return sorted(out)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers_of(srv: ServerProc) -> list[int]:
    """The worker pids: the children of the supervisor's one child, the spawner."""
    spawners = children(srv.proc.pid)
    assert len(spawners) == 1, spawners
    return [p for p in children(spawners[0]) if alive(p)]


def replaced(srv: ServerProc, dead: int) -> bool:
    """Whether the supervisor runs a full set of workers again, without ``dead``."""
    now = workers_of(srv)
    return len(now) == WORKERS and dead not in now


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def server_inode(sock: socket.socket, port: int) -> int:
    """The inode of the server's side of the connection ``sock`` (from /proc/net/tcp)."""
    client_port = sock.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            ports = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
            if ports == (port, client_port):
                return int(fields[9])
    raise AssertionError("connection not found in /proc/net/tcp")


def serving_pid(sock: socket.socket, port: int, pids: list[int]) -> int:
    """Which of ``pids`` holds the server's side of ``sock``."""
    target = f"socket:[{server_inode(sock, port)}]"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def ask(sock: socket.socket, request: bytes, end: bytes = b"\r\n") -> bytes:
    sock.sendall(request)
    buf = b""
    deadline = time.monotonic() + 10
    while not buf.endswith(end):
        assert time.monotonic() < deadline, buf
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
    return buf


def stats(sock: socket.socket, sub: bytes = b"") -> dict[str, str]:
    reply = ask(sock, b"stats" + (b" " + sub if sub else b"") + b"\r\n", b"END\r\n")
    return {m[1].decode(): m[2].decode() for m in re.finditer(rb"STAT (\S+) (\S+)\r\n", reply)}


def shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def spread(srv: ServerProc, n: int) -> tuple[list[socket.socket], dict[int, list[socket.socket]]]:
    """``n`` connections, a round trip on each so every one is accepted, grouped by worker."""
    pids = workers_of(srv)
    socks = [srv.connect() for _ in range(n)]
    by_pid: dict[int, list[socket.socket]] = {}
    for s in socks:
        assert ask(s, b"version\r\n").startswith(b"VERSION")
        by_pid.setdefault(serving_pid(s, srv.port, pids), []).append(s)
    return socks, by_pid


@pytest.fixture
def srv() -> Iterator[ServerProc]:
    before = shm()
    node = start_node("-t", str(WORKERS), env={"MEMCACHE_SERVER_TEST_HOLD_LOCK": "1"})
    wait_for(lambda: len(workers_of(node)) == WORKERS)
    yield node
    pids = [node.proc.pid, *children(node.proc.pid)]
    node.stop()
    for pid in pids:  # stopped by PID: whatever is left of the tree
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: shm() <= before, 5)  # others' short-lived entries aside


def test_a_write_through_any_connection_is_read_through_every_other(srv: ServerProc) -> None:
    socks, by_pid = spread(srv, 24)
    assert len(by_pid) >= 2, "the kernel handed every connection to one worker"
    for i, s in enumerate(socks):
        assert ask(s, b"set k%d 0 0 %d\r\nv%d\r\n" % (i, len(b"v%d" % i), i)) == b"STORED\r\n"
    for j, s in enumerate(socks):
        for i in range(len(socks)):
            if i != j:
                want = b"VALUE k%d 0 %d\r\nv%d\r\nEND\r\n" % (i, len(b"v%d" % i), i)
                assert ask(s, b"get k%d\r\n" % i, b"END\r\n") == want
    big = os.urandom(800 * 1024)  # a chunked item (over 512 KB): its chain lives in the segment
    a, b = next(iter(by_pid.values()))[0], list(by_pid.values())[1][0]
    assert ask(a, b"set big 7 0 %d\r\n%b\r\n" % (len(big), big)) == b"STORED\r\n"
    assert ask(b, b"get big\r\n", b"END\r\n") == b"VALUE big 7 %d\r\n%b\r\nEND\r\n" % (
        len(big), big)
    for s in socks:
        s.close()


def run_clients(count: int, work: Callable[[socket.socket], int], srv: ServerProc) -> list[int]:
    """``work`` on ``count`` connections at once, each in its own thread; their results."""
    results = [0] * count
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with srv.connect(timeout=20) as s:
                results[i] = work(s)
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def test_cas_races_across_workers_count_exactly(srv: ServerProc) -> None:
    with srv.connect() as s:
        assert ask(s, b"set c 0 0 1\r\n0\r\n") == b"STORED\r\n"

    def race(s: socket.socket) -> int:
        won = 0
        for _ in range(150):
            reply = ask(s, b"gets c\r\n", b"END\r\n")
            head, value = reply.split(b"\r\n")[:2]
            cas = int(head.split()[-1])
            out = ask(s, b"cas c 0 0 %d %d\r\n%d\r\n" % (len(b"%d" % (int(value) + 1)), cas,
                                                         int(value) + 1))
            assert out in (b"STORED\r\n", b"EXISTS\r\n"), out
            won += out == b"STORED\r\n"
        return won

    won = run_clients(8, race, srv)
    with srv.connect() as s:
        assert ask(s, b"get c\r\n", b"END\r\n").split(b"\r\n")[1] == b"%d" % sum(won)
    assert sum(won) >= 150  # every round has a winner among the racers


def test_incr_and_decr_totals_are_exact_across_workers(srv: ServerProc) -> None:
    with srv.connect() as s:
        assert ask(s, b"set n 0 0 7\r\n1000000\r\n") == b"STORED\r\n"

    def bump(s: socket.socket) -> int:
        me = threading.get_ident() % 3  # a mix of incr and decr clients
        for _ in range(300):
            reply = ask(s, b"incr n 5\r\n" if me else b"decr n 2\r\n")
            assert reply[:1].isdigit(), reply
        return 5 if me else -2

    deltas = run_clients(8, bump, srv)
    with srv.connect() as s:
        value = ask(s, b"get n\r\n", b"END\r\n").split(b"\r\n")[1]
    assert int(value) == 1_000_000 + 300 * sum(deltas)


def test_a_page_moves_while_every_worker_serves(srv: ServerProc) -> None:
    socks, by_pid = spread(srv, 16)
    value = b"x" * 200
    keys = [b"p%d" % i for i in range(12000)]  # several pages of one class
    for i, k in enumerate(keys):
        s = socks[i % len(socks)]
        s.sendall(b"set %b 0 0 %d noreply\r\n%b\r\n" % (k, len(value), value))
    with srv.connect() as s:
        assert ask(s, b"mn\r\n") == b"MN\r\n"
        wait_for(lambda: stats(s)["curr_items"] == str(len(keys)))
        for k in keys[:4000]:  # room on the first pages: the moved page's items are rescued
            s.sendall(b"delete %b noreply\r\n" % k)
        keys = keys[4000:]
        assert ask(s, b"mn\r\n") == b"MN\r\n"
        slabs = stats(s, b"slabs")
        cid = next(int(k.split(":")[0]) for k, v in slabs.items()
                   if k.endswith(":total_pages") and int(v) > 2)
        pages = int(slabs[f"{cid}:total_pages"])
        assert ask(s, b"slabs reassign %d 0\r\n" % cid) == b"OK\r\n"
        stop = threading.Event()
        served: list[int] = []
        wrong: list[bytes] = []

        def serve(c: socket.socket) -> None:
            n = 0
            while not stop.is_set():
                k = keys[n % len(keys)]
                reply = ask(c, b"get %b\r\n" % k, b"END\r\n")
                if reply != b"VALUE %b 0 200\r\n%b\r\nEND\r\n" % (k, value):
                    wrong.append(reply)
                n += 1
            served.append(n)

        threads = [threading.Thread(target=serve, args=(c[0],)) for c in by_pid.values()]
        for t in threads:
            t.start()
        wait_for(lambda: int(stats(s, b"slabs")[f"{cid}:total_pages"]) == pages - 1)
        stop.set()
        for t in threads:
            t.join(30)
        assert not wrong
        assert len(served) == len(by_pid) and all(served)
        assert stats(s)["curr_items"] == str(len(keys))  # rescued, none lost
    for i, k in enumerate(keys[::97]):
        assert ask(socks[i % len(socks)], b"get %b\r\n" % k, b"END\r\n").endswith(
            value + b"\r\nEND\r\n")


def test_a_worker_killed_under_load_loses_no_acknowledged_write(srv: ServerProc) -> None:
    before = workers_of(srv)
    acked: dict[bytes, bytes] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(i: int) -> None:
        n = 0
        s = srv.connect()
        while not stop.is_set():
            key = b"w%d-%d" % (i, n)
            val = b"%d" % (n * 7919)
            try:
                if ask(s, b"set %b 0 0 %d\r\n%b\r\n" % (key, len(val), val)) == b"STORED\r\n":
                    with lock:
                        acked[key] = val
            except OSError:  # its worker was killed: a new connection goes to a live one
                s.close()
                s = srv.connect()
            n += 1
        s.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) > 500)
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: replaced(srv, victim))
    count = len(acked)
    wait_for(lambda: len(acked) > count + 300)  # still serving, through every worker left
    stop.set()
    for t in threads:
        t.join(30)
    after = workers_of(srv)
    assert len(set(after) - set(before)) == 1
    _, by_pid = spread(srv, 16)
    assert set(by_pid) <= set(after)
    with srv.connect() as s:
        for key, val in acked.items():
            assert ask(s, b"get %b\r\n" % key, b"END\r\n") == b"VALUE %b 0 %d\r\n%b\r\nEND\r\n" % (
                key, len(val), val)


def test_a_worker_killed_holding_the_store_lock_is_rescued(srv: ServerProc) -> None:
    socks, by_pid = spread(srv, 16)
    assert len(by_pid) >= 2
    for i in range(100):
        assert ask(socks[i % 16], b"set h%d 0 0 3\r\nabc\r\n" % i) == b"STORED\r\n"
    holder, other = list(by_pid)[:2]
    os.kill(holder, signal.SIGUSR2)  # the test hook: it takes the lock and keeps it
    probe = by_pid[other][0]
    # The hook runs when the holder's main thread next wakes, so a first get may still be
    # served: ask until one is blocked behind the held lock (bounded).
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "the hook never took the lock"
        probe.settimeout(1.0)
        try:
            assert ask(probe, b"get h5\r\n", b"END\r\n") == b"VALUE h5 0 3\r\nabc\r\nEND\r\n"
        except TimeoutError:
            break
    os.kill(holder, signal.SIGKILL)
    probe.settimeout(15)
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += probe.recv(100)
    assert buf == b"VALUE h5 0 3\r\nabc\r\nEND\r\n"
    assert stats(probe)["curr_items"] == "100"  # the repair recounted (the hook added 1000)
    for i in range(100):
        assert ask(probe, b"get h%d\r\n" % i, b"END\r\n") == b"VALUE h%d 0 3\r\nabc\r\nEND\r\n" % i
    wait_for(lambda: replaced(srv, holder))


def test_sigterm_drains_every_worker_and_leaves_nothing_behind() -> None:
    before = shm()
    srv = start_node("-t", str(WORKERS))
    try:
        wait_for(lambda: len(workers_of(srv)) == WORKERS)
        tree = [srv.proc.pid, *children(srv.proc.pid), *workers_of(srv)]
        socks, by_pid = spread(srv, 12)
        assert len(by_pid) >= 2
        for s in socks:  # one request each, in flight as the signal lands
            s.sendall(b"set d 0 0 1\r\n1\r\nget d\r\n")
        assert srv.stop(signal.SIGTERM) == 0
        for s in socks:
            buf = b""
            while True:
                data = s.recv(100)
                if not data:
                    break
                buf += data
            assert buf == b"STORED\r\nVALUE d 0 1\r\n1\r\nEND\r\n"
            s.close()
        wait_for(lambda: not any(alive(p) for p in tree), 10)
        with pytest.raises(OSError):
            socket.create_connection(srv.address, timeout=1).close()
        wait_for(lambda: shm() <= before, 5)  # others' short-lived entries aside
    finally:
        srv.stop()


def test_a_shutdown_command_stops_every_worker() -> None:
    srv = start_node("-t", str(WORKERS), "-A")
    try:
        wait_for(lambda: len(workers_of(srv)) == WORKERS)
        tree = [srv.proc.pid, *children(srv.proc.pid), *workers_of(srv)]
        with srv.connect() as s:
            s.sendall(b"shutdown\r\n")
        srv.proc.wait(20)
        assert srv.proc.returncode == 0
        wait_for(lambda: not any(alive(p) for p in tree), 10)
    finally:
        srv.stop()


def test_no_worker_outlives_a_killed_supervisor() -> None:
    before = shm()
    srv = start_node("-t", str(WORKERS))
    wait_for(lambda: len(workers_of(srv)) == WORKERS)
    tree = [*children(srv.proc.pid), *workers_of(srv)]
    srv.stop(signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in tree), 10)
    wait_for(lambda: shm() <= before, 5)  # others' short-lived entries aside

"""The node-wide tables in the shared segment, on a bare segment: the log rings, the prefix
counters and the connection table. Forked children stand in for other worker processes."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable

from memcache_server import watch
from memcache_server.server.connections import ConnectionTable, id_stride
from memcache_server.stats import MAX_PREFIXES, PrefixStats, prefix_reserve
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.segment import Segment


def in_child(work: Callable[[], bool]) -> int:
    """Run ``work`` in a forked process; its exit code (0: it returned True)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        signal.alarm(30)
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def new_logger(rings: int = 2, ring_kb: int = 16, watcher_kb: int = 256) -> watch.Logger:
    seg = Segment(watch.reserve(rings, ring_kb * 1024))
    return watch.Logger(watcher_kb * 1024, ManualClock(1_700_000_000), seg, rings,
                        ring_kb * 1024)


def watching(logger: watch.Logger, mask: int) -> socket.socket:
    """A watcher on one end of a socket pair; the other end (returned) reads its stream."""
    ours, theirs = socket.socketpair()
    assert logger.add(ours.fileno(), mask)
    ours.close()  # the logger keeps its own duplicate
    theirs.settimeout(5)
    return theirs


def drain(logger: watch.Logger, sock: socket.socket) -> bytes:
    logger.pump()
    sock.setblocking(False)
    out = b""
    try:
        while chunk := sock.recv(1 << 20):
            out += chunk
    except BlockingIOError:
        pass
    sock.settimeout(5)
    return out


# ------------------------------------------------------------------ log rings


def test_nothing_is_logged_while_nobody_watches_that_stream() -> None:
    logger = new_logger()
    assert logger.observed[0] == 0 and logger.mask == 0
    watch.log_get(logger, 7, b"k", 1, 1, 2)
    assert logger.written == 0
    w = watching(logger, watch.MUTATIONS)
    assert logger.observed[0] == 1 and logger.mask == watch.MUTATIONS
    watch.log_get(logger, 7, b"k", 1, 1, 2)  # fetchers: still nobody
    watch.log_store(logger, 7, b"set", b"k", 0, 1, 2, 0)
    assert logger.written == 1
    assert re.fullmatch(rb"ts=\d+\.\d+ gid=1 type=item_store key=k status=stored cmd=set "
                        rb"ttl=0 clsid=1 cfd=7 size=2\n", drain(logger, w))
    w.close()
    logger.pump()  # notices the hang-up
    assert logger.watching == 0 and logger.observed[0] == 0 and logger.mask == 0


def test_a_connevents_watcher_does_not_turn_on_the_item_paths() -> None:
    logger = new_logger()
    w = watching(logger, watch.CONNEVENTS)
    assert logger.mask == watch.CONNEVENTS and logger.observed[0] == 0
    logger.set_detail(True)
    assert logger.observed[0] == 1
    logger.set_detail(False)
    assert logger.observed[0] == 0 and logger.mask == watch.CONNEVENTS
    w.close()


def test_lines_come_out_in_order_with_consecutive_gids() -> None:
    logger = new_logger()
    w = watching(logger, watch.FETCHERS)
    for i in range(50):
        watch.log_get(logger, 3, b"key:%d" % i, 0, 0, 0)
    lines = drain(logger, w).splitlines()
    assert [int(re.search(rb"gid=(\d+)", ln)[1]) for ln in lines] == list(range(1, 51))  # type: ignore[index]
    assert [re.search(rb"key=(\S+)", ln)[1] for ln in lines] == [  # type: ignore[index]
        b"key%%3A%d" % i for i in range(50)]
    assert logger.sent == 50 and logger.skipped == 0


def test_a_ring_overwritten_before_it_was_read_reports_exactly_what_was_lost() -> None:
    logger = new_logger(ring_kb=16)
    w = watching(logger, watch.FETCHERS)
    total = 2000  # ~140 bytes a record: the 16 KB ring keeps about a hundred
    for i in range(total):
        watch.log_get(logger, 3, b"k%d" % i, 0, 0, 0)
    out = drain(logger, w)
    lines = out.splitlines()
    skipped = [ln for ln in lines if ln.startswith(b"skipped=")]
    got = [ln for ln in lines if ln.startswith(b"ts=")]
    assert len(skipped) == 1 and 50 < len(got) < total
    assert int(skipped[0].split(b"=")[1]) == total - len(got) == logger.skipped
    # what survived is the newest, in order, up to the last line logged
    assert got[-1].split(b"key=")[1].startswith(b"k%d " % (total - 1))
    assert logger.written == total


def test_a_slow_watcher_loses_lines_to_its_own_bound() -> None:
    logger = new_logger(watcher_kb=1)
    w = watching(logger, watch.FETCHERS)
    for i in range(40):
        watch.log_get(logger, 3, b"k%d" % i, 0, 0, 0)
    out = drain(logger, w)
    assert len(out.splitlines()) < 40 and logger.skipped > 0
    for i in range(3):  # once drained, it catches up and is told how much it missed
        watch.log_get(logger, 3, b"late%d" % i, 0, 0, 0)
    out = drain(logger, w) + drain(logger, w)
    assert b"skipped=" in out and b"key=late2 " in out


def test_events_logged_in_another_process_reach_this_watcher() -> None:
    logger = new_logger(rings=3)
    w = watching(logger, watch.CONNEVENTS | watch.MUTATIONS)

    def worker_one() -> bool:
        logger.bind(1)
        watch.log_conn(logger, True, "tcp:10.0.0.9:4000", 10_000_021)
        watch.log_store(logger, 10_000_021, b"set", b"x", 0, 1, 2, 0)
        watch.log_get(logger, 10_000_021, b"x", 1, 1, 2)  # not watched: not written
        return logger.written == 2

    assert in_child(worker_one) == 0
    watch.log_store(logger, 5, b"add", b"y", 0, 1, 2, 1)
    out = drain(logger, w)
    assert re.search(rb"gid=1000000000001 type=conn_new rip=10\.0\.0\.9 rport=4000 "
                     rb"transport=tcp cfd=10000021\n", out), out
    assert re.search(rb"gid=1000000000002 type=item_store key=x .* cfd=10000021 ", out), out
    assert re.search(rb"gid=1 type=item_store key=y status=not_stored cmd=add", out), out
    assert logger.written == 3


def test_watchers_of_a_dead_worker_are_forgotten_by_reclaim() -> None:
    logger = new_logger(rings=3)
    r, wfd = os.pipe()

    def worker_one() -> bool:
        logger.bind(1)
        ours, theirs = socket.socketpair()
        assert logger.add(ours.fileno(), watch.FETCHERS)
        os.write(wfd, b"x")
        signal.pause()  # killed here, watcher held
        return True

    pid = os.fork()
    if pid == 0:
        try:
            worker_one()
        finally:
            os._exit(1)
    assert os.read(r, 1) == b"x"
    assert logger.watching == 1 and logger.observed[0] == 1  # seen from this process too
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    logger.reclaim(1)
    assert logger.watching == 0 and logger.observed[0] == 0 and logger.mask == 0


def test_the_watcher_limit_is_node_wide() -> None:
    logger = new_logger(rings=3)
    socks = [watching(logger, watch.FETCHERS) for _ in range(watch.MAX_WATCHERS - 1)]

    def worker_one() -> bool:
        logger.bind(1)
        a, _ = socket.socketpair()
        b, _ = socket.socketpair()
        return logger.add(a.fileno(), watch.FETCHERS) and not logger.add(b.fileno(), 4)

    assert in_child(worker_one) == 0
    spare, _ = socket.socketpair()
    assert not logger.add(spare.fileno(), watch.FETCHERS)
    for s in socks:
        s.close()


# ------------------------------------------------------------------ prefix counters


def new_prefixes(slots: int = 2) -> PrefixStats:
    return PrefixStats(b":", Segment(prefix_reserve(slots)), slots)


def test_prefix_counts_from_every_slot_are_summed_exactly() -> None:
    prefixes = new_prefixes(3)

    def count(slot: int) -> Callable[[], bool]:
        def work() -> bool:
            prefixes.bind(slot)
            for i in range(500):
                prefixes.record_get(b"p%d:k" % (i % 7), i % 2 == 0)
                prefixes.record_set(b"shared:%d" % i)
            prefixes.record_delete(b"only%d:x" % slot)
            return True
        return work

    pids = []
    for slot in (1, 2):
        pid = os.fork()
        if pid == 0:
            try:
                count(slot)()
            finally:
                os._exit(0)
        pids.append(pid)
    count(0)()
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    got = dict(prefixes.snapshot())
    assert got[b"shared"] == [0, 0, 1500, 0]
    assert sum(got[b"p%d" % i][0] for i in range(7)) == 1500
    assert sum(got[b"p%d" % i][1] for i in range(7)) == 750
    assert all(got[b"only%d" % s] == [0, 0, 0, 1] for s in range(3))
    assert len(got) == 7 + 1 + 3  # each prefix once, whichever process saw it first


def test_past_its_bound_a_new_prefix_is_not_counted_and_old_ones_still_are() -> None:
    prefixes = new_prefixes(1)
    for i in range(MAX_PREFIXES + 5):
        prefixes.record_set(b"p%d:x" % i)
    prefixes.record_set(b"p0:y")
    dump = prefixes.dump()
    assert dump.count(b"PREFIX ") == MAX_PREFIXES and dump.endswith(b"END\r\n")
    assert b"PREFIX p0 get 0 hit 0 set 2 del 0\r\n" in dump
    assert b"PREFIX p%d " % MAX_PREFIXES not in dump
    assert prefixes.dropped == 5
    prefixes.clear()
    assert prefixes.dump() == b"END\r\n" and prefixes.dropped == 0
    prefixes.record_get(b"again:1", True)
    assert prefixes.dump() == b"PREFIX again get 1 hit 1 set 0 del 0\r\nEND\r\n"


def test_keys_without_the_delimiter_are_not_counted() -> None:
    prefixes = new_prefixes()
    prefixes.record_get(b"plain", True)
    prefixes.record_set(b":empty-prefix")
    assert prefixes.dump() == b"PREFIX  get 0 hit 0 set 1 del 0\r\nEND\r\n"


# ------------------------------------------------------------------ connection table


class FakeConn:
    """The attributes of a worker's Connection the table reads and writes."""

    def __init__(self, fd: int, peer: str) -> None:
        self.fd = fd
        self.cid = fd
        self.rec = -1
        self.peer = peer
        self.listen_addr = "tcp:127.0.0.1:11211"
        self.last_active = 1_700_000_000


def new_table(max_connections: int, slots: int) -> ConnectionTable:
    seg = Segment(ConnectionTable.reserve(max_connections, slots) + watch.reserve(1, 0))
    logger = watch.Logger(1024, ManualClock(0), seg, 1, 0)
    return ConnectionTable(max_connections, logger, lambda: 0, seg, slots)


def open_conn(table: ConnectionTable, slot: int, fd: int, peer: str) -> FakeConn | None:
    if not table.admit(slot):
        return None
    conn = FakeConn(fd, peer)
    conn.cid = table.conn_id(fd)
    table.opened(conn, slot)  # type: ignore[arg-type]
    return conn


def test_ids_are_unique_node_wide_and_the_fd_itself_for_worker_zero() -> None:
    table = new_table(10, 3)
    stride = id_stride()
    assert table.conn_id(17) == 17  # in the node's own process, whichever worker thread
    assert stride > 1_000 and str(stride).strip("0") == "1"

    def worker_two() -> bool:
        table.forked(2)
        return table.conn_id(17) == 2 * stride + 17

    assert in_child(worker_two) == 0


def test_the_limit_and_the_counters_are_node_wide() -> None:
    table = new_table(3, 2)
    table.listening(1)
    a = open_conn(table, 0, 20, "tcp:127.0.0.1:1000")
    assert a is not None

    def worker_one() -> bool:
        table.forked(1)
        return (open_conn(table, 1, 20, "tcp:127.0.0.1:2000") is not None
                and open_conn(table, 1, 21, "tcp:[::1]:2001") is not None
                and open_conn(table, 1, 22, "tcp:127.0.0.1:2002") is None)  # the 4th: refused

    assert in_child(worker_one) == 0
    assert open_conn(table, 0, 23, "tcp:127.0.0.1:1001") is None
    assert (table.curr_connections, table.total_connections, table.rejected_connections) == (
        3, 4, 2)
    assert table.connection_structures == 1 + 1 + 2  # listeners + each slot's high-water
    stride = table.id_stride
    assert [(c.cid, c.peer) for c in table.records_all()] == [
        (20, "tcp:127.0.0.1:1000"),
        (stride + 20, "tcp:127.0.0.1:2000"),
        (stride + 21, "tcp:[::1]:2001"),
    ]
    table.closed(a, 0)  # type: ignore[arg-type]
    assert table.curr_connections == 2 and len(table.records_all()) == 2
    table.reset_counts()
    assert (table.total_connections, table.rejected_connections) == (0, 0)
    table.reclaim(1)  # worker 1's process died with its connections
    assert table.curr_connections == 0 and table.records_all() == []
    assert open_conn(table, 1, 20, "tcp:127.0.0.1:3000") is not None
    assert table.total_connections == 1


def test_a_record_is_reused_and_its_last_command_time_is_shared() -> None:
    table = new_table(2, 1)
    a = open_conn(table, 0, 9, "unix:/tmp/a-socket-path")
    assert a is not None
    a.last_active += 30
    table.touch(a)  # type: ignore[arg-type]
    (info,) = table.records_all()
    assert info.last_active == a.last_active and info.state == "conn_waiting"
    assert info.peer == "unix:/tmp/a-socket-path"
    table.closed(a, 0)  # type: ignore[arg-type]
    for fd in range(10, 40):  # far more than the slot's records, one at a time
        c = open_conn(table, 0, fd, f"tcp:127.0.0.1:{fd}")
        assert c is not None and [r.cid for r in table.records_all()] == [fd]
        table.closed(c, 0)  # type: ignore[arg-type]


def test_bytes_held_for_connections_are_summed_over_worker_processes() -> None:
    """read_buf_mem_limit's figure: what each worker process charges is seen by the others,
    and a dead worker's charge goes with it."""
    table = new_table(8, 3)
    table.charge(0, 1000)

    def worker_two() -> bool:
        table.forked(2)
        table.charge(2, 5000)
        table.charge(2, -1000)
        return table.buffered == 1000 + 4000

    assert in_child(worker_two) == 0
    assert table.buffered == 5000
    table.reclaim(2)  # worker 2's process died: what its connections held is gone
    assert table.buffered == 1000

"""Node-wide state in the shared segment: what one process changes, every other one sees.

The node is built in this process (as the supervisor builds it); a forked child plays a worker
process by driving a ``Session`` on the same node with its own counter block, then exits; the
parent checks what it sees. Counters are summed over worker blocks, and run-time settings,
requests to background threads, the clock and the cluster document cross processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from memcache_server.app import Node
from memcache_server.config import ServerConfig
from memcache_server.protocol.document import parse_document
from memcache_server.stats import (
    BLOCK_WORDS,
    GET_CMDS,
    MAX_WORKERS,
    THREAD_FIELDS,
    WorkerCounters,
)

DOC_V1 = b"1\nhost-a|10.0.0.1|11211\n"
DOC_V2 = b"2\nhost-a|10.0.0.1|11211 host-b|10.0.0.2|11211\n"


def close(node: Node) -> None:
    """Close what the never-started workers opened."""
    for w in node.workers:
        w.poller.close()
        os.close(w._wake_r)
        os.close(w._wake_w)


@pytest.fixture
def make_node() -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(**settings: object) -> Node:
        node = Node(ServerConfig(threads=4, **settings))  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.crawler.stop()
        node.rebalancer.stop()
        for t in (node.crawler, node.rebalancer):
            if t.is_alive():
                t.join(10)
        close(node)


def ask(node: Node, worker: int, request: bytes) -> bytes:
    """``request``'s replies from a session counting in worker ``worker``'s block."""
    session = node.new_session(node.worker_stats(worker))
    session.feed(request)
    while session.process(100):
        pass
    return bytes(session.out)


def in_child(work: Callable[[], bool]) -> int:
    """Run ``work`` in a forked process (a worker); its exit code, 0 when it returned True."""
    pid = os.fork()
    if pid == 0:  # never returns into pytest
        code = 1
        signal.alarm(30)  # bounded: a child stuck on a broken segment dies and fails the test
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def stats(node: Node, sub: bytes = b"") -> dict[str, str]:
    reply = ask(node, 0, b"stats %s\r\n" % sub if sub else b"stats\r\n")
    return dict(line.split(" ", 2)[1:] for line in reply.decode().splitlines()[:-1])


def until(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


# ------------------------------------------------------------------ counters


def test_worker_counter_blocks_are_bounded_padded_and_summed() -> None:
    counters = WorkerCounters(memoryview(bytearray(WorkerCounters.NBYTES)))
    assert WorkerCounters.NBYTES == MAX_WORKERS * BLOCK_WORDS * 8 and MAX_WORKERS >= 64
    assert (BLOCK_WORDS * 8) % 64 == 0  # no two workers write one cache line
    for i in (0, 1, MAX_WORKERS - 1):
        counters.block(i)[GET_CMDS] += i + 1
    with pytest.raises(IndexError):
        counters.block(MAX_WORKERS)
    assert counters.sum(2)["get_cmds"] == 3  # the first -t blocks only
    assert counters.sum(MAX_WORKERS)["get_cmds"] == 3 + MAX_WORKERS
    assert set(counters.sum(1)) == set(THREAD_FIELDS)
    counters.reset(2)
    assert counters.sum(MAX_WORKERS)["get_cmds"] == MAX_WORKERS  # past -t: left alone


def test_stats_sums_what_every_worker_process_counted(make_node: Callable[..., Node]) -> None:
    node = make_node()
    assert ask(node, 0, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"

    def worker(k: int) -> Callable[[], bool]:
        return lambda: ask(node, k, b"get k\r\nget nope\r\n" * k).count(b"VALUE") == k

    assert [in_child(worker(k)) for k in (1, 2, 3)] == [0, 0, 0]
    seen = stats(node)
    assert (seen["cmd_get"], seen["get_hits"], seen["get_misses"]) == ("12", "6", "6")
    assert seen["cmd_set"] == "1" and seen["total_items"] == "1"
    assert in_child(lambda: ask(node, 2, b"stats reset\r\n") == b"RESET\r\n") == 0
    seen = stats(node)
    assert (seen["cmd_get"], seen["get_hits"], seen["get_misses"]) == ("0", "0", "0")


# ------------------------------------------------------------------ settings


def test_verbosity_and_detail_set_in_one_process_hold_in_another(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    assert in_child(lambda: ask(node, 1, b"verbosity 2\r\nstats detail on\r\n")
                    == b"OK\r\nOK\r\n") == 0
    assert node.verbosity == 2
    assert node.workers[0].settings_words[0] == 2  # what a worker's request path reads
    settings = stats(node, b"settings")
    assert (settings["verbosity"], settings["detail_enabled"]) == ("2", "yes")
    assert node.detail is not None and node.parts.observed
    assert in_child(lambda: ask(node, 3, b"stats detail off\r\n") == b"OK\r\n") == 0
    assert node.detail is None and stats(node, b"settings")["detail_enabled"] == "no"


def test_crawler_and_automove_settings_cross_processes(make_node: Callable[..., Node]) -> None:
    node = make_node()
    request = (b"lru_crawler sleep 77\r\nlru_crawler tocrawl 9\r\nlru_crawler disable\r\n"
               b"slabs automove 2\r\nslabs automove ratio 0.5\r\ncache_memlimit 100\r\n")
    assert in_child(lambda: ask(node, 1, request) == b"OK\r\n" * 6) == 0
    settings = stats(node, b"settings")
    assert (settings["lru_crawler_sleep"], settings["lru_crawler_tocrawl"]) == ("77", "9")
    assert (settings["lru_crawler"], settings["slab_automove"]) == ("no", "2")
    assert (settings["slab_automove_ratio"], settings["maxbytes"]) == ("0.50", str(100 << 20))
    assert node.crawler.sleep_us == 77 and node.rebalancer.ratio == 0.5


def test_a_crawl_asked_for_in_a_worker_is_run_by_the_crawler_thread(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    node.crawler.start()
    assert until(lambda: node.crawler.starts == 1 and not node.crawler.running)
    # the thread now idles for its 5 s interval: only the shared request can wake it sooner
    assert ask(node, 0, b"set a 0 -1 1\r\na\r\nset b 0 -1 1\r\nb\r\n") == b"STORED\r\n" * 2
    start = time.monotonic()
    assert in_child(lambda: ask(node, 1, b"lru_crawler crawl all\r\n") == b"OK\r\n") == 0
    assert until(lambda: node.store.crawler_reclaimed == 2)
    assert time.monotonic() - start < 4  # woken by the request, not by the interval
    assert stats(node)["crawler_reclaimed"] == "2"


def test_a_reassign_asked_for_in_a_worker_is_run_by_the_mover(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    store = node.store
    value = b"x" * 100
    n = 0
    cid = store.table.class_for(store.table.item_size(6, 0, len(value) + 2))
    while store.classes[cid].npages < 3:
        assert ask(node, 0, b"set k%d 0 0 100\r\n%b\r\n" % (n, value)) == b"STORED\r\n"
        n += 1
    node.rebalancer.start()
    assert in_child(lambda: ask(node, 1, b"slabs reassign %d 0\r\n" % cid) == b"OK\r\n") == 0
    assert until(lambda: store.moves.slabs_moved == 1)
    assert store.classes[cid].npages == 2 and store.pool_pages == 1
    assert stats(node)["slabs_moved"] == "1"


# ------------------------------------------------------------------ clock, shutdown, cluster


def test_debugtime_in_a_worker_moves_every_process_clock(make_node: Callable[..., Node]) -> None:
    node = make_node(debug_time=True)
    assert node.store.clock is node.clock
    before = node.clock.now
    assert in_child(lambda: ask(node, 1, b"debugtime 1000\r\n") == b"OK\r\n") == 0
    assert node.clock.offset == 1000 and node.clock.now >= before + 1000
    node.clock.tick()  # the supervisor's ticker keeps the offset
    assert node.clock.now >= before + 1000
    assert int(stats(node)["time"]) >= before + 1000


def test_shutdown_in_a_worker_stops_the_node(make_node: Callable[..., Node]) -> None:
    node = make_node(shutdown_enabled=True)
    waited = threading.Thread(target=node.wait, daemon=True)
    waited.start()
    assert in_child(lambda: ask(node, 1, b"shutdown graceful\r\n") == b"") == 0
    waited.join(5)
    assert not waited.is_alive() and node.graceful and not node.hurry_requested()
    assert in_child(lambda: ask(node, 2, b"shutdown\r\n") == b"") == 0
    assert node.hurry_requested()


def test_the_cluster_document_is_one_for_every_process(make_node: Callable[..., Node]) -> None:
    node = make_node(allow_config_writes=True)
    config_set = b"config set cluster 0 %d\r\n%b\r\n" % (len(DOC_V1), DOC_V1)
    assert in_child(lambda: ask(node, 1, config_set) == b"STORED\r\n") == 0
    expected = b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(DOC_V1), DOC_V1)
    assert ask(node, 0, b"config get cluster\r\n") == expected
    # the membership (in the supervisor) offers a newer one: a worker serves it
    assert node.cluster.offer(parse_document(DOC_V2))
    expected = b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(DOC_V2), DOC_V2)
    assert in_child(lambda: ask(node, 2, b"config get cluster\r\n") == expected) == 0
    assert in_child(lambda: ask(node, 3, b"config delete cluster\r\n") == b"DELETED\r\n") == 0
    assert node.cluster.document is None
    counters = node.cluster.counters
    assert (counters.config_updates, counters.config_requests) == (2, 2)

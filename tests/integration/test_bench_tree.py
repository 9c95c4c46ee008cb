"""The bench measures a ``-t 2`` node as a whole tree: supervisor -> spawner -> workers.

The workers that serve are grandchildren of the PID the bench started, so the CPU and memory
the bench reports must come from every generation.  Checked against a real node: the workers
are found independently (the children of the supervisor's one child, from /proc), driven with
pipelined gets, and their own CPU must show up in the tree's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from procs import ServerProc, start_node

from memcache_server.load.bench_procmem import tree_memory
from memcache_server.load.bench_servers import CLK_TCK, cpu_seconds, process_tree


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return sorted(out)


def _own_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _drive(srv: ServerProc, connections: int = 8, gets: int = 10_000) -> None:
    """Pipelined gets on several connections (so both workers get some), every reply read."""
    socks = [srv.connect(timeout=30) for _ in range(connections)]
    try:
        for s in socks:
            s.sendall(b"".join(b"get bench:%d\r\n" % i for i in range(gets)))
        for s in socks:
            buf = b""
            while buf.count(b"END\r\n") < gets:
                chunk = s.recv(65536)
                assert chunk, "node closed a connection"
                buf += chunk
    finally:
        for s in socks:
            s.close()


def test_tree_cpu_and_memory_include_the_workers() -> None:
    srv = start_node("-t", "2", "-m", "16")
    try:
        root = srv.proc.pid
        (spawner,) = _children(root)
        # the node answers once the supervisor has bound; the spawner forks the workers then
        deadline = time.monotonic() + 10
        while len(workers := _children(spawner)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2
        tree = dict(process_tree(root))
        assert tree == {root: 0, spawner: 1, workers[0]: 2, workers[1]: 2}

        tree_before = cpu_seconds(root)
        workers_before = _own_cpu(workers)
        _drive(srv)
        workers_used = _own_cpu(workers) - workers_before
        tree_used = cpu_seconds(root) - tree_before
        assert workers_used > 0
        assert tree_used + 1e-6 >= workers_used  # the grandchildren's CPU is in the tree's

        mem = tree_memory(root)
        assert mem["processes"] == 4
        assert isinstance(mem["worker_uss_kib"], list) and len(mem["worker_uss_kib"]) == 2
        assert isinstance(mem["worker_own_kib"], list) and all(k > 0 for k in mem["worker_own_kib"])
        # four processes map the same interpreter pages and segment: counted once, PSS < RSS
        assert isinstance(mem["pss_kib"], int) and isinstance(mem["rss_kib"], int)
        assert 0 < mem["pss_kib"] < mem["rss_kib"]
    finally:
        srv.stop()

"""Memory of a server's whole process tree, for the bench's memory section.

RSS summed over processes counts a shared page once per process that maps it, so a node of N
workers over one shared segment would look N times its size.  PSS (proportional set size)
divides each shared page among its mappers, so the tree's PSS sums to what the tree really
costs, with the segment counted once; USS (``Private_Clean + Private_Dirty``) is the memory
mapped by that process alone.  All three come from ``/proc/<pid>/smaps_rollup`` (Linux 4.14+).

USS alone misjudges a worker: a page of the shared segment that only one worker has touched
counts as private to it (the kernel calls a page private by how many map it, not by how it is
mapped), so the worker that took the writes looks as big as the cache.  What one more worker
really costs is its *own* memory: the private pages of its private mappings (heap, stacks,
copied-on-write pages), read from the per-mapping ``/proc/<pid>/smaps``, the segment left out.
All figures in KiB.  A process that exits while it is read is skipped: the tree is read as it
stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from memcache_server.load.bench_servers import process_tree


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """``Name: <n> kB`` lines of ``smaps_rollup`` as ``{name: KiB}``; other lines are skipped
    (the first is the ``[rollup]`` address range)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[name.strip()] = int(parts[0])
    return out


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ([-rwxsp]{4}) ")


def own_private_kib(smaps: str) -> int:
    """``Private_Clean + Private_Dirty`` summed over the private (``p``) mappings of a
    ``/proc/<pid>/smaps`` text: a process's own memory, shared mappings (the segment) left out."""
    total, private = 0, False
    for line in smaps.splitlines():
        m = _MAPPING.match(line)
        if m:
            private = m.group(1)[3] == "p"
        elif private and line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


@dataclass(frozen=True)
class ProcMem:
    """One process of a tree: its place (depth 0 is the root) and its memory in KiB."""

    pid: int
    depth: int
    rss: int
    pss: int
    uss: int
    own: int


def proc_mem(pid: int, depth: int, rollup: dict[str, int], own: int) -> ProcMem:
    uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return ProcMem(pid, depth, rollup.get("Rss", 0), rollup.get("Pss", 0), uss, own)


def summarise_tree(procs: list[ProcMem]) -> dict[str, object]:
    """Totals of a tree and the private memory of its workers.

    Workers are the processes two levels down (supervisor -> spawner -> worker); a tree with
    none (memcached, our ``-t 1``) has empty worker lists.
    """
    return {
        "processes": len(procs),
        "rss_kib": sum(p.rss for p in procs),
        "pss_kib": sum(p.pss for p in procs),
        "uss_kib": sum(p.uss for p in procs),
        "worker_uss_kib": [p.uss for p in procs if p.depth == 2],
        "worker_own_kib": [p.own for p in procs if p.depth == 2],
    }


def tree_memory(pid: int) -> dict[str, object]:
    """``summarise_tree`` of the live tree rooted at ``pid``; raises ``OSError`` when the
    root's ``smaps_rollup`` cannot be read (an old kernel, or another user's process)."""
    procs = []
    for p, depth in process_tree(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            smaps = Path(f"/proc/{p}/smaps").read_text()
        except OSError:
            if p == pid:
                raise
            continue
        procs.append(proc_mem(p, depth, parse_smaps_rollup(rollup), own_private_kib(smaps)))
    return summarise_tree(procs)

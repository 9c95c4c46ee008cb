"""The store's lock once several processes serve one segment, and its recovery from a SIGKILL.

Why a semaphore: ``multiprocessing``'s ``Lock`` (fork context) is a POSIX semaphore in shared
memory, created before the workers are forked: an uncontended acquire and release are two
atomic operations in user space (~66 ns), a contended one sleeps on a futex. An OFD file lock
costs a system call each way (~35 us contended). A semaphore is not robust: a holder killed
with SIGKILL leaves it taken. So the holder's pid sits in a word of the segment, written right
after the acquire and cleared right before the release, and whoever reaps a dead process
(the supervisor, ``rescue``) gives the lock back, after the store's repair pass when the dead
process was inside the store (``storage/repair.py``).

The owner word has two windows in which it is 0 while the semaphore is taken: between the
acquire and the write, and between the clear and the release. A process dying in one of them
had not yet touched the store, or had finished with it, so no repair is needed, only the
release. ``rescue`` tells that case from a live holder by watching for ``ORPHAN_PATIENCE``
seconds: a live holder writes its pid within instructions of the acquire, or releases.

No lock is held across a system call here: the pid is cached (and refreshed after a fork)
rather than asked of the kernel on every acquire. Threads of one process share the semaphore
as separate holders; it is not recursive, as the ``threading.Lock`` it replaces was not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["ProcessLock", "ORPHAN_PATIENCE", "Rescue", "preload"]

ORPHAN_PATIENCE = 3.0  # seconds the lock must stay taken with no owner before it is an orphan
SPINS = 1000  # tries of a taken lock before sleeping on it (about 100 us; see _contended)
_ME = [os.getpid()]  # this process's pid, kept current across forks (getpid is a system call)


def _forked() -> None:
    _ME[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


def preload() -> None:
    """Import what a ProcessLock needs now, before a node drops root (after which it may not
    read the standard library's files). Only a node with worker processes calls this: the
    multiprocessing modules cost a single-process node about 1.4 MB."""
    import multiprocessing.synchronize  # noqa: F401


class Rescue:
    """What ``ProcessLock.rescue`` found: the dead process held the lock or not."""

    FREE = "free"  # someone else holds it, or nobody: nothing to do
    REPAIRED = "repaired"  # the dead process held it inside the store: repaired, then released
    ORPHANED = "orphaned"  # taken with no owner word: released (the store was not mid-change)


class ProcessLock:
    """A process-shared lock with its holder's pid in ``owner[0]`` (a word of the segment)."""

    __slots__ = ("_sem", "owner", "_acquire", "_release")

    def __init__(self, owner: memoryview) -> None:
        import multiprocessing  # loaded by preload() when the node has worker processes

        self._sem = multiprocessing.get_context("fork").Lock()
        self.owner = owner
        owner[0] = 0
        self._acquire = self._sem.acquire
        self._release = self._sem.release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """``threading.Lock.acquire``'s contract: a negative timeout waits for ever. (The
        semaphore reads a negative timeout as 0, a try that may fail: passed on as it was, a
        plain ``acquire()`` could return False with the lock in another's hands.)"""
        if not self._acquire(blocking, None if timeout < 0 else timeout):
            return False
        self.owner[0] = _ME[0]
        return True

    def release(self) -> None:
        self.owner[0] = 0
        self._release()

    def __enter__(self) -> bool:
        if not self._acquire(False):
            self._contended()
        self.owner[0] = _ME[0]
        return True

    def _contended(self) -> None:
        """Taken by another process: try again up to SPINS times before sleeping on it.

        Why spin: a hold is a few microseconds, but a waiter that sleeps pays a futex wait, a
        wake-up system call from the releaser (glibc's semaphore wakes on every release while
        anyone sleeps) and a scheduler wake-up (tens of microseconds on a virtual CPU). With
        four workers on two cores, 1.3 futex calls per request were measured, and memcaslap
        50/50 get/set gained 11-21% (get90 12-17%) from spinning 1,000 tries (alternated A/B,
        3 pairs each); 10 tries gained nothing, 5,000 less than 1,000, and a sched_yield
        every 10 or 50 tries lost 7-15%. A holder that is not running (preempted) costs a
        waiter the spin and then the sleep: bounded, and the kernel preempts the spinner."""
        acquire = self._acquire
        for _ in range(SPINS):
            if acquire(False):
                return
        acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.owner[0] = 0
        self._release()

    def rescue(self, dead: int, repair: Callable[[], object],
               patience: float = ORPHAN_PATIENCE) -> str:
        """After reaping process ``dead``: give the lock back if it died holding it.

        Called by the process that reaped it, holding nothing. When the owner word names the
        dead pid, the store may be mid-change: ``repair`` runs (as the holder) before the
        release. A lock that stays taken with an empty owner word for ``patience`` seconds was
        taken by the dead process in one of the two windows (see the module docstring)."""
        deadline = time.monotonic() + patience
        while True:
            holder = int(self.owner[0])
            if holder == dead:
                self.owner[0] = _ME[0]
                try:
                    repair()
                finally:
                    self.release()
                return Rescue.REPAIRED
            if holder != 0:
                return Rescue.FREE  # a live process holds it: the dead one cannot
            if self._acquire(True, 0.05):
                self._release()
                return Rescue.FREE
            if int(self.owner[0]) == 0 and time.monotonic() >= deadline:
                self._release()
                return Rescue.ORPHANED

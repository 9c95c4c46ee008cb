"""The store's lock once several processes serve one segment: robust to a holder's SIGKILL.

Why an OFD lock: Python has no robust process-shared mutex. An open-file-description lock
(``F_OFD_SETLKW``) on a byte of the segment's file is one system call to take and one to
drop, and the kernel drops it when the holder's description closes, which a process killed
with SIGKILL always does: a dead worker never leaves the store locked. Each process opens its
own description of the file (through ``/proc/self/fd``), because a description shared across
``fork`` would be one owner, and locks owned by one description never exclude each other.
Threads of one process are serialised by a ``threading.Lock`` first, since they share the
description.

A single-process node keeps the plain ``threading.Lock`` (``Items.share`` swaps this in),
so ``-t 1`` pays nothing for it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from types import TracebackType

__all__ = ["SegmentLock"]

_FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD)


class SegmentLock:
    """A lock on byte ``offset`` of the segment file, exclusive across processes and threads."""

    __slots__ = ("fd", "offset", "pid", "own_fd", "threads", "take", "drop")

    def __init__(self, fd: int, offset: int = 0) -> None:
        self.fd = fd
        self.offset = offset
        self.pid = -1
        self.own_fd = -1
        self.threads = threading.Lock()
        self.take = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        self.drop = struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0)

    def _description(self) -> int:
        """This process's own open file description of the segment (opened once per pid)."""
        pid = os.getpid()
        if pid != self.pid:
            self.own_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDWR | os.O_CLOEXEC)
            self.pid = pid
            self.threads = threading.Lock()  # a lock copied by fork may be held by no one here
        return self.own_fd

    def acquire(self) -> None:
        fd = self._description()
        self.threads.acquire()
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, self.take)

    def release(self) -> None:
        fcntl.fcntl(self.own_fd, fcntl.F_OFD_SETLKW, self.drop)
        self.threads.release()

    def __enter__(self) -> SegmentLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

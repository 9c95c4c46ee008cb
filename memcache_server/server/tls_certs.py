"""The certificate files as one load read them, and the segment area that shares them.

Why: ``refresh_certs`` runs in whichever worker process read it, but every worker process holds
its own TLS context. Telling the others "reload" is not enough: they would read the files later,
after the operator may already have changed them again (a half-written file, the next
certificate), and serve something the command never answered ``OK`` for. So a load first reads
the three files into memory (``CertFiles``), builds its context from exactly those bytes, and a
successful refresh copies the bytes into ``CertArea`` with a new stamp; each other process sees
the stamp move at its next accept and builds its context from the same bytes. Every process
then serves what the command loaded, whatever happened to the files afterwards.

Rules: a file is read whole, up to ``MAX_FILE_BYTES`` (a path to something endless, or a huge
file, is refused with memcached's message for that file, reason "File too large"). A file that
cannot be read is remembered as its error, raised only where that file is used, so the message
names the same file as loading from the paths would. OpenSSL loads from paths, so the bytes are
handed to it through an anonymous in-memory file (``memfd``, by its ``/proc/self/fd`` name),
closed right after: nothing is written anywhere. The area is written and read under its own
segment lock, so a reader never sees half of another refresh; the stamp is read without it (one
word per accept) and only a moved stamp takes the lock.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import AbstractContextManager
from types import TracebackType

from memcache_server.storage.seglock import SegmentLock
from memcache_server.storage.segment import Segment

__all__ = ["CertFiles", "CertArea", "Staged", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 1 << 20  # per file: chains and CA bundles are kilobytes, a system bundle ~200K
ROLES = 3  # chain, key, CA: the order of their length words and data slots
W_STAMP, W_REFRESHED_AT, W_LENGTHS = 0, 1, 2  # header words; a length of -1 means no file
HEADER_BYTES = 64
ABSENT = -1

Content = bytes | OSError | None  # what reading one configured path gave (None: no path)


def read_file(path: str | None) -> Content:
    """One file's bytes, or the error reading it; None when no path was configured."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return exc
    if len(data) > MAX_FILE_BYTES:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), path)
    return data


class CertFiles:
    """The chain, key and CA files' contents at the moment they were read."""

    __slots__ = ("chain", "key", "ca")

    def __init__(self, chain: Content, key: Content, ca: Content) -> None:
        self.chain = chain
        self.key = key
        self.ca = ca

    @classmethod
    def read(cls, chain: str | None, key: str | None, ca: str | None) -> CertFiles:
        return cls(read_file(chain), read_file(key), read_file(ca))

    def contents(self) -> tuple[Content, Content, Content]:
        return self.chain, self.key, self.ca

    def complete(self) -> bool:
        """Every configured file was read (only such a set is ever shared)."""
        return not any(isinstance(c, OSError) for c in self.contents())


class Staged(AbstractContextManager["Staged"]):
    """Paths OpenSSL can open for contents held in memory; closed when the block ends."""

    __slots__ = ("fds",)

    def __init__(self) -> None:
        self.fds: list[int] = []

    def path(self, content: Content) -> str | None:
        """A path to ``content`` (None for no file); raises the error a failed read gave."""
        if content is None:
            return None
        if isinstance(content, OSError):
            raise content
        fd = os.memfd_create("cert", os.MFD_CLOEXEC)
        self.fds.append(fd)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        return f"/proc/self/fd/{fd}"

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


class CertArea:
    """The last refreshed files, their stamp and when: shared by every process of the node.

    Built from the segment before workers fork; without one it is private memory (untouched
    pages cost nothing) with a thread lock, which is all one process needs."""

    __slots__ = ("words", "data", "lock")

    NBYTES = HEADER_BYTES + ROLES * MAX_FILE_BYTES

    def __init__(self, segment: Segment | None = None) -> None:
        if segment is not None:
            offset, view = segment.carve(self.NBYTES)
            self.lock: AbstractContextManager[object] = SegmentLock(segment.fd, offset)
        else:
            view = memoryview(bytearray(self.NBYTES))
            self.lock = threading.Lock()
        self.words = view[:HEADER_BYTES].cast("q")
        self.data = view[HEADER_BYTES:]

    @property
    def stamp(self) -> int:
        """Moves on every successful refresh (read without the lock: one word)."""
        return int(self.words[W_STAMP])

    @property
    def refreshed_at(self) -> int:
        return int(self.words[W_REFRESHED_AT])

    @refreshed_at.setter
    def refreshed_at(self, when: int) -> None:
        self.words[W_REFRESHED_AT] = when

    def publish(self, files: CertFiles, when: int) -> int:
        """Store a complete set and move the stamp; the new stamp. Hold ``lock``."""
        for i, content in enumerate(files.contents()):
            assert not isinstance(content, OSError)
            if content is None:
                self.words[W_LENGTHS + i] = ABSENT
                continue
            at = i * MAX_FILE_BYTES
            self.data[at : at + len(content)] = content
            self.words[W_LENGTHS + i] = len(content)
        self.words[W_REFRESHED_AT] = when
        self.words[W_STAMP] += 1
        return self.stamp

    def files(self) -> CertFiles:
        """The set the last refresh published. Hold ``lock``."""
        found: list[Content] = []
        for i in range(ROLES):
            n = int(self.words[W_LENGTHS + i])
            at = i * MAX_FILE_BYTES
            found.append(None if n == ABSENT else bytes(self.data[at : at + n]))
        return CertFiles(*found)

"""The config node's state file: the last published document, made durable before it is served.

The file holds exactly the canonical document bytes (``cat`` shows what clients were told). A
new version is written to a temporary file in the same directory, fsynced, renamed over the old
file, and the directory is fsynced: after a crash the file is either the old or the new document,
never a torn mix, so the version a restarted config node continues from never goes back.
"""

from __future__ import annotations

import os
from pathlib import Path

from memcache_server.discovery.document import ClusterDocument, DocumentError, parse_document

__all__ = [
    "StateError",
    "check_writable",
    "load_removed",
    "load_state",
    "removed_path",
    "save_removed",
    "save_state",
]

#: sysexits.h: EX_NOINPUT for a state file that cannot be read or trusted, EX_CANTCREAT for one
#: that cannot be written
EX_NOINPUT = 66
EX_CANTCREAT = 73


class StateError(RuntimeError):
    """The state file cannot be used: starting anyway could repeat a version, or publish nothing.

    Carries the exit status the config node stops with."""

    def __init__(self, message: str, exit_code: int = EX_NOINPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_state(path: str | os.PathLike[str]) -> ClusterDocument | None:
    """The last published document, or None when the file does not exist yet (a new cluster)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read state file {p}: {exc.strerror or exc}") from None
    try:
        return parse_document(data)
    except DocumentError as exc:
        raise StateError(f"state file {p} is not a cluster document: {exc}") from None


def save_state(path: str | os.PathLike[str], document: ClusterDocument) -> None:
    """Replace the state file with ``document`` durably (write, fsync, rename, fsync the dir)."""
    _replace(Path(path), document.encode())


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse at start a state file that could never be written: every publish would fail.

    Writes a probe beside it the way a publish writes (same directory, same rename), so a
    missing directory, a read-only mount or a permission problem is found before any node joins.
    """
    p = Path(path)
    probe = p.with_name(p.name + ".probe")
    try:
        _replace(probe, b"")
        probe.unlink()
    except OSError as exc:
        raise StateError(
            f"cannot write state file {p}: {exc.strerror or exc}", EX_CANTCREAT
        ) from None


def removed_path(path: str | os.PathLike[str]) -> Path:
    """Where the operator's removals are kept: beside the state file, ``<state file>.removed``."""
    p = Path(path)
    return p.with_name(p.name + ".removed")


def load_removed(path: str | os.PathLike[str]) -> set[tuple[str, int]]:
    """The nodes an operator removed (hostname, port): one ``hostname port`` line each."""
    p = removed_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read removals file {p}: {exc}") from None
    removed = set()
    for number, line in enumerate(text.splitlines(), 1):
        host, _, port = line.rpartition(" ")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StateError(f"removals file {p} line {number} is not 'hostname port': {line!r}")
        removed.add((host, int(port)))
    return removed


def save_removed(path: str | os.PathLike[str], removed: set[tuple[str, int]]) -> None:
    """Replace the removals file durably, as the state file is replaced."""
    lines = "".join(f"{host} {port}\n" for host, port in sorted(removed))
    _replace(removed_path(path), lines.encode())


def _replace(p: Path, data: bytes) -> None:
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

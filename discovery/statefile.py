"""The config node's state file: the last published document, made durable before it is served.

The file holds exactly the canonical document bytes (``cat`` shows what clients were told). A
new version is written to a temporary file in the same directory, fsynced, renamed over the old
file, and the directory is fsynced: after a crash the file is either the old or the new document,
never a torn mix, so the version a restarted config node continues from never goes back.
"""

from __future__ import annotations

import os
from pathlib import Path

from discovery.document import ClusterDocument, DocumentError, parse_document

__all__ = ["StateError", "load_state", "save_state"]


class StateError(RuntimeError):
    """The state file exists but cannot be trusted: starting anyway could repeat a version."""


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
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    data = document.encode()
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

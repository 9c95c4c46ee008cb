"""The ``-Y`` credential table: ``user:password`` lines, loaded at start and reloaded on SIGHUP.

Why a table object: worker threads check credentials while the clock thread may reload the file
(memcached reloads on SIGHUP from its clock event too). A reload builds a new immutable tuple and
swaps one reference, so a check never sees half a file and never takes a lock; a file that fails
to load leaves the previous table in force, as memcached does.

File format, as memcached reads it: one ``user:password`` per line; the user ends at the first
``:``, the password at the end of the line (``\\r\\n`` or ``\\n``). A line without ``:`` (a blank
line included) makes the whole file malformed. Unlike memcached we keep every entry (it keeps the
first 8), every byte of a long line (it cuts at 255) and the last character of a file without a
final newline (it drops it).
"""

from __future__ import annotations

import os

from memcache_server.config import StartupError

__all__ = ["AuthError", "AuthTable", "parse_authfile"]


class AuthError(StartupError):
    """An auth file that cannot be used; the message is memcached's (and so is exit status 1)."""


def parse_authfile(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """Read and parse ``path``; raises AuthError with memcached's wording."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise AuthError(
            f"Could not open authfile [{path}] for reading, error {reason}: {reason}"
        ) from None
    entries: list[tuple[bytes, bytes]] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline does not start another line
    for line in lines:
        user, sep, password = line.partition(b":")
        if not sep:
            raise AuthError(f"Authfile [{path}] has a malformed entry. Should be 'user:password'")
        password = password.split(b"\r", 1)[0].split(b"\0", 1)[0]
        entries.append((user, password))
    return tuple(entries)


class AuthTable:
    """Credentials in force. ``check`` is called from worker threads, ``reload`` from one other."""

    __slots__ = ("path", "entries", "loads")

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries = parse_authfile(path)
        self.loads = 1

    def check(self, user: bytes, password: bytes) -> bool:
        """True if the pair is in the table; compares every entry in constant time per entry."""
        import hmac  # here: hmac loads OpenSSL's library, which a node without -Y never needs

        ok = False
        for u, p in self.entries:
            # both comparisons always run: the time taken does not tell which half was wrong
            user_ok = hmac.compare_digest(u, user)
            pass_ok = hmac.compare_digest(p, password)
            ok |= user_ok and pass_ok
        return ok

    def reload(self) -> str | None:
        """Re-read the file. Returns None on success, else the error (the old table stays)."""
        try:
            entries = parse_authfile(self.path)
        except AuthError as exc:
            return str(exc)
        self.entries = entries
        self.loads += 1
        return None

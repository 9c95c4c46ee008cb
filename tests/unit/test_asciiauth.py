"""The pre-authentication framer and the credential table, bytes in / events out, no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcache_server.auth import AuthError, AuthTable, parse_authfile
from memcache_server.protocol.asciiauth import (
    AUTH_CLOSE,
    AUTH_CREDENTIALS,
    AUTH_REPLY,
    BAD_TERMINATION,
    BAD_TOKEN_FORMAT,
    UNAUTHENTICATED,
    AuthFramer,
    safe_strtoul,
)

Event = tuple[int, bytes, bytes]


def events(stream: bytes, step: int = 0) -> list[Event]:
    """Every event the stream produces, fed whole (step 0) or ``step`` bytes at a time."""
    framer = AuthFramer()
    out: list[Event] = []
    chunks = [stream] if step == 0 else [stream[i : i + step] for i in range(0, len(stream), step)]
    for chunk in chunks:
        framer.feed(chunk)
        while (ev := framer.next_event()) is not None:
            out.append(ev)
            if ev[0] == AUTH_CLOSE:
                return out
    return out


STREAMS: dict[str, tuple[bytes, list[Event]]] = {
    "credentials": (
        b"set k 0 0 12\r\nalice secret\r\n",
        [(AUTH_CREDENTIALS, b"alice", b"secret")],
    ),
    "other_command": (b"get k\r\n", [(AUTH_REPLY, UNAUTHENTICATED, b"")]),
    "one_token": (b"set k 0 0 5\r\nalice\r\n", [(AUTH_REPLY, BAD_TOKEN_FORMAT, b"")]),
    "no_crlf": (b"set k 0 0 3\r\nabcde", [(AUTH_REPLY, BAD_TERMINATION, b"")]),
    "wrap_to_zero": (b"set k 0 0 4294967294\r\n", [(AUTH_REPLY, BAD_TERMINATION, b"")]),
    "extra_tokens_ignored": (
        b"set k 0 0 10 noreply\r\nu p q r st\r\n",
        [(AUTH_CREDENTIALS, b"u", b"p")],
    ),
    "nul_ends_block": (b"set k 0 0 4\r\nu\0 p\r\n", [(AUTH_REPLY, BAD_TOKEN_FORMAT, b"")]),
    "resync_after_errors": (
        b"junk\r\nset\r\nset k 0 0 3\r\nu p\r\n",
        [
            (AUTH_REPLY, UNAUTHENTICATED, b""),
            (AUTH_REPLY, UNAUTHENTICATED, b""),
            (AUTH_CREDENTIALS, b"u", b"p"),
        ],
    ),
    "long_line": (b"x" * 2049, [(AUTH_CLOSE, b"line too long", b"")]),
    "block_over_buffer": (
        b"set k 0 0 16383\r\n" + b"x" * 16385,
        [(AUTH_CLOSE, b"credential block too large", b"")],
    ),
}


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize("step", [0, 1, 7])
def test_streams(name: str, step: int) -> None:
    stream, expected = STREAMS[name]
    assert events(stream, step) == expected


def test_bytes_after_credentials_are_handed_over() -> None:
    framer = AuthFramer()
    framer.feed(b"set k 0 0 3\r\nu p\r\nget a\r\nget")
    assert framer.next_event() == (AUTH_CREDENTIALS, b"u", b"p")
    assert framer.take_rest() == b"get a\r\nget"
    assert framer.buffered() == 0


@pytest.mark.parametrize(
    ("token", "value"),
    [
        (b"12", 12),
        (b"+12", 12),
        (b"\t12", 12),
        (b"12\r", 12),
        (b"-0", 0),
        (b"4294967296", 0),
        (b"4294967308", 12),
        (b"-18446744073709551615", 1),
        (b"12x", None),
        (b"-1", None),
        (b"", None),
        (b"\r", None),
        (b"18446744073709551616", None),
    ],
)
def test_safe_strtoul(token: bytes, value: int | None) -> None:
    assert safe_strtoul(token) == value


def test_table_parsing(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"alice:secret\r\nbob:pa:ss\n:nouser\nnopass:\nlast:line")
    assert parse_authfile(str(path)) == (
        (b"alice", b"secret"),
        (b"bob", b"pa:ss"),
        (b"", b"nouser"),
        (b"nopass", b""),
        (b"last", b"line"),  # no final newline: kept whole (memcached drops the last byte)
    )
    path.write_bytes(b"".join(b"u%d:p%d\n" % (i, i) for i in range(20)))
    assert len(parse_authfile(str(path))) == 20  # memcached keeps the first 8


def test_table_checks_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"alice:secret\n")
    table = AuthTable(str(path))
    assert table.check(b"alice", b"secret")
    assert not table.check(b"alice", b"secre")
    assert not table.check(b"alic", b"secret")
    assert not table.check(b"", b"")
    path.write_bytes(b"broken\n")
    assert table.reload() is not None
    assert table.check(b"alice", b"secret")  # a bad file keeps the table in force
    path.write_bytes(b"bob:pw\n")
    assert table.reload() is None
    assert table.check(b"bob", b"pw") and not table.check(b"alice", b"secret")


def test_unusable_files(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="Could not open authfile"):
        AuthTable(str(tmp_path / "missing"))
    (tmp_path / "blank").write_bytes(b"a:b\n\n")
    with pytest.raises(AuthError, match="malformed entry"):
        AuthTable(str(tmp_path / "blank"))

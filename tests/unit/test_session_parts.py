"""A Session built from a store, a clock and a config, driven with bytes: no node, socket or sleep.

This is the layering's test: command handlers reach only the parts a session is given. Time
moves by a manual clock, so expiry is checked without waiting. Requests are fed whole, line by
line and byte by byte; the replies must not depend on how the bytes arrived.
"""

from __future__ import annotations

import pytest

from memcache_server.commands.context import NodeParts, new_store
from memcache_server.commands.session import Session
from memcache_server.config import ServerConfig
from memcache_server.stats import GET_EXPIRED, private_stats
from memcache_server.storage.clock import ManualClock

REQUESTS = (
    b"set a 5 0 2\r\nhi\r\n"
    b"get a b\r\n"
    b"add a 0 0 1\r\nx\r\n"
    b"incr n 1\r\n"
    b"set n 0 100 1\r\n7\r\n"
    b"incr n 35\r\n"
    b"ms m 3 T0\r\nabc\r\n"
    b"mg m v f t\r\n"
    b"delete a\r\n"
    b"get a\r\n"
    b"config get cluster\r\n"
    b"version\r\n"
)
REPLIES = (
    b"STORED\r\n"
    b"VALUE a 5 2\r\nhi\r\nEND\r\n"
    b"NOT_STORED\r\n"
    b"NOT_FOUND\r\n"
    b"STORED\r\n"
    b"42\r\n"
    b"HD\r\n"
    b"VA 3 f0 t-1\r\nabc\r\n"
    b"DELETED\r\n"
    b"END\r\n"
    b"END\r\n"
    b"VERSION 1.6.18\r\n"
)


def new_session(clock: ManualClock, **settings: object) -> Session:
    config = ServerConfig(memory_limit_mb=8, **settings)  # type: ignore[arg-type]
    return Session(NodeParts(config, clock, new_store(config, clock)), private_stats())


def drive(session: Session, chunks: list[bytes]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        session.feed(chunk)
        while session.process(100):
            pass
        out += session.out
        session.out.clear()
    return bytes(out)


@pytest.mark.parametrize("split", ["whole", "lines", "bytes"])
def test_a_session_from_parts_answers_as_memcached(split: str) -> None:
    if split == "whole":
        chunks = [REQUESTS]
    elif split == "lines":
        chunks = REQUESTS.splitlines(keepends=True)
    else:
        chunks = [REQUESTS[i : i + 1] for i in range(len(REQUESTS))]
    assert drive(new_session(ManualClock()), chunks) == REPLIES


def test_expiry_follows_the_manual_clock() -> None:
    clock = ManualClock()
    s = new_session(clock)
    assert drive(s, [b"set k 0 10 1\r\nv\r\nget k\r\n"]) == b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
    clock.now += 11
    assert drive(s, [b"get k\r\n"]) == b"END\r\n"
    assert s.stats[GET_EXPIRED] == 1


def test_node_wide_commands_are_unknown_without_a_node() -> None:
    """Without a node-wide context the session's table holds item commands only: `stats` and
    `shutdown` are unknown commands there, as any command memcached does not know."""
    s = new_session(ManualClock(), shutdown_enabled=True)
    assert drive(s, [b"stats\r\nshutdown\r\nslabs automove 1\r\n"]) == b"ERROR\r\n" * 3
    assert drive(s, [b"flush_all\r\nget a\r\n"]) == b"OK\r\nEND\r\n"


def test_config_limits_reach_the_session() -> None:
    """The config's -I bounds the value the framer accepts: an oversized set is refused."""
    s = new_session(ManualClock(), item_size_max=1024)
    reply = drive(s, [b"set big 0 0 2000\r\n" + b"x" * 2000 + b"\r\nget big\r\n"])
    assert reply == b"SERVER_ERROR object too large for cache\r\nEND\r\n"


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_tracing_logs_each_request_and_changes_no_reply(
    split: str, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """At verbosity 2 a session runs its requests through the traced loop: the same replies,
    however the bytes arrive, and memcached's -vv lines on stderr; otherwise nothing."""
    chunks = [REQUESTS] if split == "whole" else [REQUESTS[i : i + 1] for i in range(len(REQUESTS))]
    quiet = new_session(ManualClock())
    assert drive(quiet, chunks) == REPLIES
    assert capfdbinary.readouterr().err == b""
    traced = new_session(ManualClock())
    traced.ctx.tracing = True
    assert drive(traced, chunks) == REPLIES
    lines = capfdbinary.readouterr().err.splitlines()
    assert lines[:5] == [
        b"-1: Client using the ascii protocol",
        b"<-1 set a 5 0 2",
        b">-1 STORED",
        b"<-1 get a b",
        b">-1 sending key a",
    ]
    assert b"<-1 hi" not in lines  # a data block is never logged
    assert b"<-1 mg m v f t" in lines and not any(line.startswith(b">-1 VA") for line in lines)


def test_a_traced_multiget_that_stops_at_the_output_limit_logs_each_hit_once(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    s = new_session(ManualClock())
    s.ctx.tracing = True
    s.out_limit = 64  # a few hits fill it: the get resumes batch by batch
    drive(s, [b"set k 0 0 40\r\n" + b"v" * 40 + b"\r\n"])
    keys = b" ".join([b"k"] * 6)
    replies = drive(s, [b"get " + keys + b"\r\n"])
    assert replies.count(b"VALUE k 0 40\r\n") == 6 and replies.endswith(b"END\r\n")
    lines = capfdbinary.readouterr().err.splitlines()
    assert lines[-8:] == [b"<-1 get " + keys] + [b">-1 sending key k"] * 6 + [b">-1 END"]

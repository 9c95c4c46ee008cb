"""A multi-key get stops once its reply passes ``out_limit`` and resumes where it stopped.

Driven through ``Session.process`` with no socket: the worker's part (send, then call process
again) is played by the loop in ``drain``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from memcache_server.app import Node
from memcache_server.commands.session import Session
from memcache_server.config import ServerConfig
from memcache_server.stats import GET_CMDS, TOUCH_CMDS

VALUE = b"v" * 10_000


@pytest.fixture
def session() -> Iterator[Session]:
    node = Node(ServerConfig(threads=1, max_output_buffer=25_000))
    s = node.new_session(node.workers[0].stats)
    s.feed(b"set k 0 0 %d\r\n%s\r\nset s 0 0 1\r\nx\r\n" % (len(VALUE), VALUE))
    s.process(20)
    assert bytes(s.out) == b"STORED\r\nSTORED\r\n"
    s.out.clear()
    yield s
    for w in node.workers:
        w.poller.close()
        os.close(w._wake_r)
        os.close(w._wake_w)


def drain(s: Session, request: bytes) -> tuple[bytes, int]:
    """Feed, then process and 'send' until nothing is left; returns (reply, number of turns)."""
    s.feed(request)
    reply = b""
    turns = 0
    while True:
        more = s.process(20)
        assert len(s.out) <= s.out_limit + len(VALUE) + 100  # never much past the limit
        reply += bytes(s.out)
        s.out.clear()
        turns += 1
        if not more and s.resume is None:
            return reply, turns
        assert turns < 1000


HIT = b"VALUE k 0 10000\r\n" + VALUE + b"\r\n"


@pytest.mark.parametrize("command", [b"get", b"gat 0"])
def test_long_multiget_resumes(session: Session, command: bytes) -> None:
    keys = b" ".join([b"k", b"miss", b"s"] * 20)
    reply, turns = drain(session, command + b" " + keys + b"\r\nget s\r\n")
    one = HIT + b"VALUE s 0 1\r\nx\r\n"
    assert reply == one * 20 + b"END\r\n" + b"VALUE s 0 1\r\nx\r\nEND\r\n"
    assert turns > 5
    # every key counted once, none twice across the resumptions
    if command == b"get":
        assert session.stats[GET_CMDS] == 61
    else:
        assert (session.stats[TOUCH_CMDS], session.stats[GET_CMDS]) == (60, 1)


def test_gets_resumes_with_cas(session: Session) -> None:
    reply, _ = drain(session, b"gets " + b"k " * 10 + b"\r\n")
    assert reply.count(b"VALUE k 0 10000 ") == 10 and reply.endswith(b"\r\nEND\r\n")


def test_a_bad_key_after_the_limit_still_fails_the_whole_get(session: Session) -> None:
    """memcached checks each key before sending anything: only the error goes out."""
    reply, turns = drain(session, b"get " + b"k " * 10 + b"x" * 251 + b"\r\n")
    assert reply == b"CLIENT_ERROR bad command line format\r\n"
    assert turns == 1


def test_cmd_get_counts_only_the_keys_a_failed_get_reached(session: Session) -> None:
    """A multi-get counts its keys in one go and takes back those it never looked up: the bad
    key and every key after it (memcached counts a key when it looks it up)."""
    reply, _ = drain(session, b"get s miss " + b"x" * 251 + b" s s\r\n")
    assert reply == b"CLIENT_ERROR bad command line format\r\n"
    assert session.stats[GET_CMDS] == 2
    # stopped at the output limit after three hits of k, then the bad key in the rest
    reply, _ = drain(session, b"get " + b"k " * 10 + b"x" * 251 + b"\r\n")
    assert reply == b"CLIENT_ERROR bad command line format\r\n"
    assert session.stats[GET_CMDS] == 2 + 3
    reply, _ = drain(session, b"get s miss s\r\n")
    assert reply == b"VALUE s 0 1\r\nx\r\n" * 2 + b"END\r\n"
    assert session.stats[GET_CMDS] == 2 + 3 + 3

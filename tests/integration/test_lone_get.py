"""A read that is one ``get <key>\\r\\n`` line: the node answers it without the framer
(``Session.serve``). Every conversation here sends each line as its own write, waits for its
reply, and compares the replies and the get counters with a real memcached's, so the shortcut
and the general path cannot drift apart.

The differential corpus cannot cover this: it appends a ``version`` sentinel to every write, so
none of its reads is a lone get line. (Under -Y, a lone get before authentication is in
``test_auth.py``'s differential cases.)
"""

from __future__ import annotations

import pytest
from procs import ServerProc, start_node
from wire import converse, in_parallel, server_stats

KEY250 = b"k" * 250
KEY251 = b"k" * 251

# (name, lines): each line is one write, answered before the next is sent
CASES: list[tuple[str, list[bytes]]] = [
    ("hit_miss_hit", [b"set k 0 0 1\r\nv\r\n", b"get k\r\n", b"get nope\r\n", b"get k\r\n"]),
    ("key_with_cr", [b"set a\rb 0 0 1\r\nv\r\n", b"get a\rb\r\n", b"get a\r\n"]),
    ("longest_key", [b"set " + KEY250 + b" 0 0 1\r\nv\r\n", b"get " + KEY250 + b"\r\n"]),
    ("key_too_long_keeps_sync", [b"set k 0 0 1\r\nv\r\n", b"get " + KEY251 + b"\r\n",
                                 b"get k\r\n"]),
    ("no_key", [b"get \r\n", b"get\r\n", b"version\r\n"]),
    ("double_space", [b"set k 0 0 1\r\nv\r\n", b"get  k\r\n", b"get k \r\n"]),
    ("bare_newline", [b"set k 0 0 1\r\nv\r\n", b"get k\n", b"get k\r\n"]),
    ("nul_in_key", [b"set k 0 0 1\r\nv\r\n", b"get k\x00junk\r\n", b"get k\r\n"]),
    ("expired", [b"set e 0 -1 1\r\nv\r\n", b"get e\r\n"]),
    ("flushed", [b"set f 0 0 1\r\nv\r\n", b"flush_all\r\n", b"get f\r\n"]),
    ("after_a_partial_line", [b"set k 0 0 1\r\nv\r\n", b"ge", b"t k\r\n", b"get k\r\n"]),
    ("inside_a_data_block", [b"set d 0 0 12\r\n", b"get k\r\n", b"ab\r\n", b"get d\r\n"]),
    ("gets_is_not_get", [b"set k 0 0 1\r\nv\r\n", b"gets k\r\n", b"get k\r\n"]),
]

COUNTERS = ("cmd_get", "get_hits", "get_misses", "get_expired", "get_flushed", "bytes_read")


def _run(srv: ServerProc, lines: list[bytes]) -> tuple[list[bytes], dict[str, str]]:
    replies = converse(srv.connect(), lines)
    st = server_stats(srv)
    return replies, {k: st[k] for k in COUNTERS}


@pytest.mark.parametrize("name,lines", CASES, ids=[c[0] for c in CASES])
def test_lone_get_lines_answer_as_memcached(memcached: ServerProc, name: str,
                                            lines: list[bytes]) -> None:
    node = start_node()
    try:
        ours, theirs = in_parallel(lambda srv: _run(srv, lines), [node, memcached])
    finally:
        node.stop()
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]

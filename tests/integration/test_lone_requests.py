"""A read that is one ``get <key>\\r\\n`` line: the node answers it without the framer
(``Session.serve``). Every conversation here sends each chunk as its own write, waits for its
reply, and compares the replies and the counters with a real memcached's, so the shortcut and
the general path cannot drift apart.

Storage commands sent the same way, each with its whole data block in one write (as every
client with one request in flight sends them), are compared too: a shortcut for them was
measured and not kept (``STORE_CASES``), and these cases are what one must pass.

The differential corpus cannot cover this: it appends a ``version`` sentinel to every write, so
none of its reads is a lone request. (Under -Y, a lone get before authentication is in
``test_auth.py``'s differential cases.)
"""

from __future__ import annotations

import pytest
from procs import ServerProc, start_node
from wire import converse, in_parallel, server_stats

KEY250 = b"k" * 250
KEY251 = b"k" * 251
BIG = 1024 * 1024  # memcached's default -I: a block longer than this is refused unread

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

# Storage commands, each with its data block in one write unless the case is about a block
# that is split, short, long or followed by more.
STORE_CASES: list[tuple[str, list[bytes]]] = [
    ("set_overwrite", [b"set k 5 0 1\r\na\r\n", b"set k 6 0 2\r\nbb\r\n", b"get k\r\n"]),
    ("set_noreply", [b"set k 0 0 1 noreply\r\nv\r\n", b"get k\r\n"]),
    ("sixth_token_not_noreply", [b"set k 0 0 1 junk\r\nv\r\n", b"get k\r\n"]),
    ("add", [b"add k 0 0 1\r\na\r\n", b"add k 0 0 1\r\nb\r\n", b"get k\r\n"]),
    ("replace", [b"replace k 0 0 1\r\na\r\n", b"set k 0 0 1\r\nb\r\n",
                 b"replace k 0 0 1\r\nc\r\n", b"get k\r\n"]),
    ("append_prepend", [b"append k 0 0 1\r\na\r\n", b"set k 7 0 1\r\nb\r\n",
                        b"append k 0 0 1\r\nc\r\n", b"prepend k 9 0 1\r\nd\r\n",
                        b"get k\r\n"]),
    ("cas_is_not_set", [b"set k 0 0 1\r\na\r\n", b"cas k 0 0 1 1\r\nb\r\n", b"get k\r\n"]),
    ("empty_value", [b"set k 0 0 0\r\n\r\n", b"get k\r\n"]),
    ("largest_short_numbers", [b"set k 999999999 999999999 1\r\nv\r\n", b"get k\r\n"]),
    ("long_numbers", [b"set k 4294967295 0 1\r\nv\r\n", b"get k\r\n",
                      b"set k 4294967296 0 1\r\nv\r\n", b"get k\r\n"]),
    ("negative_exptime", [b"set k 0 -1 1\r\nv\r\n", b"get k\r\n"]),
    ("key_with_cr", [b"set a\rb 0 0 1\r\nv\r\n", b"get a\rb\r\n"]),
    ("longest_key", [b"set " + KEY250 + b" 0 0 1\r\nv\r\n", b"get " + KEY250 + b"\r\n"]),
    ("key_too_long", [b"set " + KEY251 + b" 0 0 1\r\nv\r\n", b"get k\r\n"]),
    ("double_space", [b"set  k 0 0 1\r\nv\r\n", b"get k\r\n"]),
    ("bare_newline", [b"set k 0 0 1\nv\r\n", b"get k\r\n"]),
    ("bad_chunk", [b"set k 0 0 1\r\nvv\r\n", b"get k\r\n"]),
    ("block_without_crlf", [b"set k 0 0 2\r\nvvxx", b"get k\r\n"]),
    ("block_in_two_writes", [b"set k 0 0 2\r\nv", b"v\r\n", b"get k\r\n"]),
    ("block_then_a_get", [b"set k 0 0 1\r\nv\r\nget k\r\n", b"get k\r\n"]),
    ("two_sets_in_one_write", [b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n",
                               b"get a\r\n", b"get b\r\n"]),
    ("over_item_size_max", [b"set k 0 0 1\r\nv\r\n",
                            b"set k 0 0 %d\r\n" % (BIG + 1) + b"x" * (BIG + 1) + b"\r\n",
                            b"get k\r\n"]),
    ("item_too_large", [b"set k 0 0 1\r\nv\r\n",
                        b"set k 0 0 %d\r\n" % (BIG - 20) + b"x" * (BIG - 20) + b"\r\n",
                        b"get k\r\n"]),
]

COUNTERS = ("cmd_get", "get_hits", "get_misses", "get_expired", "get_flushed", "bytes_read",
            "bytes_written", "cmd_set", "curr_items", "total_items")


def _run(srv: ServerProc, lines: list[bytes]) -> tuple[list[bytes], dict[str, str]]:
    replies = converse(srv.connect(), lines)
    st = server_stats(srv)
    return replies, {k: st[k] for k in COUNTERS}


@pytest.mark.parametrize("name,lines", CASES + STORE_CASES,
                         ids=[c[0] for c in CASES + STORE_CASES])
def test_lone_requests_answer_as_memcached(memcached: ServerProc, name: str,
                                           lines: list[bytes]) -> None:
    node = start_node()
    try:
        ours, theirs = in_parallel(lambda srv: _run(srv, lines), [node, memcached])
    finally:
        node.stop()
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]

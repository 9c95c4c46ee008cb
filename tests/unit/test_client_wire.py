"""The client's view of the document codec and the reply framer, on exact bytes (spec §1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcache_server.discovery.document import DocumentError, Reply, node_tuples, parse_reply

GOLDEN_DOC = b"12\nnode-a.cache.local|127.0.0.1|11311 node-b.cache.local|127.0.0.1|11312\n"
GOLDEN_REPLY = (
    b"CONFIG cluster 0 73\r\n12\nnode-a.cache.local|127.0.0.1|11311 "
    b"node-b.cache.local|127.0.0.1|11312\n\r\nEND\r\n"
)
GOLDEN_NODES = [
    ("node-a.cache.local", "127.0.0.1", 11311),
    ("node-b.cache.local", "127.0.0.1", 11312),
]


def test_golden_document() -> None:
    assert len(GOLDEN_DOC) == 73
    assert node_tuples(GOLDEN_DOC) == (12, GOLDEN_NODES)


def test_golden_reply_whole_and_byte_by_byte() -> None:
    assert parse_reply(GOLDEN_REPLY) == Reply(GOLDEN_DOC, False, len(GOLDEN_REPLY))
    for cut in range(len(GOLDEN_REPLY)):
        assert parse_reply(GOLDEN_REPLY[:cut]) is None
    # bytes after the reply are not part of it
    assert parse_reply(GOLDEN_REPLY + b"VERSION 1\r\n") == Reply(GOLDEN_DOC, False, 101)


@pytest.mark.parametrize(
    "doc",
    [
        b"12\r\nnode-a.cache.local|127.0.0.1|11311 node-b.cache.local|127.0.0.1|11312\n",
        b"12\nnode-a.cache.local|127.0.0.1|11311   node-b.cache.local|127.0.0.1|11312",
        b"12\nnode-a.cache.local|127.0.0.1|11311\t\nnode-b.cache.local|127.0.0.1|11312\r\n",
    ],
)
def test_lenient_forms(doc: bytes) -> None:
    assert node_tuples(doc) == (12, GOLDEN_NODES)


def test_empty_ip_and_canonical_order() -> None:
    assert node_tuples(b"3\nb||11212 a|10.0.0.1|11211\n") == (
        3,
        [("a", "10.0.0.1", 11211), ("b", "", 11212)],
    )


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"12",  # no newline
        b"0\nh|1.2.3.4|11211\n",  # libmemcached rejects version 0
        b"2147483648\nh|1.2.3.4|11211\n",  # past Int32 (the .NET client)
        b"-1\nh|1.2.3.4|11211\n",
        b"v12\nh|1.2.3.4|11211\n",
        b"12\n\n",  # no node
        b"12\n",
        b"12\nh|1.2.3.4\n",  # one pipe
        b"12\nh|1.2.3.4|11211|x\n",  # three pipes
        b"12\nh|1.2.3.4|port\n",
        b"12\nh|1.2.3.4|0\n",
        b"12\nh|1.2.3.4|65536\n",
        b"12\n|1.2.3.4|11211\n",  # no hostname
        b"12\nh\xff|1.2.3.4|11211\n",
        b"12\nh|1.2.3.4|11211 h|1.2.3.5|11211\n",  # the same node twice
    ],
)
def test_rejected(doc: bytes) -> None:
    with pytest.raises(DocumentError):
        node_tuples(doc)


def test_other_replies() -> None:
    assert parse_reply(b"END\r\n") == Reply(None, False, 5)
    assert parse_reply(b"ERROR\r\n") == Reply(None, True, 7)
    legacy = b"VALUE AmazonElastiCache:cluster 0 73\r\n" + GOLDEN_DOC + b"\r\nEND\r\n"
    assert parse_reply(legacy) == Reply(GOLDEN_DOC, False, len(legacy))


@pytest.mark.parametrize(
    "reply",
    [
        b"SERVER_ERROR out of memory\r\n",
        b"CONFIG cluster 0 x\r\n",
        b"CONFIG cluster 0 72\r\n" + GOLDEN_DOC + b"\r\nEND\r\n",  # count one short
        b"CONFIG cluster 0 73\r\n" + GOLDEN_DOC + b"END\r\n\r\n",  # no CRLF after the data
        b"CONFIG cluster 0 99999999\r\n",
        b"x" * 600,  # a header line that never ends
    ],
)
def test_bad_replies(reply: bytes) -> None:
    with pytest.raises(DocumentError):
        parse_reply(reply)


hosts = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=30)
ips = st.sampled_from(["", "127.0.0.1", "10.0.0.12", "::1"])


@settings(max_examples=100, derandomize=True)
@given(
    version=st.integers(1, 2**31 - 1),
    nodes=st.lists(
        st.tuples(hosts, ips, st.integers(1, 65535)),
        min_size=1,
        max_size=20,
        unique_by=lambda n: (n[0], n[2]),
    ),
    sep=st.sampled_from([" ", "  ", "\t", "\n"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_round_trip(
    version: int, nodes: list[tuple[str, str, int]], sep: str, newline: str
) -> None:
    doc = f"{version}{newline}{sep.join(f'{h}|{i}|{p}' for h, i, p in nodes)}\n".encode()
    assert node_tuples(doc) == (version, sorted(nodes, key=lambda n: (n[0], n[2])))
    framed = b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (len(doc), doc)
    assert parse_reply(framed) == Reply(doc, False, len(framed))

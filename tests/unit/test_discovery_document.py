"""The cluster document codec: golden bytes, the tolerant parser, the strict reply parser, and
the rule for taking a new document."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcache_server.discovery.document import (
    MAX_VERSION,
    NO_DOCUMENT,
    ClusterDocument,
    DocumentError,
    NodeAddress,
    config_reply,
    legacy_value,
    parse_config_reply,
    parse_document,
    supersedes,
)

A = NodeAddress("node-a.cache.local", "127.0.0.1", 11311)
B = NodeAddress("node-b.cache.local", "127.0.0.1", 11312)
GOLDEN_DOC = b"12\nnode-a.cache.local|127.0.0.1|11311 node-b.cache.local|127.0.0.1|11312\n"
GOLDEN_REPLY = (
    b"CONFIG cluster 0 73\r\n12\nnode-a.cache.local|127.0.0.1|11311 "
    b"node-b.cache.local|127.0.0.1|11312\n\r\nEND\r\n"
)


def test_golden_document_is_73_bytes() -> None:
    doc = ClusterDocument.of(12, [B, A])  # given out of order: the encoding sorts
    assert doc.encode() == GOLDEN_DOC
    assert len(doc.encode()) == 73


def test_golden_reply_bytes() -> None:
    reply = config_reply(ClusterDocument.of(12, [A, B]).encode())
    assert reply == GOLDEN_REPLY
    assert len(reply) == 101  # 21 header + 73 document + CRLF + END CRLF
    assert (
        reply[:24].hex(" ")
        == "43 4f 4e 46 49 47 20 63 6c 75 73 74 65 72 20 30 20 37 33 0d 0a 31 32 0a"
    )
    assert reply[-12:] == b"1312\n\r\nEND\r\n"


def test_legacy_value_form() -> None:
    value = legacy_value(b"AmazonElastiCache:cluster", GOLDEN_DOC)
    assert value == b"VALUE AmazonElastiCache:cluster 0 73\r\n" + GOLDEN_DOC + b"\r\n"


def test_canonical_order_is_hostname_then_port() -> None:
    nodes = [
        NodeAddress("b", "10.0.0.2", 2),
        NodeAddress("a", "10.0.0.1", 3),
        NodeAddress("b", "10.0.0.2", 1),
        NodeAddress("a", "10.0.0.1", 11211),
    ]
    assert ClusterDocument.of(1, nodes).encode() == (
        b"1\na|10.0.0.1|3 a|10.0.0.1|11211 b|10.0.0.2|1 b|10.0.0.2|2\n"
    )


def test_empty_ip_keeps_both_pipes() -> None:
    assert ClusterDocument.of(3, [NodeAddress("h", "", 11211)]).encode() == b"3\nh||11211\n"


@pytest.mark.parametrize(
    "text",
    [
        GOLDEN_DOC,
        GOLDEN_DOC.replace(b"12\n", b"12\r\n"),  # CRLF after the version
        GOLDEN_DOC.replace(b" node-b", b"  \t node-b"),  # runs of whitespace between nodes
        GOLDEN_DOC[:-1],  # no final newline
        GOLDEN_DOC + b"\n",  # a doubled one
        GOLDEN_DOC.replace(b"\nnode-a", b"\n node-a"),  # a leading space on the node line
        b"12\nnode-b.cache.local|127.0.0.1|11312\nnode-a.cache.local|127.0.0.1|11311\r\n",
    ],
)
def test_parser_tolerance(text: bytes) -> None:
    doc = parse_document(text)
    assert doc == ClusterDocument.of(12, [A, B])
    assert doc.encode() == GOLDEN_DOC  # whatever came in, what goes out is canonical


@pytest.mark.parametrize(
    "text",
    [
        b"12 node-a|1.2.3.4|1\n",  # no newline after the version
        b"x\nnode-a|1.2.3.4|1\n",
        b"0\nnode-a|1.2.3.4|1\n",  # libmemcached rejects version 0
        b"%d\nnode-a|1.2.3.4|1\n" % (MAX_VERSION + 1),  # .NET parses an Int32
        b"-1\nnode-a|1.2.3.4|1\n",
        b"1\nnode-a|1.2.3.4\n",  # one pipe
        b"1\nnode-a|1.2.3.4|1|x\n",  # three pipes
        b"1\nnode-a|1.2.3.4|port\n",
        b"1\nnode-a|1.2.3.4|0\n",
        b"1\nnode-a|1.2.3.4|65536\n",
        b"1\n|1.2.3.4|11211\n",  # no hostname
        b"1\nh|1.2.3.4|1 h|1.2.3.4|1\n",  # the same node twice
        b"1\nh\xc3\xa9|1.2.3.4|1\n",
    ],
)
def test_parser_rejects(text: bytes) -> None:
    with pytest.raises(DocumentError):
        parse_document(text)


def test_document_without_nodes_parses_but_is_never_taken() -> None:
    empty = parse_document(b"5\n\n")
    assert empty.nodes == ()
    assert not supersedes(empty, None)


def test_emitted_ip_must_be_an_ip_literal() -> None:
    assert NodeAddress("h", "::1", 1).checked_ip().ip == "::1"
    with pytest.raises(DocumentError):
        NodeAddress("h", "not-an-ip", 1).checked_ip()


def test_strict_reply_parser() -> None:
    assert parse_config_reply(GOLDEN_REPLY) == ClusterDocument.of(12, [A, B])
    assert parse_config_reply(NO_DOCUMENT) is None
    # the document inside may lack its final LF (we never emit that; a client parser copes)
    no_lf = GOLDEN_REPLY.replace(b"\n\r\nEND", b"\r\nEND").replace(b" 73", b" 72")
    assert parse_config_reply(no_lf) == ClusterDocument.of(12, [A, B])
    for bad in (
        GOLDEN_REPLY.replace(b" 73\r\n", b" 74\r\n"),  # count off by one
        GOLDEN_REPLY.replace(b" 73\r\n", b" 147\r\n"),  # the AWS doc's inconsistent example
        GOLDEN_REPLY.replace(b"\n\r\nEND", b"\r\nEND"),  # no final LF, count unchanged
        GOLDEN_REPLY[:-2],
        b"ERROR\r\n",
        b"VALUE x 0 1\r\n1\r\nEND\r\n",
    ):
        with pytest.raises(DocumentError):
            parse_config_reply(bad)


def test_supersedes_rules() -> None:
    v12 = ClusterDocument.of(12, [A, B])
    assert supersedes(v12, None)
    assert supersedes(ClusterDocument.of(13, [A]), v12)  # higher
    assert not supersedes(ClusterDocument.of(11, [A]), v12)  # lower: stale
    assert not supersedes(ClusterDocument.of(12, [B, A]), v12)  # identical
    moved = NodeAddress(A.hostname, "127.0.0.9", A.port)
    assert supersedes(ClusterDocument.of(12, [moved, B]), v12)  # same version, new text


_host = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
_node = st.builds(
    NodeAddress,
    _host,
    st.sampled_from(["", "127.0.0.1", "10.1.2.3", "::1"]),
    st.integers(1, 65535),
)


@given(st.integers(1, MAX_VERSION), st.lists(_node, max_size=8, unique_by=lambda n: n.key))
def test_round_trip(version: int, nodes: list[NodeAddress]) -> None:
    doc = ClusterDocument.of(version, nodes)
    data = doc.encode()
    assert parse_document(data) == doc
    assert data.endswith(b"\n") and b"\r" not in data and b"  " not in data
    assert parse_config_reply(config_reply(data)) == doc

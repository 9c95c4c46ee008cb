"""A cache node's discovery commands, bytes in and bytes out through its Session (no socket).

Each conversation is fed whole, and again one byte at a time, and must give the same replies:
``config set`` carries a data block, so this is where framing would go out of sync.
"""

from __future__ import annotations

import pytest

from memcache_server.app import Node
from memcache_server.config import ServerConfig
from memcache_server.discovery.document import ClusterDocument, NodeAddress, config_reply
from memcache_server.stats import private_stats

GOLDEN_DOC = b"12\nnode-a.cache.local|127.0.0.1|11311 node-b.cache.local|127.0.0.1|11312\n"
GOLDEN_REPLY = b"CONFIG cluster 0 73\r\n" + GOLDEN_DOC + b"\r\nEND\r\n"
LEGACY = b"VALUE AmazonElastiCache:cluster 0 73\r\n" + GOLDEN_DOC + b"\r\nEND\r\n"
REFUSED = b"CLIENT_ERROR config writes are not allowed on this node\r\n"
READ_ONLY = b"CLIENT_ERROR AmazonElastiCache:cluster is read-only on this node\r\n"


def make_node(**kw: object) -> Node:
    return Node(ServerConfig(memory_limit_mb=8, threads=1, **kw))  # type: ignore[arg-type]


def converse(node: Node, data: bytes, bytewise: bool) -> bytes:
    session = node.new_session(private_stats())
    out = bytearray()
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        session.feed(chunk)
        while session.process(1000):
            pass
        out += session.out
        session.out.clear()
    return bytes(out)


BOTH = pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])


@BOTH
def test_no_document_yet(bytewise: bool) -> None:
    node = make_node()
    got = converse(
        node,
        b"config get cluster\r\nconfig get cluster \r\nconfig get cluster\n"
        b"get AmazonElastiCache:cluster\r\nconfig get other\r\nconfig\r\nconfig get\r\n",
        bytewise,
    )
    assert got == b"END\r\n" * 5 + b"ERROR\r\n" * 2


@BOTH
def test_writes_are_refused_and_the_stream_stays_in_sync(bytewise: bool) -> None:
    node = make_node()
    got = converse(
        node,
        b"config set cluster 0 73\r\n" + GOLDEN_DOC + b"\r\n"
        b"config set cluster 0 3 noreply\r\n1\nx\r\n"
        b"config delete cluster\r\n"
        b"set AmazonElastiCache:cluster 0 0 3\r\n1\nx\r\n"
        b"add AmazonElastiCache:cluster 0 0 3 noreply\r\n1\nx\r\n"
        b"ms AmazonElastiCache:cluster 3 q\r\n1\nx\r\n"  # meta set too, even quiet
        b"set k 0 0 2\r\nhi\r\nget k AmazonElastiCache:cluster\r\nconfig get cluster\r\n",
        bytewise,
    )
    assert got == (REFUSED * 2 + READ_ONLY * 2 + b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\nEND\r\n")
    assert node.cluster.document is None
    assert node.cluster.stats() == []  # a standalone node's `stats` stays memcached's


@BOTH
def test_allowed_config_set_is_served_verbatim_and_as_the_legacy_item(bytewise: bool) -> None:
    node = make_node(allow_config_writes=True)
    got = converse(
        node,
        b"config set cluster 0 73\r\n" + GOLDEN_DOC + b"\r\n"
        b"config get cluster\r\nget AmazonElastiCache:cluster\r\n"
        b"get AmazonElastiCache:cluster \r\nget nsAmazonElastiCache:cluster\r\n",
        bytewise,
    )
    # libmemcached's trailing space is fine; a namespaced key is an ordinary key (a miss)
    assert got == b"STORED\r\n" + GOLDEN_REPLY + LEGACY + LEGACY + b"END\r\n"
    assert node.cluster.document == ClusterDocument.of(
        12,
        [
            NodeAddress("node-a.cache.local", "127.0.0.1", 11311),
            NodeAddress("node-b.cache.local", "127.0.0.1", 11312),
        ],
    )


def test_allowed_writes_validate_and_delete() -> None:
    node = make_node(allow_config_writes=True)
    libmemcached_style = b"1\r\nlocalhost|127.0.0.1|22211 localhost|127.0.0.1|22212 "
    got = converse(
        node,
        b"config set cluster 0 4\r\nnope\r\n"  # not a document
        b"config set other 0 1\r\n1\r\n"
        b"config set cluster 0 2\r\n1\nxx\r\n"  # block longer than declared: bad data chunk
        b"config set cluster 0 %d\r\n%b\r\n"
        % (len(libmemcached_style), libmemcached_style)
        + b"config get cluster\r\nconfig delete cluster\r\nconfig delete cluster\r\n"
        b"config get cluster\r\nset AmazonElastiCache:cluster 0 0 1\r\nx\r\n"
        b"get AmazonElastiCache:cluster\r\n",
        bytewise=False,
    )
    assert (
        got
        == (
            b"CLIENT_ERROR bad cluster document\r\n"
            b"CLIENT_ERROR only the cluster config key is supported\r\n"
            b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"  # the rest of the bad chunk is a command
            b"STORED\r\n"
            + config_reply(libmemcached_style)  # the engine gives back exactly what it stored
            + b"DELETED\r\nNOT_FOUND\r\nEND\r\n"
            b"STORED\r\nVALUE AmazonElastiCache:cluster 0 1\r\nx\r\nEND\r\n"
        )
    )


def test_config_set_framing_bounds() -> None:
    node = make_node(item_size_max=1024)
    got = converse(
        node,
        b"config set cluster 0 2000\r\n" + b"x" * 2000 + b"\r\n"  # over -I: swallowed
        b"config set cluster 0\r\n"  # wrong arity
        b"config set cluster x 3\r\n"  # bad flags
        b"version\r\n",
        bytewise=False,
    )
    assert got == (
        b"SERVER_ERROR object too large for cache\r\nERROR\r\n"
        b"CLIENT_ERROR bad command line format\r\nVERSION 1.6.18\r\n"
    )


def test_documents_from_the_config_node_follow_the_version_rules() -> None:
    node = make_node()
    a = NodeAddress("a", "127.0.0.1", 1)
    b = NodeAddress("b", "127.0.0.1", 2)
    view = node.cluster
    assert view.offer(ClusterDocument.of(5, [a, b]))
    assert not view.offer(ClusterDocument.of(4, [a]))  # stale
    assert not view.offer(ClusterDocument.of(5, [b, a]))  # the same
    assert not view.offer(ClusterDocument(6, ()))  # empty: keep the last good one
    assert view.offer(ClusterDocument.of(6, [a]))
    assert converse(node, b"config get cluster\r\n", False) == config_reply(b"6\na|127.0.0.1|1\n")
    stats = dict(view.stats())
    assert stats["cluster_version"] == 6 and stats["cluster_nodes"] == 1
    assert stats["cluster_config_updates"] == 2 and stats["cluster_config_requests"] == 1

"""ElastiCache-style ``config get cluster`` reply parsing, on exact bytes; target parsing."""

from __future__ import annotations

import pytest

from memcache_server.load.cluster import parse_config_reply
from memcache_server.load.targets import check_loopback, is_loopback, parse_hostport


def _reply(payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (n, payload)


def test_parses_aws_example() -> None:
    payload = (
        b"12\n"
        b"myCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211 "
        b"myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211\n"
    )
    cfg = parse_config_reply(_reply(payload))
    assert cfg.version == 12
    assert cfg.nodes == [("10.82.235.120", 11211), ("10.80.249.27", 11211)]


def test_uses_host_when_ip_empty() -> None:
    cfg = parse_config_reply(_reply(b"3\nlocalhost||11211 127.0.0.1|127.0.0.1|11212\n"))
    assert cfg.nodes == [("localhost", 11211), ("127.0.0.1", 11212)]


def test_length_without_final_newline_accepted() -> None:
    payload = b"1\nh|127.0.0.1|1\n"
    data = b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (len(payload) - 1, payload)
    assert parse_config_reply(data).nodes == [("127.0.0.1", 1)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"END\r\n",
        b"CONFIG cluster 0 x\r\n1\nh|i|1\n\r\nEND\r\n",
        _reply(b"1\nh|i|1\n", length=50),  # declared longer than present
        _reply(b"1\nh|i|1\n")[:-2],  # missing final CRLF
        _reply(b"v\nh|i|1\n"),  # bad version
        _reply(b"1\nh|i\n"),  # two fields
        _reply(b"1\nh|i|port\n"),  # bad port
        _reply(b"1\nh|i|70000\n"),
        _reply(b"1\n||11211\n"),  # neither host nor ip
        _reply(b"1\n\n"),  # no nodes
        b"CONFIG other 0 8\r\n1\nh|i|1\n\r\nEND\r\n",
    ],
)
def test_malformed_rejected(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_config_reply(data)


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:11211") == ("127.0.0.1", 11211)
    assert parse_hostport("[::1]:5") == ("::1", 5)
    for bad in ("nohost", ":1", "h:0", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


def test_loopback_check() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("10.1.2.3")
    check_loopback([("127.0.0.1", 1)])
    with pytest.raises(ValueError, match="non-loopback"):
        check_loopback([("127.0.0.1", 1), ("192.0.2.1", 2)])

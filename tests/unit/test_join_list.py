"""``--join a:p,b:p``: a node takes several config nodes; every entry must be HOST:PORT."""

from __future__ import annotations

import pytest

from memcache_server.config import ConfigError, ServerConfig
from memcache_server.discovery.member import parse_join


def test_parse_join_keeps_the_order() -> None:
    assert parse_join("cfg-a:11311,cfg-b:11312") == (("cfg-a", 11311), ("cfg-b", 11312))
    assert parse_join("[::1]:1, 10.0.0.1:2") == (("::1", 1), ("10.0.0.1", 2))
    for bad in ("", ",", "cfg-a", "cfg-a:11311,cfg-b", "cfg-a:0"):
        with pytest.raises(ValueError):
            parse_join(bad)


@pytest.mark.parametrize("join", ["cfg-a:11311,cfg-b", "cfg-a:11311,,cfg-b:1", "a:1,b:99999"])
def test_config_refuses_a_bad_entry(join: str) -> None:
    with pytest.raises(ConfigError, match="--join expects HOST:PORT"):
        ServerConfig(join=join).validate()


def test_config_takes_a_list() -> None:
    ServerConfig(join="127.0.0.1:11311,localhost:11312").validate()

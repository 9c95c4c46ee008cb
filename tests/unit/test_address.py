"""The one host:port parser every address option goes through."""

from __future__ import annotations

import pytest

from memcache_server.protocol.address import format_host_port, split_host_port


@pytest.mark.parametrize(
    ("text", "kw", "expected"),
    [
        ("node-a:11211", {}, ("node-a", 11211)),
        ("[::1]:11211", {}, ("::1", 11211)),
        ("10.0.0.1", {"default_port": 11211}, ("10.0.0.1", 11211)),
        ("[::1]", {"default_port": 7}, ("::1", 7)),
        ("::1", {"default_port": 7}, ("::1", 7)),  # an unbracketed IPv6 address, no port
        (":0", {"default_host": "127.0.0.1", "port_zero": True}, ("127.0.0.1", 0)),
        ("9150", {"default_host": "127.0.0.1"}, ("127.0.0.1", 9150)),
    ],
)
def test_accepted(text: str, kw: dict[str, object], expected: tuple[str, int]) -> None:
    assert split_host_port(text, **kw) == expected  # type: ignore[arg-type]
    host, port = expected
    assert split_host_port(format_host_port(host, port), port_zero=True) == expected


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        ("node-a", {}, "expected HOST:PORT"),
        (":11211", {}, "no host"),
        ("h:0", {}, "bad port"),
        ("h:x", {}, "bad port"),
        ("h:70000", {}, "bad port"),
        ("[::1", {}, "expected [IPV6]:PORT"),
        ("[::1]x", {}, "expected [IPV6]:PORT"),
        ("::1:9150", {}, "write an IPv6 address in brackets: [::1]:9150"),
    ],
)
def test_refused_with_a_clear_message(text: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_host_port(text, **kw)  # type: ignore[arg-type]

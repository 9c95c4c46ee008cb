"""The one ``host:port`` parser: ``-l``, ``--join``, ``--metrics-listen``, ``--config`` and the
cluster commands all read addresses the same way.

Accepted: ``host:port``, ``[v6]:port``, and a bare host (or an unbracketed IPv6 address) where a
default port is given. A port is 1..65535 (0, "pick one", only where a listener allows it).
Pure text in, ``(host, port)`` out; errors are ValueErrors worded for the command line.
"""

from __future__ import annotations

__all__ = ["split_host_port", "format_host_port"]


def split_host_port(
    text: str,
    default_port: int | None = None,
    *,
    default_host: str | None = None,
    port_zero: bool = False,
) -> tuple[str, int]:
    """``(host, port)`` from ``text``; ``default_port``/``default_host`` fill what is left out."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif default_host is not None and text.isdigit():
        host, port_text = "", text  # a bare port, where a default host is given
    if not host:
        if default_host is None:
            raise ValueError(f"no host in {text!r}")
        host = default_host
    if not port_text:
        if default_port is None:
            if text.count(":") > 1 and not text.startswith("["):
                v6, _, port_text = text.rpartition(":")
                raise ValueError(f"write an IPv6 address in brackets: [{v6}]:{port_text}")
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return host, default_port
    lowest = 0 if port_zero else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    """The inverse: IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

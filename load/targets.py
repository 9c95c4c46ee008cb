"""Parsing ``HOST:PORT`` targets and the optional loopback-only safety check.

The generator only ever connects to addresses it was given (directly, or listed by the config
endpoint it was pointed at); ``--loopback-only`` additionally refuses anything that does not
resolve to a loopback address, for use on shared machines and in CI.
"""

from __future__ import annotations

import ipaddress
import socket


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:11211"``, ``"[::1]:11211"`` or ``"localhost:11211"`` -> (host, port)."""
    text = text.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def is_loopback(host: str) -> bool:
    """True only if every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(str(a)).is_loopback for a in addrs)


def check_loopback(targets: list[tuple[str, int]]) -> None:
    """Raise ``ValueError`` naming the first target that is not loopback."""
    for host, port in targets:
        if not is_loopback(host):
            raise ValueError(f"refusing non-loopback target {host}:{port} (--loopback-only)")

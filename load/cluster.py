"""ElastiCache-style cluster discovery: ``config get cluster`` on a configuration endpoint.

Reply format::

    CONFIG cluster 0 <bytes>\r\n
    <version>\n
    <host>|<ip>|<port> <host>|<ip>|<port> ...\n
    \r\n
    END\r\n

``<bytes>`` counts the payload (version line and node line).  For each node the IP is used if
present, else the host name.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

MAX_REPLY = 1 << 20


@dataclass(frozen=True)
class ClusterConfig:
    version: int
    nodes: list[tuple[str, int]]


def parse_config_reply(data: bytes) -> ClusterConfig:
    """Parse a complete reply; raise ``ValueError`` with the reason if it is malformed."""
    head_end = data.find(b"\r\n")
    if head_end < 0:
        raise ValueError("no header line")
    head = data[:head_end].split()
    if len(head) != 4 or head[0] != b"CONFIG" or head[1] != b"cluster":
        raise ValueError(f"unexpected header {data[:head_end]!r}")
    try:
        length = int(head[3])
    except ValueError:
        raise ValueError(f"bad length in header {data[:head_end]!r}") from None
    start = head_end + 2
    payload = data[start : start + length]
    rest = data[start + length :]
    if len(payload) != length:
        raise ValueError("reply shorter than its declared length")
    if rest.startswith(b"\n"):  # some servers do not count the final newline
        rest = rest[1:]
    if rest != b"\r\nEND\r\n":
        raise ValueError(f"expected \\r\\nEND\\r\\n after payload, got {rest[:20]!r}")
    lines = payload.decode("ascii", "strict").strip("\n").split("\n")
    if len(lines) != 2:
        raise ValueError(f"expected a version line and a node line, got {len(lines)} lines")
    try:
        version = int(lines[0])
    except ValueError:
        raise ValueError(f"bad config version {lines[0]!r}") from None
    nodes: list[tuple[str, int]] = []
    for entry in lines[1].split():
        parts = entry.split("|")
        if len(parts) != 3:
            raise ValueError(f"bad node entry {entry!r}")
        host, ip, port_s = parts
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"bad port in node entry {entry!r}")
        addr = ip or host
        if not addr:
            raise ValueError(f"node entry without host or ip {entry!r}")
        nodes.append((addr, int(port_s)))
    if not nodes:
        raise ValueError("config lists no nodes")
    return ClusterConfig(version, nodes)


def fetch_config(host: str, port: int, timeout: float = 5.0) -> ClusterConfig:
    """Ask the configuration endpoint for the node list (one bounded request)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"config get cluster\r\n")
        buf = b""
        while not (buf.endswith(b"END\r\n") or buf.startswith((b"ERROR", b"CLIENT_ERROR"))):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(buf) > MAX_REPLY:
                raise ValueError("config endpoint reply incomplete or too large")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf.startswith(b"CONFIG"):
        raise ValueError(f"config endpoint answered {buf[:60]!r}")
    return parse_config_reply(buf)

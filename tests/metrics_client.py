"""Test helpers for the /metrics endpoint: find it on a running node, scrape it, read `stats`.

Everything talks to 127.0.0.1 only, with timeouts.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from procs import ServerProc, exchange
from prometheus_client.parser import text_string_to_metric_families


def stats(srv: ServerProc, sub: str = "") -> dict[str, str]:
    """One `stats [sub]` reply over a fresh connection, as a dict."""
    with srv.connect() as sock:
        reply = exchange(sock, f"stats {sub}".strip().encode() + b"\r\n", settle=0.2)
    out = {}
    for line in reply.decode("latin-1").split("\r\n"):
        if line.startswith("STAT "):
            _, name, value = line.split(" ", 2)
            out[name] = value
    return out


def metrics_url(srv: ServerProc) -> str:
    """The node says where it serves metrics in `stats settings` (metrics_listen)."""
    address = stats(srv, "settings")["metrics_listen"]
    return f"http://{address}/metrics"


@dataclass
class Response:
    status: int
    content_type: str
    body: str


def get(url: str, accept: str | None = None, method: str = "GET") -> Response:
    req = urllib.request.Request(url, method=method)
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Response(resp.status, resp.headers["Content-Type"], resp.read().decode())
    except urllib.error.HTTPError as err:
        return Response(err.code, err.headers.get("Content-Type", ""), err.read().decode())


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """(sample name, sorted labels) -> value, read with prometheus-client's own parser."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(url: str) -> Samples:
    resp = get(url)
    assert resp.status == 200, resp
    return samples(resp.body)


def value(data: Samples, name: str, **labels: str) -> float:
    return data[(name, tuple(sorted(labels.items())))]

"""The `/metrics` endpoint: a small threaded HTTP server on its own port, off the request path.

Why separate from the data port: Prometheus speaks HTTP, memcached clients do not, and a scrape
must never queue behind cache traffic in a worker's selector loop. The server binds when it is
built (so a busy port fails at start-up, like the data port) and serves from ``start()`` on, in
a daemon thread; each scrape runs in its own short-lived thread. The exposition is
prometheus-client's: Prometheus text 0.0.4, or OpenMetrics when the ``Accept`` header asks for it,
gzip when asked. Only ``/metrics`` serves metrics; ``/`` says where they are; the rest is 404.

``--metrics-listen`` takes ``HOST:PORT``, ``:PORT`` or ``PORT``; without a host it binds loopback.
Port 0 picks a free port: ``address`` (and ``stats settings`` as ``metrics_listen``) tells which.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from memcache_server.metrics import build_registry, node_snapshot
from memcache_server.protocol.address import format_host_port, split_host_port

if TYPE_CHECKING:
    from memcache_server.report import StatsSource

__all__ = ["MetricsServer", "open_node_metrics", "parse_listen", "DEFAULT_HOST"]

DEFAULT_HOST = "127.0.0.1"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_LANDING = (
    b"<html><head><title>memcache-server</title></head><body>"
    b'<h1>memcache-server</h1><p><a href="/metrics">Metrics</a></p></body></html>\n'
)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``:PORT`` / ``PORT`` -> (host, port); loopback by default.

    Raises ValueError with a message meant for the command line."""
    return split_host_port(text.strip(), default_host=DEFAULT_HOST, port_zero=True)


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name: resolve it once, take the first address's family
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return infos[0][0] if infos else socket.AF_INET


class _Handler(WSGIRequestHandler):
    """No access log on stderr (a scrape every few seconds would drown the node's own log);
    a client that stalls mid-request is dropped after ``timeout`` seconds."""

    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # read by TCPServer.__init__ when it creates the socket
        super().__init__(address, _Handler)


def _routes(metrics_app: WSGIApp) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [_LANDING]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found: metrics are at /metrics\n"]

    return app


class MetricsServer:
    """Serves one registry. Built (and bound) by the main thread; ``stop()`` from any thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        try:
            self._httpd = _Server((host, port), _family(host))
        except OSError as exc:  # the operator must see which of the node's addresses is taken
            where = format_host_port(host, port)
            raise OSError(
                exc.errno, f"failed to listen for metrics on {where}: {exc.strerror}"
            ) from None
        self._httpd.set_app(_routes(make_wsgi_app(registry)))
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @classmethod
    def from_listen(cls, listen: str, registry: CollectorRegistry) -> MetricsServer:
        host, port = parse_listen(listen)
        return cls(host, port, registry)

    @property
    def address(self) -> str:
        """``host:port`` actually bound (the port chosen when 0 was asked for)."""
        return format_host_port(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()


def open_node_metrics(node: StatsSource) -> MetricsServer:
    """Bind the endpoint for a cache node (``--metrics-listen``); ``start()`` serves it."""
    assert node.config.metrics_listen is not None
    return MetricsServer.from_listen(
        node.config.metrics_listen, build_registry(lambda: node_snapshot(node))
    )

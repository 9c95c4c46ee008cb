"""A tiny loopback configuration endpoint for the client helper's tests.

It answers ``config get cluster`` with the exact canonical bytes of the document it holds
(spec/discovery.md §1), and ``get AmazonElastiCache:cluster`` with the legacy form, so the
client's fetch, polling and swap logic can be tested against real sockets while the real config
node is built elsewhere. It runs as a thread of the test process and is stopped by ``close()``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

Triple = tuple[str, str, int]


def encode(version: int, nodes: Iterable[Triple]) -> bytes:
    """The canonical document: version LF, nodes sorted by hostname then port, LF."""
    ordered = sorted(nodes, key=lambda n: (n[0], n[2]))
    return f"{version}\n{' '.join(f'{h}|{ip}|{p}' for h, ip, p in ordered)}\n".encode()


def config_reply(document: bytes) -> bytes:
    return b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (len(document), document)


class Endpoint:
    """Serves one document on 127.0.0.1; ``mode`` picks the behaviour under test.

    ``"config"``: the canonical ``CONFIG`` reply in one send; ``"split"``: the same bytes one at
    a time; ``"legacy"``: ``ERROR`` to ``config get``, the document as a ``VALUE`` item to the
    legacy ``get``; ``"end"``: no document; ``"silent"``: read and never answer; ``"raw"``:
    send ``raw`` whatever was asked.
    """

    def __init__(self, document: bytes | None = None, mode: str = "config") -> None:
        self.document = document
        self.mode = mode
        self.raw = b""
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, version: int, nodes: Iterable[Triple]) -> None:
        self.document = encode(version, nodes)

    def count(self, prefix: bytes = b"config get") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.startswith(prefix))

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._conns:
            conn.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buf = b""
        while not self._stopped.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                line = line.rstrip(b"\r")
                with self._lock:
                    self.requests.append(line)
                try:
                    self._answer(conn, line)
                except OSError:
                    return

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        doc, mode = self.document, self.mode
        if mode == "silent":
            return
        if mode == "raw":
            conn.sendall(self.raw)
        elif line.startswith(b"config get"):
            if mode == "legacy":
                conn.sendall(b"ERROR\r\n")
            elif doc is None or mode == "end":
                conn.sendall(b"END\r\n")
            elif mode == "split":
                for i in range(len(config_reply(doc))):
                    conn.sendall(config_reply(doc)[i : i + 1])
            else:
                conn.sendall(config_reply(doc))
        elif line.startswith(b"get AmazonElastiCache:cluster") and doc is not None:
            conn.sendall(b"VALUE AmazonElastiCache:cluster 0 %d\r\n%s\r\nEND\r\n" % (len(doc), doc))
        elif line.startswith(b"get "):
            conn.sendall(b"END\r\n")
        elif line == b"version":
            conn.sendall(b"VERSION 1.6.18\r\n")
        else:
            conn.sendall(b"ERROR\r\n")

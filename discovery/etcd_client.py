"""A small, blocking etcd v3 client over etcd's JSON gateway (``/v3/...``), standard library only.

Why not a library: the config node needs a per-call timeout on every request, failover across
several ``--etcd`` URLs, a watch that is a bounded, restartable stream read on a thread we own,
and types ``mypy --strict`` can check. ``etcd3gw`` (the maintained gateway client) finds the
``/v3`` path of etcd 3.4 correctly, but takes a single endpoint, pulls in requests, futurist and
pbr, and runs watches on threads of its own; the handful of calls used here (lease grant and
keepalive, put, range, txn, watch) are a few lines each over ``http.client``.

The gateway speaks the gRPC messages as JSON: byte fields are base64, 64-bit integers are
strings, and fields equal to their default (0, empty) are left out of replies.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "EtcdClient",
    "EtcdError",
    "KeyValue",
    "WatchEvent",
    "Compacted",
    "WatchIdle",
    "Op",
    "prefix_end",
    "parse_endpoints",
    "uses_tls",
]

Json = dict[str, Any]
MAX_LINE = 4 << 20  # one watch message; membership documents are far smaller


class EtcdError(Exception):
    """No endpoint answered, or etcd answered with an error."""


class WatchIdle(EtcdError):
    """A watch saw nothing for its idle time: normal on a quiet cluster; resume it."""


class Compacted(EtcdError):
    """A watch asked for revisions etcd has compacted away: resynchronise from a range."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"


def uses_tls(text: str) -> bool:
    """Whether the ``--etcd`` URLs are https:// (all of them: parse_endpoints refuses a mix)."""
    return text.strip().startswith("https://")


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``http://h:p[,http://h2:p2...]`` or all https:// (the scheme may be left out: http)
    -> [(host, port), ...]."""
    out = []
    scheme = "https" if uses_tls(text) else "http"
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        url = urlsplit(part if "://" in part else "http://" + part)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"etcd endpoints are http:// or https:// URLs: {part!r}")
        if url.scheme != scheme:
            raise ValueError(f"etcd endpoints are all http:// or all https://: {text!r}")
        if not url.hostname or url.path not in ("", "/"):
            raise ValueError(f"expected http://HOST:PORT, got {part!r}")
        try:
            port = url.port or 2379
        except ValueError:
            raise ValueError(f"bad port in {part!r}") from None
        out.append((url.hostname, port))
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    lease: int

    @classmethod
    def of(cls, kv: Json) -> KeyValue:
        return cls(
            _unb64(kv.get("key")),
            _unb64(kv.get("value")),
            int(kv.get("mod_revision", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class Op:
    """One operation inside a transaction."""

    body: Json

    @staticmethod
    def put(key: bytes, value: bytes, lease: int = 0) -> Op:
        req: Json = {"key": _b64(key), "value": _b64(value)}
        if lease:
            req["lease"] = str(lease)
        return Op({"request_put": req})

    @staticmethod
    def delete(key: bytes) -> Op:
        return Op({"request_delete_range": {"key": _b64(key)}})


class EtcdClient:
    """Unary calls on one persistent connection, failing over across the endpoints in order.

    Not thread-safe: each thread that talks to etcd has its own client. With ``tls`` (a client
    context: the CA to trust, and a client certificate where etcd asks for one) it speaks
    https."""

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        timeout: float = 2.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.tls = tls
        self._current = 0
        self._conn: http.client.HTTPConnection | None = None

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self.endpoints[self._current]
        if self.tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post_once(self, path: str, body: Json) -> Json:
        if self._conn is None:
            self._conn = self._open(self.timeout)
        data = json.dumps(body).encode()
        self._conn.request("POST", "/v3/" + path, data, {"Content-Type": "application/json"})
        resp = self._conn.getresponse()
        raw = resp.read(MAX_LINE)
        if resp.status != 200:
            try:
                msg = json.loads(raw).get("message") or json.loads(raw).get("error")
            except ValueError:
                msg = raw[:200].decode("latin-1")
            raise EtcdError(f"etcd {path}: HTTP {resp.status}: {msg}")
        result: Json = json.loads(raw)
        return result

    def post(self, path: str, body: Json) -> Json:
        """One call; on a connection failure try each endpoint once, starting with the current.

        A kept-alive connection that fails is retried once on a fresh one to the same endpoint
        first: etcd closes idle connections, and a restarted etcd has forgotten them all."""
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            for _retry in range(2):
                reused = self._conn is not None
                try:
                    return self._post_once(path, body)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    last = exc
                    self.close()
                    if not reused:
                        break
            self._current = (self._current + 1) % len(self.endpoints)
        host, port = self.endpoints[self._current]
        raise EtcdError(f"etcd unreachable ({host}:{port}: {last or 'no answer'})")

    # ------------------------------------------------------------------ calls

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd raises it to its minimum, about 2 s)."""
        return int(self.post("lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL, or 0 when it no longer exists (expired or revoked)."""
        result = self.post("lease/keepalive", {"ID": str(lease)}).get("result", {})
        return int(result.get("TTL", 0))

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write one key; the revision of the write."""
        body = Op.put(key, value, lease).body["request_put"]
        return int(self.post("kv/put", body)["header"]["revision"])

    def range_prefix(self, prefix: bytes) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the store's revision they were read at."""
        reply = self.post("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return int(reply["header"]["revision"]), [KeyValue.of(kv) for kv in reply.get("kvs", [])]

    def txn(self, compare: list[Json], success: list[Op]) -> tuple[bool, int, list[Json]]:
        """Apply ``success`` if every comparison holds: (succeeded, revision, responses)."""
        reply = self.post("kv/txn", {"compare": compare, "success": [op.body for op in success]})
        return (
            bool(reply.get("succeeded", False)),
            int(reply["header"]["revision"]),
            list(reply.get("responses", [])),
        )

    @staticmethod
    def mod_revision_is(key: bytes, revision: int) -> Json:
        """A comparison: ``key`` was last written at ``revision`` (0: it does not exist)."""
        return {
            "key": _b64(key),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": str(revision),
        }

    # ------------------------------------------------------------------ watch

    def watch(self, prefix: bytes, start_revision: int, idle: float) -> Iterator[list[WatchEvent]]:
        """Stream the changes under ``prefix`` from ``start_revision`` on, one list per message.

        Runs on its own connection, against the current endpoint. Ends (raises EtcdError) when
        the stream breaks or stays silent for ``idle`` seconds: the caller resumes from the
        revision after the last one it saw, so a silent but healthy stream costs one
        reconnect per ``idle`` seconds and a dead one is noticed within ``idle``."""
        host, port = self.endpoints[self._current]
        conn = self._open(idle)
        try:
            body = {
                "create_request": {
                    "key": _b64(prefix),
                    "range_end": _b64(prefix_end(prefix)),
                    "start_revision": str(start_revision),
                }
            }
            try:
                conn.request("POST", "/v3/watch", json.dumps(body).encode())
                resp = conn.getresponse()
                if resp.status != 200:
                    raise EtcdError(f"etcd watch: HTTP {resp.status}")
                while True:
                    line = resp.readline(MAX_LINE)
                    if not line:
                        raise EtcdError("etcd closed the watch")
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        raise EtcdError(f"etcd watch: {msg['error'].get('message')}")
                    result = msg.get("result", {})
                    if int(result.get("compact_revision", 0)):
                        raise Compacted(f"revision {start_revision} was compacted")
                    if result.get("canceled"):
                        raise EtcdError(f"etcd cancelled the watch: {result.get('cancel_reason')}")
                    events = [
                        WatchEvent(ev.get("type") == "DELETE", KeyValue.of(ev["kv"]))
                        for ev in result.get("events", [])
                    ]
                    if events:
                        yield events
            except TimeoutError:
                raise WatchIdle(f"etcd watch idle for {idle}s") from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._current = (self._current + 1) % len(self.endpoints)
                raise EtcdError(
                    f"etcd watch on {host}:{port}: {exc or type(exc).__name__}"
                ) from None
        finally:
            conn.close()

"""TLS (``-Z``): memcached's ``ssl_*`` options, an SSLContext, and a worker that speaks TLS.

Design: each TLS connection runs an ``ssl.SSLObject`` over two memory BIOs instead of wrapping
the socket. The worker keeps doing plain, non-blocking ``recv``/``send`` on the socket and only
moves bytes through OpenSSL in memory, so nothing can block the loop: a handshake advances by
whatever bytes have arrived (``SSLWantReadError`` just means "wait for the next read event"),
writes never raise ``SSLWantWriteError`` (they land in the outgoing BIO), and every read event
drains the decrypted data until OpenSSL wants more, so no plaintext is ever left buffered inside
OpenSSL where the selector cannot see it (the ``pending()`` trap of wrapped sockets). The worker's
output buffer then holds ciphertext, and its back-pressure and idle rules apply unchanged.

Threads and processes: the context is built at start and rebuilt by ``refresh_certs`` (any
worker); a rebuild swaps one reference, so connections being accepted use either the old or the
new context, never a half-loaded one. The command runs in one worker process while every worker
process holds its own context, so a successful reload also publishes the bytes it loaded, with a
new stamp, in the node's shared ``CertArea`` (tls_certs.py); before each new connection's
handshake a process compares that stamp with the one it last followed and, when it moved,
rebuilds its context from those same bytes. A ``TLSConn`` belongs to its connection's worker
thread.
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memcache_server.config import ExitCode, ServerConfig, StartupError
from memcache_server.server.tls_certs import CertArea, CertFiles, Staged
from memcache_server.server.worker import READ_SIZE, Connection, Worker
from memcache_server.stats import (
    BYTES_WRITTEN,
    SSL_HANDSHAKE_ERRORS,
)

if TYPE_CHECKING:
    import socket

    from memcache_server.storage.clock import Clock
    from memcache_server.storage.segment import Segment

__all__ = ["TLSError", "TLSSettings", "TLSServer", "TLSConn", "TLSWorker", "build_context"]

# memcached exits with EX_USAGE when its certificates cannot be loaded
EX_USAGE = ExitCode.USAGE

# ssl_verify_mode: 0 none, 1 request, 2 require, 3 once (OpenSSL's CLIENT_ONCE only matters for
# renegotiation, which is disabled, so "once" behaves as "request").
VERIFY_MODES = {0: ssl.CERT_NONE, 1: ssl.CERT_OPTIONAL, 2: ssl.CERT_REQUIRED, 3: ssl.CERT_OPTIONAL}
MIN_VERSIONS = {
    0: (ssl.TLSVersion.TLSv1, "tlsv1.0"),
    1: (ssl.TLSVersion.TLSv1_1, "tlsv1.1"),
    2: (ssl.TLSVersion.TLSv1_2, "tlsv1.2"),
    3: (ssl.TLSVersion.TLSv1_3, "tlsv1.3"),
}
PEM = 1  # ssl_keyformat: memcached passes it to OpenSSL as SSL_FILETYPE_PEM

NOT_ENABLED = b"Error TLS not enabled\r\n"
REFRESHED = b"OK\r\n"


class TLSError(StartupError):
    """TLS settings or certificates that cannot be used at start."""


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """memcached's ``-o ssl_*`` options, validated."""

    chain_cert: str | None = None
    key: str | None = None
    ca_cert: str | None = None
    verify_mode: int = 0
    min_version: int = 2
    ciphers: str | None = None
    keyformat: int = PEM
    session_cache: bool = False
    kernel_tls: bool = False

    @classmethod
    def from_config(cls, config: ServerConfig) -> TLSSettings:
        ext = config.extended

        def number(name: str, default: int) -> int:
            value = ext.get(name)
            return default if value is None else int(value)

        settings = cls(
            chain_cert=ext.get("ssl_chain_cert"),
            key=ext.get("ssl_key"),
            ca_cert=ext.get("ssl_ca_cert"),
            verify_mode=number("ssl_verify_mode", 0),
            min_version=number("ssl_min_version", 2),
            ciphers=ext.get("ssl_ciphers"),
            keyformat=number("ssl_keyformat", PEM),
            session_cache="ssl_session_cache" in ext,
            kernel_tls="ssl_kernel_tls" in ext,
        )
        if settings.verify_mode not in VERIFY_MODES:
            raise TLSError("Invalid ssl_verify_mode. Use help to see valid options.")
        if settings.min_version not in MIN_VERSIONS:
            raise TLSError("Invalid ssl_min_version. Use help to see valid options.")
        return settings

    @property
    def min_version_name(self) -> str:
        return MIN_VERSIONS[self.min_version][1]


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _load_identity(ctx: ssl.SSLContext, s: TLSSettings, files: CertFiles) -> None:
    """Certificate chain then key, with memcached's message naming whichever failed (a path
    that was not given prints as C's "(null)", as in memcached's message)."""
    chain = s.chain_cert
    with Staged() as staged:
        try:
            if chain is None:
                raise FileNotFoundError(2, "no ssl_chain_cert given")
            chain_path = staged.path(files.chain)
            # parse the chain on its own first, so a bad key is not blamed on the certificate
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=chain_path)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(
                f"Error loading the certificate chain: {chain or '(null)'} : {_reason(exc)}",
                EX_USAGE,
            ) from None
        key = s.key or "(null)"
        if s.keyformat != PEM:
            raise TLSError(f"Error loading the key: {key} : only PEM keys are supported", EX_USAGE)
        try:
            # no ssl_key: the key may follow the chain's certs
            assert chain_path is not None
            ctx.load_cert_chain(chain_path, staged.path(files.key))
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"Error loading the key: {key} : {_reason(exc)}", EX_USAGE) from None
        if s.ca_cert is not None:
            try:
                ctx.load_verify_locations(cafile=staged.path(files.ca))
            except (OSError, ssl.SSLError) as exc:
                raise TLSError(
                    f"Error loading the CA certificate: {s.ca_cert} : {_reason(exc)}", EX_USAGE
                ) from None


def read_files(s: TLSSettings) -> CertFiles:
    """What the configured certificate paths hold now."""
    return CertFiles.read(s.chain_cert, s.key, s.ca_cert)


def build_context(s: TLSSettings, files: CertFiles | None = None) -> ssl.SSLContext:
    """A server context configured as memcached configures its SSL_CTX, from ``files`` (what
    the configured paths hold now, when not given)."""
    if files is None:
        files = read_files(s)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[s.min_version][0]
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # memcached refuses renegotiation too
    if not s.session_cache:
        ctx.num_tickets = 0  # no resumption unless asked for, as memcached's default
    _load_identity(ctx, s, files)
    ctx.verify_mode = VERIFY_MODES[s.verify_mode]
    if s.ciphers is not None:
        try:
            ctx.set_ciphers(s.ciphers)
        except ssl.SSLError:
            raise TLSError(f"Error setting the provided cipher(s): {s.ciphers}", EX_USAGE) from None
    if s.kernel_tls:
        # Kernel offload needs OpenSSL to own the socket; our memory-BIO design does not allow it.
        raise TLSError("Kernel TLS offload is not available", EX_USAGE)
    return ctx


class TLSServer:
    """The TLS settings and the context in force for this process's new connections.

    ``area`` is the node's shared ``CertArea`` (carved from the segment before workers fork);
    without one the object keeps a private area, enough for one process."""

    __slots__ = ("settings", "context", "clock", "area", "seen")

    def __init__(self, settings: TLSSettings, clock: Clock, area: CertArea | None = None) -> None:
        self.settings = settings
        self.context = build_context(settings)
        self.clock = clock
        self.area = area if area is not None else CertArea()
        self.seen = self.area.stamp  # the stamp this process's context was built for
        self.area.refreshed_at = clock.now

    @classmethod
    def from_config(cls, config: ServerConfig, clock: Clock,
                    segment: Segment | None = None) -> TLSServer:
        settings = TLSSettings.from_config(config)
        return cls(settings, clock, CertArea(segment) if segment is not None else None)

    @property
    def refreshed_at(self) -> int:
        """When a worker of the node last reloaded the certificates (``stats``)."""
        return self.area.refreshed_at

    def refresh(self) -> bytes:
        """``refresh_certs``: reload chain, key and CA from their paths; on error keep the old.
        On success every other worker process follows with the same bytes (``follow``)."""
        area = self.area
        with area.lock:
            files = read_files(self.settings)
            try:
                context = build_context(self.settings, files)
            except TLSError as exc:
                return str(exc).encode() + b"\r\n"
            self.context = context
            self.seen = area.publish(files, self.clock.now)
        return REFRESHED

    def follow(self) -> None:
        """Take up the certificates another worker loaded, if the stamp moved since this
        process last looked: one shared word read when it has not."""
        area = self.area
        if area.stamp == self.seen:
            return
        with area.lock:
            self.seen = area.stamp  # tried once per refresh, not again on every accept
            files = area.files()
        try:
            self.context = build_context(self.settings, files)
        except TLSError as exc:  # the refresher built from these very bytes: not expected
            print(f"{exc}; keeping the previous certificates", file=sys.stderr)

    def new_conn(self) -> TLSConn:
        self.follow()
        return TLSConn(self.context)


class TLSConn:
    """One connection's TLS state: an SSLObject between two memory BIOs."""

    __slots__ = ("obj", "incoming", "outgoing", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.established = False

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Ciphertext in; (the plaintext it completes, whether the peer said goodbye) out.

        Raises ssl.SSLError on a failed handshake or a corrupt record. Anything OpenSSL wants
        sent back (handshake messages, alerts) is left in ``outgoing`` for the caller.
        """
        self.incoming.write(data)
        obj = self.obj
        if not self.established:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                return b"", False
            self.established = True
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not chunk:
                closed = True  # close_notify
                break
            chunks.append(chunk)
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), closed

    def encrypt(self, data: bytes | bytearray) -> bytes:
        """Plaintext in, the TLS records to send out."""
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            view = view[n:]
        return self.outgoing.read()


class TLSWorker(Worker):
    """A worker whose TCP connections speak TLS (UNIX-socket ones stay plain, as in memcached).

    Only read and write differ from ``Worker``: ciphertext is decrypted before the session sees
    it and replies are encrypted on their way to the output buffer.
    """

    def _add(self, sock: socket.socket, peer: str, listen_addr: str) -> None:
        super()._add(sock, peer, listen_addr)
        conn = self.conns.get(sock.fileno())
        tls = self.node.tls
        if conn is not None and tls is not None and peer.startswith("tcp"):
            conn.tls = tls.new_conn()

    def _on_readable(self, conn: Connection, timed: bool = False) -> None:
        tls: TLSConn | None = conn.tls
        if tls is None:
            super()._on_readable(conn, timed)
            return
        raw = self._receive(conn)
        if raw is None:
            return
        session = conn.session
        try:
            data, closed = tls.receive(raw)
        except ssl.SSLError:
            if not tls.established:
                self.stats[SSL_HANDSHAKE_ERRORS] += 1
            self._write_raw(conn, tls.outgoing.read())  # the alert, if OpenSSL made one
            session.want_close = True
            self._run(conn)
            return
        handshake = tls.outgoing.read()
        if handshake:
            self._write_raw(conn, handshake)
        if data:
            session.feed(data)
        self._run(conn, 0, timed)
        if closed and self.conns.get(conn.fd) is conn:
            # the peer said goodbye: what came before it has been answered; flush, then close
            session.close_after = True
            if conn.pending:
                self._pause_reading(conn)
            else:
                self._close(conn)

    def _send(self, conn: Connection, out: bytes | bytearray) -> None:
        tls: TLSConn | None = conn.tls
        if tls is None:
            super()._send(conn, out)
            return
        records = tls.encrypt(out)
        # bytes_written counts what the client asked for, as memcached counts it under TLS
        self.stats[BYTES_WRITTEN] += len(out) - len(records)
        super()._send(conn, records)

    def _write_raw(self, conn: Connection, data: bytes) -> None:
        """Protocol bytes of TLS itself: sent like replies, not counted as reply bytes."""
        if data:
            super()._send(conn, data)
            self.stats[BYTES_WRITTEN] -= len(data)

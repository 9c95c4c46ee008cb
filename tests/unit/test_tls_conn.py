"""TLSConn without sockets: a client SSLObject and our server side exchange bytes in memory.

Drives the handshake with ciphertext cut into small pieces (as a slow network would deliver it)
and checks that every byte of plaintext comes out of ``receive`` at once, nothing left behind in
OpenSSL, which is the property the worker's selector loop relies on.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from certs import Certs

from memcache_server.config import ServerConfig
from memcache_server.server.tls import TLSConn, TLSError, TLSSettings, build_context

# every test here needs certificates, made with the openssl tool (a reference tool: see
# reference.py for what its absence does)
pytestmark = pytest.mark.usefixtures("certs")


def settings(c: Certs, **extra: str) -> TLSSettings:
    ext: dict[str, str | None] = {
        "ssl_chain_cert": str(c.server_cert),
        "ssl_key": str(c.server_key),
    }
    ext.update(extra)
    return TLSSettings.from_config(ServerConfig(enable_ssl=True, extended=ext))


class Client:
    """A TLS client over memory BIOs."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    def step(self) -> bool:
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False


def pump(client: Client, server: TLSConn, piece: int) -> bytes:
    """Run the handshake to completion, delivering ciphertext ``piece`` bytes at a time."""
    plaintext = b""
    done = client.step()
    for _ in range(1000):
        data = client.outgoing.read()
        for i in range(0, len(data), piece):
            got, closed = server.receive(data[i : i + piece])
            assert not closed
            plaintext += got
        client.incoming.write(server.outgoing.read())
        if done and not data:
            return plaintext
        done = client.step()
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("piece", [1, 7, 100000])
def test_handshake_and_data_in_pieces(certs: Certs, piece: int) -> None:
    server = TLSConn(build_context(settings(certs)))
    client = Client(certs.client_context())
    assert pump(client, server, piece) == b""
    assert server.established
    # several records in one delivery: all of their plaintext comes out of one receive()
    for chunk in (b"get a\r\n", b"x" * 40000, b"get b\r\n"):
        client.obj.write(chunk)
    records = client.outgoing.read()
    got, closed = server.receive(records)
    assert got == b"get a\r\n" + b"x" * 40000 + b"get b\r\n" and not closed
    # and replies go back as records the client can read
    client.incoming.write(server.encrypt(bytearray(b"END\r\n" * 5000)))
    reply = b""
    while len(reply) < 25000:
        reply += client.obj.read(65536)  # one record (at most 16 KB) per read
    assert reply == b"END\r\n" * 5000
    # goodbye: close_notify is reported, with the data that preceded it
    client.obj.write(b"quit\r\n")
    try:
        client.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    got, closed = server.receive(client.outgoing.read())
    assert got == b"quit\r\n" and closed


def test_plaintext_is_a_handshake_error(certs: Certs) -> None:
    server = TLSConn(build_context(settings(certs)))
    with pytest.raises(ssl.SSLError):
        server.receive(b"version\r\n")
    assert not server.established


def test_settings_validation(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="Invalid ssl_verify_mode"):
        settings(certs, ssl_verify_mode="4")
    with pytest.raises(TLSError, match="Invalid ssl_min_version"):
        settings(certs, ssl_min_version="9")
    assert settings(certs, ssl_min_version="3").min_version_name == "tlsv1.3"
    with pytest.raises(TLSError, match="Kernel TLS offload is not available"):
        build_context(settings(certs, ssl_kernel_tls=""))
    with pytest.raises(TLSError, match="only PEM keys"):
        build_context(settings(certs, ssl_keyformat="2"))
    combined = tmp_path / "combined.pem"
    combined.write_bytes(certs.server_cert.read_bytes() + certs.server_key.read_bytes())
    ext: dict[str, str | None] = {"ssl_chain_cert": str(combined)}
    cfg = ServerConfig(enable_ssl=True, extended=ext)
    build_context(TLSSettings.from_config(cfg))  # the key may follow the chain in one file

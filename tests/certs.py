"""Throwaway X.509 material for TLS tests, made with the ``openssl`` command-line tool.

A test CA signs two server certificates (for 127.0.0.1, to test certificate refresh) and a
client certificate; a second, unrelated CA signs a "rogue" client certificate that mutual TLS
must refuse. Keys are EC P-256 (generated in milliseconds, unlike RSA) and everything lives in a
temporary directory the caller owns.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    server2_cert: Path
    server2_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    def client_context(self, with_cert: bool = False, rogue: bool = False) -> ssl.SSLContext:
        """A client context trusting the test CA, optionally presenting a client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if rogue:
            ctx.load_cert_chain(str(self.rogue_cert), str(self.rogue_key))
        elif with_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(name: str, cwd: Path) -> None:
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        cwd=cwd,
    )  # fmt: skip


def _leaf(name: str, ca: str, cwd: Path, ext: str | None) -> None:
    _run(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd,
    )  # fmt: skip
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"]
    args += ["-CAcreateserial", "-days", "2", "-out", f"{name}.pem"]
    if ext is not None:
        (cwd / f"{name}.ext").write_text(ext)
        args += ["-extfile", f"{name}.ext"]
    _run(*args, cwd=cwd)


def etcd_server_cert(certs: Certs) -> tuple[Path, Path]:
    """A certificate for etcd on 127.0.0.1, signed by the test CA, usable for server AND client
    auth: with --client-cert-auth, etcd 3.4's own JSON gateway connects to its gRPC side with
    the server certificate, which is refused without clientAuth. Made once per ``certs``."""
    d = certs.dir
    if not (d / "etcd-server.pem").exists():
        ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        _leaf("etcd-server", "ca", d, ext)
    return d / "etcd-server.pem", d / "etcd-server.key"


def make_certs(directory: Path) -> Certs:
    """Create the whole set in ``directory`` (a few tens of milliseconds of CPU)."""
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    client_ext = "extendedKeyUsage=clientAuth\n"
    _ca("ca", directory)
    _ca("rogue-ca", directory)
    _leaf("server", "ca", directory, server_ext)
    _leaf("server2", "ca", directory, server_ext)
    _leaf("client", "ca", directory, client_ext)
    _leaf("rogue", "rogue-ca", directory, client_ext)
    d = directory
    return Certs(
        d,
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "server2.pem",
        d / "server2.key",
        d / "client.pem",
        d / "client.key",
        d / "rogue.pem",
        d / "rogue.key",
    )

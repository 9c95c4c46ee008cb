"""A real etcd (Debian's etcd-server, 3.4) for tests: one member on free loopback ports with a
data directory under the test's tmp path, stopped by its PID.

``restart()`` brings it back on the same ports and data, as an operator's restart would. With
``certs`` it serves https only and asks clients for a certificate signed by the test CA.
"""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from certs import Certs, etcd_server_cert
from procs import ServerProc, free_port, wait_listening

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
HOST = "127.0.0.1"


def require_etcd() -> None:
    if not Path(ETCD).exists():
        pytest.skip("etcd is not installed (Debian package etcd-server)")


class Etcd:
    """One etcd member; ``url`` is its client URL."""

    def __init__(self, data_dir: Path, certs: Certs | None = None) -> None:
        require_etcd()
        self.data_dir = data_dir
        self.certs = certs
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"{'https' if certs else 'http'}://{HOST}:{self.client_port}"
        self.proc: ServerProc | None = None
        self.start()

    def client_tls(self) -> ssl.SSLContext | None:
        """What a client of this etcd needs: the test CA and a client certificate."""
        return self.certs.client_context(with_cert=True) if self.certs else None

    def start(self, timeout: float = 20.0) -> None:
        peer = f"http://{HOST}:{self.peer_port}"
        cmd = [
            ETCD,
            "--name",
            "test",
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"test={peer}",
        ]
        if self.certs is not None:
            cert, key = etcd_server_cert(self.certs)
            cmd += ["--cert-file", str(cert), "--key-file", str(key)]
            cmd += ["--trusted-ca-file", str(self.certs.ca), "--client-cert-auth"]
        log = open(self.data_dir.parent / f"etcd-{self.client_port}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.proc = ServerProc(proc, HOST, self.client_port)
        wait_listening(HOST, self.client_port, timeout)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until it has a leader and serves reads (listening comes a little earlier)."""
        from memcache_server.discovery.etcd_client import EtcdClient, EtcdError

        client = EtcdClient([(HOST, self.client_port)], timeout=1.0, tls=self.client_tls())
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.range_prefix(b"/ready-check/")
                    return
                except EtcdError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.stop(sig)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

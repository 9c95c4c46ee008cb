"""The certificate bytes a refresh loads and shares: read bounded, staged for OpenSSL, shared.

Real files, a real segment and a real forked process: a child sees what the parent published,
and a context built from shared bytes serves them even after the files on disk changed.
"""

from __future__ import annotations

import errno
import os
import ssl
from pathlib import Path

import pytest
from certs import Certs

from memcache_server.config import ServerConfig
from memcache_server.server.tls import TLSError, TLSSettings, build_context, read_files
from memcache_server.server.tls_certs import (
    MAX_FILE_BYTES,
    CertArea,
    CertFiles,
    Staged,
    read_file,
)
from memcache_server.storage.segment import Segment

pytestmark = pytest.mark.usefixtures("certs")


def settings(chain: Path, key: Path) -> TLSSettings:
    ext: dict[str, str | None] = {"ssl_chain_cert": str(chain), "ssl_key": str(key)}
    return TLSSettings.from_config(ServerConfig(enable_ssl=True, extended=ext))


def test_read_file_is_bounded_and_keeps_the_error(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    too_big = read_file(str(big))
    assert isinstance(too_big, OSError) and too_big.errno == errno.EFBIG
    missing = read_file(str(tmp_path / "absent.pem"))
    assert isinstance(missing, FileNotFoundError)
    assert read_file(None) is None
    exact = tmp_path / "exact.pem"
    exact.write_bytes(b"y" * MAX_FILE_BYTES)
    assert read_file(str(exact)) == b"y" * MAX_FILE_BYTES


def test_an_oversized_chain_is_refused_with_memcacheds_message(certs: Certs,
                                                               tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(certs.server_cert.read_bytes() + b"\n" * MAX_FILE_BYTES)
    with pytest.raises(TLSError) as caught:
        build_context(settings(big, certs.server_key))
    assert str(caught.value) == f"Error loading the certificate chain: {big} : File too large"


def test_staged_paths_hold_the_bytes_and_close_after(tmp_path: Path) -> None:
    with Staged() as staged:
        path = staged.path(b"hello")
        assert path is not None
        assert Path(path).read_bytes() == b"hello"
        fd = staged.fds[0]
        assert staged.path(None) is None
        with pytest.raises(FileNotFoundError):
            staged.path(FileNotFoundError(errno.ENOENT, "gone"))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_context_built_from_shared_bytes_ignores_later_file_changes(certs: Certs,
                                                                     tmp_path: Path) -> None:
    chain, key = tmp_path / "live.pem", tmp_path / "live.key"
    chain.write_bytes(certs.server2_cert.read_bytes())
    key.write_bytes(certs.server2_key.read_bytes())
    s = settings(chain, key)
    segment = Segment(CertArea.NBYTES)
    area = CertArea(segment)
    with area.lock:
        files = read_files(s)
        assert files.complete()
        stamp = area.publish(files, when=1234)
    assert (stamp, area.stamp, area.refreshed_at) == (1, 1, 1234)
    chain.write_text("not a certificate\n")  # changed after the refresh
    child = os.fork()
    if child == 0:  # another worker process: takes what was published
        ok = False
        try:
            with area.lock:
                shared = area.files()
            ctx = build_context(s, shared)
            ok = shared.chain == certs.server2_cert.read_bytes() and shared.ca is None
            ok = ok and isinstance(ctx, ssl.SSLContext)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(TLSError):
        build_context(s)  # from the paths: the file now on disk is refused


def test_incomplete_files_report_the_file_that_failed(certs: Certs, tmp_path: Path) -> None:
    files = CertFiles.read(str(certs.server_cert), str(tmp_path / "nokey"), None)
    assert not files.complete()
    with pytest.raises(TLSError) as caught:
        build_context(settings(certs.server_cert, tmp_path / "nokey"), files)
    assert str(caught.value).startswith(f"Error loading the key: {tmp_path / 'nokey'} : ")

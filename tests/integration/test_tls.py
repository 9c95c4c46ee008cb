"""TLS (-Z): our node beside real memcached started with the same certificates and options.

Certificates are made for the module with the ``openssl`` tool (``certs.py``); the module skips
without it. Every check runs against both servers and compares what clients observe: the bytes
of replies, which handshakes succeed, refresh_certs, start-up refusals, the ssl_* stats.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from certs import Certs
from procs import MEMCACHED, ROOT, ServerProc, start_memcached, start_node
from reference import need_memcached
from wire import converse, in_parallel, read_settled, stats

R = TypeVar("R")

# every test here needs certificates, made with the openssl tool (a reference tool: see
# reference.py for what its absence does)
pytestmark = pytest.mark.usefixtures("certs")


def tls_args(
    c: Certs, *extra: str, chain: Path | None = None, key: Path | None = None
) -> list[str]:
    opts = f"ssl_chain_cert={chain or c.server_cert},ssl_key={key or c.server_key}"
    return ["-Z", "-o", ",".join([opts, *extra])]


def start_pair(args: list[str]) -> tuple[ServerProc, ServerProc]:
    need_memcached()
    ref = start_memcached(*args)
    try:
        ours = start_node(*args)
    except BaseException:
        ref.stop(signal.SIGKILL)
        raise
    return ref, ours


def stop_pair(pair: tuple[ServerProc, ServerProc]) -> None:
    pair[0].stop(signal.SIGKILL)
    pair[1].stop()


@pytest.fixture(scope="module")
def pair(certs: Certs) -> Iterator[tuple[ServerProc, ServerProc]]:
    p = start_pair(tls_args(certs))
    yield p
    stop_pair(p)


def tls_connect(srv: ServerProc, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    return ctx.wrap_socket(srv.connect(), server_hostname="127.0.0.1")


def outcome_with(ctx: ssl.SSLContext, srv: ServerProc) -> bytes:
    return handshake_outcome(srv, ctx)


def handshake_outcome(srv: ServerProc, ctx: ssl.SSLContext) -> bytes:
    """The reply to ``version`` over a new TLS connection, or what went wrong."""
    try:
        sock = tls_connect(srv, ctx)
    except (ssl.SSLError, OSError):
        return b"handshake refused"
    replies = converse(sock, [b"version\r\n"])
    return replies[0] if replies else b""


def both(fn: Callable[[ServerProc], R], pair: tuple[ServerProc, ServerProc]) -> list[R]:
    return in_parallel(fn, list(pair))


REQUESTS = [
    b"set k 0 0 5\r\nhello\r\n",
    b"get k nope\r\n",
    b"append k 0 0 6\r\n world\r\ngets nope\r\n",
    b"incr k 1\r\nset n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\n",
    b"set big 3 0 300000\r\n" + b"v" * 300000 + b"\r\n",
    b"get big\r\n",
    b"get " + b" ".join(b"key%d" % i for i in range(500)) + b"\r\n",
    b"set k 0 0 3\r\nabcdef\r\n",  # bad data chunk
    b"bogus\r\n",
    b"refresh_certs noreply\r\nversion\r\n",
    b"delete k\r\ndelete k\r\nquit\r\n",
]


def test_commands_over_tls_match_memcached(
    pair: tuple[ServerProc, ServerProc], certs: Certs
) -> None:
    ctx = certs.client_context()
    got = both(lambda srv: converse(tls_connect(srv, ctx), REQUESTS), pair)
    assert got[1] == got[0]
    assert got[1][-1].endswith(b"<EOF>")  # quit closed it


def test_requests_behind_a_large_value_are_answered_at_once(
    pair: tuple[ServerProc, ServerProc], certs: Certs
) -> None:
    """Decrypted bytes never wait inside OpenSSL for the next read event.

    memcached 1.6.18 leaves the ``get`` below in OpenSSL's buffer after reading the value and
    answers it only when the client sends something more; ours answers in the same turn.
    """
    _, ours = pair
    request = b"set big 0 0 300000\r\n" + b"v" * 300000 + b"\r\nget big\r\n"
    reply = converse(tls_connect(ours, certs.client_context()), [request])[0]
    assert reply == b"STORED\r\nVALUE big 0 300000\r\n" + b"v" * 300000 + b"\r\nEND\r\n"


def test_pymemcache_connects_with_tls_context(
    pair: tuple[ServerProc, ServerProc], certs: Certs
) -> None:
    from pymemcache.client.base import Client

    _, ours = pair
    client = Client(ours.address, tls_context=certs.client_context(), timeout=10)
    try:
        assert client.set("greeting", b"hello", noreply=False)
        assert client.get("greeting") == b"hello"
        value = os.urandom(700_000)
        assert client.set("big", value, noreply=False)
        assert client.get_many(["greeting", "big"]) == {"greeting": b"hello", "big": value}
        assert client.incr("counter", 1) is None
        client.set("counter", b"41", noreply=False)
        assert client.incr("counter", 1) == 42
        assert client.version() == b"1.6.18"
    finally:
        client.close()


def test_plaintext_client_is_refused_and_counted(
    pair: tuple[ServerProc, ServerProc], certs: Certs
) -> None:
    ctx = certs.client_context()

    def errors(srv: ServerProc) -> int:
        sock = tls_connect(srv, ctx)
        n = int(stats(sock)["ssl_handshake_errors"])
        sock.close()
        return n

    before = both(errors, pair)
    got = both(lambda srv: converse(srv.connect(), [b"version\r\n"]), pair)
    assert got[0] == got[1] == [b"<EOF>"]
    after = both(errors, pair)
    # memcached counts it only when the bytes are already there as it accepts (it tries the
    # handshake once in its accept thread); we count every failed handshake
    assert after[0] - before[0] in (0, 1)
    assert after[1] - before[1] == 1


def test_settings_report_the_tls_options(pair: tuple[ServerProc, ServerProc], certs: Certs) -> None:
    ctx = certs.client_context()

    def ssl_settings(srv: ServerProc) -> dict[str, str]:
        sock = tls_connect(srv, ctx)
        st = stats(sock, b"settings")
        sock.close()
        return {k: v for k, v in st.items() if k.startswith("ssl_")}

    got = both(ssl_settings, pair)
    assert got[0] == got[1]
    assert got[1]["ssl_enabled"] == "yes"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("2", {"none": False, "good": True, "rogue": False}),  # require
        ("1", {"none": True, "good": True, "rogue": False}),  # request
        ("0", {"none": True, "good": True, "rogue": True}),  # none: nothing is checked
    ],
    ids=["require", "request", "none"],
)
def test_mutual_tls(certs: Certs, mode: str, expected: dict[str, bool]) -> None:
    p = start_pair(tls_args(certs, f"ssl_ca_cert={certs.ca}", f"ssl_verify_mode={mode}"))
    try:
        contexts = {
            "none": certs.client_context(),
            "good": certs.client_context(with_cert=True),
            "rogue": certs.client_context(rogue=True),
        }
        for name, ctx in contexts.items():
            got = both(functools.partial(outcome_with, ctx), p)
            assert got[0] == got[1], name
            # TLS 1.3 servers refuse a client certificate after the client's handshake is done,
            # so a refusal shows as a closed connection when the first reply is read.
            assert (got[1] == b"VERSION 1.6.18\r\n") == expected[name], (name, got)
    finally:
        stop_pair(p)


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_refresh_certs(certs: Certs, tmp_path: Path) -> None:
    chain, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(certs.server_cert, chain)
    shutil.copy(certs.server_key, key)
    p = start_pair(tls_args(certs, chain=chain, key=key))
    ctx = certs.client_context()
    try:
        held = [tls_connect(srv, ctx) for srv in p]

        def peer_cert(srv: ServerProc) -> bytes:
            """The one certificate new connections get; several are held open at once, so
            they land on different worker processes of ours (each holds its own context)."""
            socks = [tls_connect(srv, ctx) for _ in range(12)]
            ders = {sock.getpeercert(binary_form=True) for sock in socks}
            for sock in socks:
                sock.close()
            assert len(ders) == 1, "new connections were served different certificates"
            der = ders.pop()
            assert der is not None
            return der

        def refresh(sock: ssl.SSLSocket) -> bytes:
            sock.sendall(b"refresh_certs\r\n")
            return read_settled(sock)[0]

        assert both(peer_cert, p) == [_der(certs.server_cert)] * 2
        shutil.copy(certs.server2_cert, chain)
        shutil.copy(certs.server2_key, key)
        assert in_parallel(refresh, held) == [b"OK\r\n"] * 2
        assert both(peer_cert, p) == [_der(certs.server2_cert)] * 2
        chain.write_text("not a certificate\n")
        replies = in_parallel(refresh, held)
        for reply in replies:
            assert reply.startswith(b"Error loading the certificate chain: %s : " % bytes(chain))
            assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
        assert both(peer_cert, p) == [_der(certs.server2_cert)] * 2  # the old one stays
        for sock in held:
            assert converse(sock, [b"get k\r\n"]) == [b"END\r\n"]  # older connections unaffected
    finally:
        stop_pair(p)


def test_refresh_certs_without_tls_matches_memcached() -> None:
    need_memcached()
    ref, ours = start_memcached(), start_node()
    try:
        got = in_parallel(lambda srv: converse(srv.connect(), [b"refresh_certs\r\n"]), [ref, ours])
        assert got[0] == got[1] == [b"Error TLS not enabled\r\n"]
    finally:
        ref.stop(signal.SIGKILL)
        ours.stop()


def test_a_stalled_handshake_does_not_block_the_worker(certs: Certs) -> None:
    """One worker thread; a client sends half a ClientHello and stops. Others still get served."""
    ours = start_node("-t", "1", *tls_args(certs))
    ctx = certs.client_context()
    stalled: list[socket.socket] = []
    try:
        for _ in range(5):
            s = ours.connect()
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01")  # a record header, a fraction of hello
            stalled.append(s)
        start = time.monotonic()
        results = in_parallel(lambda _: handshake_outcome(ours, ctx), list(range(20)), workers=20)
        elapsed = time.monotonic() - start
        assert results == [b"VERSION 1.6.18\r\n"] * 20
        assert elapsed < 5.0, elapsed  # generous for a loaded machine; stalls would hit timeouts
    finally:
        for s in stalled:
            s.close()
        ours.stop()


def test_auth_over_tls(certs: Certs, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_bytes(b"alice:secret\n")
    p = start_pair(["-Y", str(users), *tls_args(certs)])
    ctx = certs.client_context()
    try:
        steps = [b"get k\r\n", b"set auth 0 0 12\r\nalice secret\r\nget k\r\n"]
        got = both(lambda srv: converse(tls_connect(srv, ctx), steps), p)
        assert got[0] == got[1] == [b"CLIENT_ERROR unauthenticated\r\n", b"STORED\r\nEND\r\n"]
    finally:
        stop_pair(p)


def _start_failure(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, timeout=20, cwd=ROOT)
    # memcached prints OpenSSL's error queue first; its own message is the last line
    lines = proc.stderr.decode().strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def test_unusable_settings_refuse_to_start_like_memcached(certs: Certs, tmp_path: Path) -> None:
    need_memcached()
    c = certs
    bad: dict[str, tuple[list[str], str | None]] = {
        "verify_mode": (tls_args(c, "ssl_verify_mode=5"), None),
        "min_version": (tls_args(c, "ssl_min_version=7"), None),
        "ciphers": (tls_args(c, "ssl_ciphers=BOGUS"), None),
        "no_chain": (["-Z"], "Error loading the certificate chain: (null) : "),
        "missing_chain": (
            tls_args(c, chain=tmp_path / "nope.pem"),
            f"Error loading the certificate chain: {tmp_path / 'nope.pem'} : ",
        ),
        "wrong_key": (
            tls_args(c, key=c.client_key),
            f"Error loading the key: {c.client_key} : ",
        ),
        "missing_ca": (
            tls_args(c, f"ssl_ca_cert={tmp_path / 'nope-ca.pem'}"),
            f"Error loading the CA certificate: {tmp_path / 'nope-ca.pem'} : ",
        ),
    }
    port = "39999"  # memcached refuses -Z with -p 0; neither gets as far as listening
    commands: list[list[str]] = []
    for args, _ in bad.values():
        ref = [MEMCACHED, "-p", port, "-U", "0", *args]
        if os.geteuid() == 0:
            ref += ["-u", "root"]
        commands += [ref, [sys.executable, str(ROOT / "cli.py"), "-p", "0", *args]]
    got = in_parallel(_start_failure, commands)
    for i, (name, (_, prefix)) in enumerate(bad.items()):
        ref_result, our_result = got[2 * i], got[2 * i + 1]
        if prefix is None:
            assert our_result == ref_result, name
        else:
            # OpenSSL's reason text differs between its C API and Python's ssl module
            assert our_result[0] == ref_result[0] == 64, (name, ref_result, our_result)
            assert ref_result[1].startswith(prefix) and our_result[1].startswith(prefix), name

"""ASCII authentication (-Y): our node against real memcached started with the same auth file.

Each case is one conversation on its own connection, one request per write. Conversations run
in parallel (authentication state is per connection) so cases that expect silence overlap their
waits. One difference is deliberate and tested on its own: memcached answers only the last of
several requests pipelined in one write before authentication (each reply overwrites the
previous one); we answer every request, in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import MEMCACHED, ROOT, ServerProc, start_memcached, start_node
from reference import need_memcached
from wire import in_parallel, read_settled, stats, talk

AUTH = b"alice:secret\nbob:hunter2\r\ncarol:pa:ss\n"


def creds(user_pass: bytes, key: bytes = b"auth", extra: bytes = b"") -> bytes:
    return b"set %s 0 0 %d%s\r\n%s\r\n" % (key, len(user_pass), extra, user_pass)


OK = creds(b"alice secret")

# name -> one chunk per write. Every case ends with requests that show the connection's state.
CASES: dict[str, list[bytes]] = {
    "get_before_auth": [b"get foo\r\n", b"version\r\n"],
    "quit_before_auth": [b"quit\r\n", b"version\r\n"],
    "empty_line": [b"\r\n", b"version\r\n"],
    "bare_newlines": [b"\n", b"\n"],
    "good": [OK, b"get foo\r\n", b"version\r\n"],
    "good_second_user": [creds(b"bob hunter2"), b"version\r\n"],
    "password_with_colon": [creds(b"carol pa:ss"), b"version\r\n"],
    "bad_password": [creds(b"alice secreX"), b"get foo\r\n"],
    "unknown_user": [creds(b"mallory secret"), b"version\r\n"],
    "user_only": [creds(b"alice"), b"version\r\n"],
    "empty_block": [b"set a 0 0 0\r\n\r\n", b"version\r\n"],
    "tab_separated": [creds(b"alice\tsecret"), b"version\r\n"],
    "extra_tokens": [creds(b"alice secret extra"), b"version\r\n"],
    "double_space": [creds(b"alice  secret "), b"version\r\n"],
    "nul_in_block": [b"set a 0 0 13\r\nalice\0 secret\r\n", b"version\r\n"],
    "nul_after_password": [b"set a 0 0 13\r\nalice secret\0\r\n", b"version\r\n"],
    "noreply_still_answers": [creds(b"alice secret", extra=b" noreply"), b"version\r\n"],
    "any_flags_and_exptime": [b"set k x y 12\r\nalice secret\r\n", b"version\r\n"],
    "leading_space": [b" " + OK, b"version\r\n"],
    "too_few_tokens": [b"set a 0 0\r\n", b"alice secret\r\n"],
    "not_set": [b"add a 0 0 12\r\n", b"alice secret\r\n"],
    "uppercase_set": [b"SET a 0 0 12\r\n", b"alice secret\r\n"],
    "length_junk": [b"set a 0 0 12x\r\n", b"version\r\n"],
    "length_negative": [b"set a 0 0 -1\r\n", b"version\r\n"],
    "length_minus_zero": [b"set a 0 0 -0\r\n\r\n", b"version\r\n"],
    "length_plus": [b"set a 0 0 +12\r\nalice secret\r\n", b"version\r\n"],
    "length_tab": [b"set a 0 0 \t12\t\r\nalice secret\r\n", b"version\r\n"],
    "length_2_pow_32_is_0": [b"set a 0 0 4294967296\r\n", b"\r\n", b"version\r\n"],
    "length_2_pow_32_plus_12": [b"set a 0 0 4294967308\r\n", b"alice secret\r\n"],
    "length_wraps_to_0": [b"set a 0 0 4294967294\r\n", b"version\r\n"],
    "length_wraps_to_1": [b"set a 0 0 4294967295\r\n", b"x", b"version\r\n"],
    "length_too_big_for_buffer": [b"set a 0 0 16383\r\n", b"x" * 16000, b"y" * 1000],
    "length_fits_buffer": [creds(b"alice secret" + b" " * 16370), b"version\r\n"],
    "block_too_long": [b"set a 0 0 1\r\n", b"abc", b"\r\n", b"version\r\n"],
    "block_lf_only": [b"set a 0 0 12\n", b"alice secret\n", b"x", b"version\r\n"],
    "line_over_read_buffer": [b"y" * 17000 + b"\r\n", b"version\r\n"],
    "split_header_and_block": [b"set a 0 0 12\r\n", b"alice ", b"secret\r\n", b"version\r\n"],
    "binary_packet": [bytes([0x80, 0x0A]) + b"\0" * 22, b"\r\n", b"version\r\n"],
    "http": [b"GET / HTTP/1.0\r\n", b"version\r\n"],
    "line_2049_no_newline": [b"x" * 2049, b"version\r\n"],
    "line_long_with_newline": [b"x" * 3000 + b"\r\n", b"version\r\n"],
    "retry_after_failure": [creds(b"alice nope"), OK, b"get foo\r\n"],
    "reauth_is_a_set": [OK, creds(b"mallory x", key=b"k"), b"get k\r\n"],
    "pipelined_after_auth": [OK + b"set k 0 0 1\r\nv\r\nget k\r\nget auth\r\n"],
    "binary_byte_after_auth": [OK, bytes([0x80]) + b"\r\n", b"version\r\n"],
}


@pytest.fixture(scope="module")
def authfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users"
    path.write_bytes(AUTH)
    return path


@pytest.fixture(scope="module")
def pair(authfile: Path) -> Iterator[tuple[ServerProc, ServerProc]]:
    need_memcached()
    ref = start_memcached("-Y", str(authfile))
    try:
        ours = start_node("-Y", str(authfile))
    except BaseException:
        ref.stop(signal.SIGKILL)
        raise
    yield ref, ours
    ref.stop(signal.SIGKILL)
    ours.stop()


def test_every_case_matches_memcached(pair: tuple[ServerProc, ServerProc]) -> None:
    ref, ours = pair
    jobs = [(srv, name) for name in CASES for srv in (ref, ours)]
    results = in_parallel(lambda job: talk(job[0], CASES[job[1]]), jobs, workers=48)
    got = dict(zip([(id(s), n) for s, n in jobs], results, strict=True))
    mismatches = {
        name: (got[(id(ref), name)], got[(id(ours), name)])
        for name in CASES
        if got[(id(ref), name)] != got[(id(ours), name)]
    }
    report = [f"{n}:\n  memcached {r!r}\n  ours      {o!r}" for n, (r, o) in mismatches.items()]
    assert not mismatches, "\n".join(report)
    # and the counters those conversations moved agree (only credential checks are counted)
    counts = []
    for srv in (ref, ours):
        sock = srv.connect()
        sock.sendall(OK)
        assert read_settled(sock)[0] == b"STORED\r\n"
        st = stats(sock)
        sock.close()
        counts.append((st["auth_cmds"], st["auth_errors"]))
    assert counts[0] == counts[1]
    assert int(counts[1][0]) > int(counts[1][1]) > 0


def test_settings_name_the_file(pair: tuple[ServerProc, ServerProc], authfile: Path) -> None:
    for srv in pair:
        sock = srv.connect()
        sock.sendall(OK)
        read_settled(sock)
        st = stats(sock, b"settings")
        sock.close()
        assert st["auth_enabled_ascii"] == str(authfile)
        assert st["auth_enabled_sasl"] == "no"


def test_pipelined_requests_before_auth_are_each_answered(
    pair: tuple[ServerProc, ServerProc],
) -> None:
    """memcached keeps only the last reply of such a batch; we keep the stream in step."""
    _, ours = pair
    batch = b"get a\r\n" + creds(b"alice nope") + creds(b"alice") + b"get b\r\n" + OK + b"get c\r\n"
    reply = talk(ours, [batch])[0]
    assert reply == (
        b"CLIENT_ERROR unauthenticated\r\n"
        b"CLIENT_ERROR authentication failure\r\n"
        b"CLIENT_ERROR bad authentication token format\r\n"
        b"CLIENT_ERROR unauthenticated\r\n"
        b"STORED\r\nEND\r\n"
    )


def test_pymemcache_authenticates_with_a_set(pair: tuple[ServerProc, ServerProc]) -> None:
    from pymemcache.client.base import Client

    _, ours = pair
    client = Client(ours.address, connect_timeout=5, timeout=5)
    try:
        with pytest.raises(Exception, match="unauthenticated"):
            client.get("k")
        client.close()
        assert client.set("auth", b"alice secret", noreply=False)
        assert client.set("k", b"v", noreply=False)
        assert client.get("k") == b"v"
    finally:
        client.close()


def _start_failure(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, timeout=20, cwd=ROOT)
    return proc.returncode, proc.stderr.decode().strip()


UNUSABLE = {
    "no_colon": b"nocolon\n",
    "trailing_blank_line": b"alice:secret\n\n",
    "trailing_blank_crlf": b"alice:secret\r\n\r\n",
    "missing": None,
}


def test_unusable_file_refuses_to_start_like_memcached(tmp_path: Path) -> None:
    need_memcached()
    commands: list[list[str]] = []
    for name, content in UNUSABLE.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        ref = [MEMCACHED, "-p", "0", "-U", "0", "-Y", str(path)]
        if os.geteuid() == 0:
            ref += ["-u", "root"]
        commands += [ref, [sys.executable, str(ROOT / "cli.py"), "-p", "0", "-Y", str(path)]]
    got = in_parallel(_start_failure, commands)
    for i, name in enumerate(UNUSABLE):
        ref_result, our_result = got[2 * i], got[2 * i + 1]
        assert our_result == ref_result, name
        assert our_result[0] == 1


def _auth_reply(srv: ServerProc, user_pass: bytes) -> bytes:
    return talk(srv, [creds(user_pass)])[0]


def test_sighup_reloads_and_a_bad_file_keeps_the_old_table(tmp_path: Path) -> None:
    need_memcached()
    path = tmp_path / "users"
    path.write_bytes(b"alice:secret\n")
    servers = [start_memcached("-Y", str(path)), start_node("-Y", str(path))]
    try:

        def outcome() -> list[tuple[bytes, bytes]]:
            return in_parallel(
                lambda s: (_auth_reply(s, b"alice secret"), _auth_reply(s, b"bob pw")), servers
            )

        def hup() -> None:
            for srv in servers:
                os.kill(srv.proc.pid, signal.SIGHUP)

        def poll_until(expect: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
            deadline = time.monotonic() + 10  # both reload on their once-a-second clock tick
            got = outcome()
            while any(g != expect for g in got) and time.monotonic() < deadline:
                time.sleep(0.1)
                got = outcome()
            return got

        stored, failed = b"STORED\r\n", b"CLIENT_ERROR authentication failure\r\n"
        assert outcome() == [(stored, failed)] * 2
        path.write_bytes(b"bob:pw\n")
        assert outcome() == [(stored, failed)] * 2  # nothing changes without the signal
        hup()
        assert poll_until((failed, stored)) == [(failed, stored)] * 2
        path.write_bytes(b"garbage\n")
        hup()
        time.sleep(1.2)  # a tick has passed: the reload was tried and refused
        path.unlink()
        hup()
        time.sleep(1.2)
        assert outcome() == [(failed, stored)] * 2
        assert all(srv.proc.poll() is None for srv in servers)
    finally:
        servers[0].stop(signal.SIGKILL)
        servers[1].stop()

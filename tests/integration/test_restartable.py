"""The restartable cache (``-e PATH``) on real node processes, next to real memcached.

A clean stop (SIGTERM, SIGUSR1) leaves ``PATH`` and ``PATH.meta``; the next start with the same
memory settings serves every item again with its flags, TTL and CAS, and new CAS numbers go on
from there. An unclean stop (SIGKILL) or other memory settings start empty, printing what
memcached prints. A path that cannot be opened ends the process as memcached's ends.
Every node is stopped by PID; the files live in the test's own directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import MEMCACHED, ROOT, ServerProc, exchange, free_port, start_memcached, start_node
from reference import need_memcached


def stop(srv: ServerProc, sig: int) -> tuple[int, str]:
    """Send ``sig`` by PID; the exit status and everything the process wrote to stderr."""
    os.kill(srv.proc.pid, sig)
    try:
        _, err = srv.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(srv.proc.pid, signal.SIGKILL)
        _, err = srv.proc.communicate(timeout=10)
    return srv.proc.returncode, err.decode()


def ask(srv: ServerProc, request: bytes) -> bytes:
    with srv.connect() as s:
        return exchange(s, request)


def cas_of(reply: bytes) -> dict[bytes, int]:
    return {m[0]: int(m[1]) for m in re.findall(rb"VALUE (\S+) \d+ \d+ (\d+)\r\n", reply)}


BIG = os.urandom(600 * 1024)  # past slab_chunk_max: stored over several chunks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_items_come_back_with_flags_ttl_and_cas(tmp_path: Path, sig: int) -> None:
    path = tmp_path / "cache"
    srv = start_node("-e", str(path))
    try:
        ask(srv, b"set plain 5 0 3\r\nabc\r\nset ttl 7 1000 2\r\nhi\r\n")
        assert ask(srv, b"set big 9 0 %d\r\n" % len(BIG) + BIG + b"\r\n") == b"STORED\r\n"
        before = ask(srv, b"gets plain ttl big\r\n")
        settings = ask(srv, b"stats settings\r\n")
    finally:
        rc, err = stop(srv, sig)
    assert rc == 0
    assert f"STAT memory_file {path}\r\n".encode() in settings
    assert err == "[restart] no metadata save file, starting with a clean cache\n"

    srv = start_node("-e", str(path))
    try:
        after = ask(srv, b"gets plain ttl big\r\n")
        ttl = ask(srv, b"mg ttl t\r\n")
        new = ask(srv, b"set fresh 0 0 1\r\nx\r\ngets fresh\r\n")
    finally:
        rc, err = stop(srv, signal.SIGTERM)
    assert rc == 0 and err == ""  # memcached says nothing when it restores
    assert after == before
    assert b"VALUE big 9 %d" % len(BIG) in after
    remaining = int(ttl.split(b" t")[1].split()[0])
    assert 990 <= remaining <= 1000  # the expiry kept its instant
    assert cas_of(new)[b"fresh"] > max(cas_of(before).values())


def test_an_item_that_expired_meanwhile_does_not_come_back(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    srv = start_node("-e", str(path))
    try:
        ask(srv, b"set short 0 1 1\r\na\r\nset long 0 0 1\r\nb\r\n")
        stored_at = time.time()
    finally:
        assert stop(srv, signal.SIGTERM)[0] == 0
    time.sleep(max(0.0, stored_at + 2.5 - time.time()))
    srv = start_node("-e", str(path))
    try:
        assert ask(srv, b"get short long\r\n") == b"VALUE long 0 1\r\nb\r\nEND\r\n"
        assert b"STAT curr_items 1\r\n" in ask(srv, b"stats\r\n")
    finally:
        stop(srv, signal.SIGTERM)


def restart_stderr_of_memcached(path: Path, first: list[str], sig: int, second: list[str]) -> str:
    """What real memcached prints when started again on ``path`` after a stop by ``sig``
    (memcached keeps its items only on SIGUSR1)."""
    srv = start_memcached("-e", str(path), *first)
    try:
        ask(srv, b"set k 0 0 1\r\nv\r\n")
    finally:
        stop(srv, signal.SIGUSR1 if sig == signal.SIGTERM else sig)
    srv = start_memcached("-e", str(path), *second)
    try:
        assert ask(srv, b"get k\r\n") == b"END\r\n"
    finally:
        _, err = stop(srv, signal.SIGTERM)
    return err


def restart_stderr_of_node(path: Path, first: list[str], sig: int, second: list[str]) -> str:
    srv = start_node("-e", str(path), *first)
    try:
        ask(srv, b"set k 0 0 1\r\nv\r\n")
    finally:
        stop(srv, sig)
    srv = start_node("-e", str(path), *second)
    try:
        assert ask(srv, b"get k\r\n") == b"END\r\n"  # starts empty
        assert b"STAT curr_items 0\r\n" in ask(srv, b"stats\r\n")
    finally:
        _, err = stop(srv, signal.SIGTERM)
    return err


def test_other_memory_settings_start_empty_saying_what_memcached_says(tmp_path: Path) -> None:
    ours = restart_stderr_of_node(tmp_path / "ours", ["-m", "64"], signal.SIGTERM, ["-m", "48"])
    assert ours == (
        "[restart] restart incompatible due to setting for [maxbytes] [old value: 67108864]\n"
        "[restart] missing some metadata lines\n"
        "[restart] failed to validate metadata, starting with a clean cache\n"
    )
    need_memcached()
    theirs = restart_stderr_of_memcached(
        tmp_path / "theirs", ["-m", "64"], signal.SIGTERM, ["-m", "48"]
    )
    assert ours == theirs


def test_a_growth_factor_change_starts_empty_too(tmp_path: Path) -> None:
    ours = restart_stderr_of_node(tmp_path / "c", [], signal.SIGTERM, ["-f", "1.5"])
    assert "setting for [slab_config] [old value: 1.25]" in ours


def test_an_unclean_stop_starts_empty_as_memcached_does(tmp_path: Path) -> None:
    ours = restart_stderr_of_node(tmp_path / "ours", [], signal.SIGKILL, [])
    assert ours == "[restart] no metadata save file, starting with a clean cache\n"
    need_memcached()
    theirs = restart_stderr_of_memcached(tmp_path / "theirs", [], signal.SIGKILL, [])
    assert ours == theirs


def test_the_file_is_reused_not_leaked(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    inodes = []
    for round_ in range(3):
        srv = start_node("-e", str(path))
        try:
            assert sorted(os.listdir(tmp_path)) == ["cache"]  # .meta is read and removed
            ask(srv, b"set k%d 0 0 1\r\nv\r\n" % round_)
            inodes.append(path.stat().st_ino)
        finally:
            assert stop(srv, signal.SIGTERM)[0] == 0
        assert sorted(os.listdir(tmp_path)) == ["cache", "cache.meta"]
    assert len(set(inodes)) == 1
    srv = start_node("-e", str(path))
    try:
        assert ask(srv, b"get k0 k1 k2\r\n").count(b"VALUE") == 3
    finally:
        stop(srv, signal.SIGTERM)


def node_exit(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", "0", *args],
        capture_output=True,
        cwd=ROOT,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stderr


def memcached_exit(*args: str) -> tuple[int, str]:
    cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(free_port()), "-U", "0", *args]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr


def test_a_path_that_cannot_be_opened_ends_the_node_as_memcached_ends(tmp_path: Path) -> None:
    args = ("-e", str(tmp_path / "no-such-dir" / "cache"))
    rc, err = node_exit(*args)
    assert rc == -signal.SIGABRT
    assert err == "failed to open file for mmap: No such file or directory\n"
    assert not any(p.name.startswith("core") for p in ROOT.iterdir())
    need_memcached()
    assert (rc, err) == memcached_exit(*args)

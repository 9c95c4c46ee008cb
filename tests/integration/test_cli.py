"""Start-up: bad values refuse to start with a non-zero exit and memcached's message."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys

import pytest
from procs import MEMCACHED, ROOT, free_port, have_memcached, start_node


def run_cli(*args: str, timeout: float = 15.0) -> tuple[int | None, str, str]:
    """Run ``cli.py -l 127.0.0.1 -p 0 args``. A node that starts anyway (it prints its port)
    is stopped by PID at once and reported with return code None."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    started = False
    first = ""
    try:
        if sel.select(timeout):
            first = proc.stdout.readline()
            started = first.strip().isdigit()  # -p 0 announces the bound port: it is serving
        else:
            started = True
    finally:
        sel.close()
    if started and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    # read what is left through the same buffered streams (communicate() would skip what
    # readline() already buffered); outputs are small, so reading one then the other is safe
    out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr is not None else ""
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    if started:
        return None, out, err
    return proc.returncode, first + out, err


def memcached_refusal(*args: str) -> str | None:
    """memcached's stderr for a start-up it refuses (None if it starts)."""
    cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(free_port()), "-U", "0", *args]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=2)
        return err.strip() if proc.returncode else None
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        return None


# (args, message on stderr). Where memcached refuses the same flags, the message is memcached's.
REFUSED = [
    (("-c", "0"), "Maximum connections must be greater than 0"),
    (("-t", "0"), "Number of threads must be greater than 0"),
    (("-I", "1000"), "Item max size cannot be less than 1024 bytes."),
    (
        ("-I", "64k"),
        "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 65536)",
    ),
    (("-m", "1", "-I", "1m"), "Cannot set item size limit higher than 1/2 of memory max."),
    (("-o", "bogus"), 'Illegal suboption "bogus"'),
    (("-o", "idle_timeout"), "idle_timeout"),
    (("-o", "lru_crawler=5"), "lru_crawler"),
    (("-l", "fooble"), "fooble"),
    (("-U", "5"), "UDP"),
    (("-f", "1.0"), "Factor must be greater than 1"),
    (("-n", "0"), "Chunk size must be greater than 0"),
    (("-B", "binary"), "binary"),
    (("-p", "70000"), "70000"),
    (("-m", "0"), "Memory"),
    (("-I", "banana"), "banana"),
]
MEMCACHED_SAME_MESSAGE = {("-c", "0"), ("-t", "0"), ("-I", "1000"), ("-I", "64k"), ("-o", "bogus")}


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_startup_values_refuse_to_start(args: tuple[str, ...], message: str) -> None:
    rc, out, err = run_cli(*args)
    assert rc is not None, f"the node started with {args}"
    assert rc != 0
    assert message in err, err
    assert "Traceback" not in err
    assert not out.strip()  # no port announced


@pytest.mark.skipif(not have_memcached(), reason="memcached is not installed")
@pytest.mark.parametrize("args", sorted(MEMCACHED_SAME_MESSAGE))
def test_memcached_gives_the_same_message(args: tuple[str, ...]) -> None:
    message = dict(REFUSED)[args]
    refusal = memcached_refusal(*args)
    assert refusal is not None and message in refusal


def test_help_lists_options() -> None:
    for flag in ("-h", "--help"):
        rc, out, err = run_cli(flag)
        assert rc == 0, err
        for opt in ("-p", "-m", "-c", "-t", "-I", "-o", "-s", "-A", "-M", "-U", "-l", "-V"):
            assert f"{opt}, --" in out, opt


def test_version_exits_zero() -> None:
    rc, out, err = run_cli("-V")
    assert rc == 0, err
    assert "1.6.18" in out


def test_good_flags_start() -> None:
    srv = start_node("-m", "16", "-c", "10", "-t", "2", "-I", "2m", "-f", "1.5", "-n", "64")
    try:
        with srv.connect() as s:
            s.sendall(b"stats settings\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                assert chunk
                buf += chunk
        st = dict(line.split(b" ")[1:3] for line in buf.split(b"\r\n") if line.startswith(b"STAT"))
        assert st[b"maxbytes"] == b"16777216"
        assert st[b"maxconns"] == b"10"
        assert st[b"num_threads"] == b"2"
        assert st[b"item_size_max"] == b"2097152"
        assert st[b"growth_factor"] == b"1.50"
        assert st[b"chunk_size"] == b"64"
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("size", ["1000000", "768k"])
def test_item_size_max_must_be_a_multiple_of_slab_chunk_max(size: str) -> None:
    rc, _, err = run_cli("-I", size)
    assert rc is not None and rc != 0
    assert "must be evenly divisible by slab_chunk_max" in err


def test_slab_chunk_max_is_in_bytes() -> None:
    srv = start_node("-I", "512k", "-o", "slab_chunk_max=256")
    try:
        with srv.connect() as s:
            s.sendall(b"stats settings\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                assert chunk
                buf += chunk
        assert b"STAT slab_chunk_max 256\r\n" in buf
    finally:
        srv.stop()


def test_a_taken_port_is_named_once() -> None:
    srv = start_node()
    try:
        taken = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", str(srv.port)],
            capture_output=True,
            timeout=30,
        )
    finally:
        srv.stop()
    assert taken.returncode == 71
    assert taken.stderr.decode().strip() == (
        f"failed to listen on 127.0.0.1 port {srv.port}: Address already in use"
    )

"""Start-up: bad values refuse to start with a non-zero exit and memcached's message."""

from __future__ import annotations

import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from metrics_client import stats
from procs import MEMCACHED, ROOT, free_port, start_memcached, start_node
from reference import need_memcached

from memcache_server.options import EXTENDED


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


def memcached_exit(*args: str) -> tuple[int | None, str]:
    """memcached's exit status and whole stderr for a start-up (None if it starts)."""
    cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(free_port()), "-U", "0", *args]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=2)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        return None, ""


def memcached_refusal(*args: str) -> str | None:
    """memcached's stderr for a start-up it refuses (None if it starts)."""
    rc, err = memcached_exit(*args)
    return err.strip() if rc else None


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


@pytest.mark.usefixtures("live_reference")
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


# refusals where memcached's status differs by cause: EXIT_FAILURE (1) for most, EX_USAGE (64)
# for the item-size family, EX_OSERR (71) for an address it cannot resolve
SAME_REFUSAL = [
    ("-c", "0"),
    ("-t", "0"),
    ("-R", "0"),
    ("-f", "1.0"),
    ("-n", "0"),
    ("-o", "bogus"),
    ("-I", "1000"),
    ("-I", "64k"),
    ("-I", "1025k"),
    ("-m", "1", "-I", "1m"),
    ("-l", "fooble"),
    ("-U", "5", "-Y", "never-read"),  # UDP with ascii auth: refused before the file is read
]


@pytest.mark.parametrize("args", SAME_REFUSAL, ids=" ".join)
def test_refusals_exit_and_say_what_memcached_does(args: tuple[str, ...]) -> None:
    need_memcached()
    ours_rc, _, ours_err = run_cli(*args)
    theirs_rc, theirs_err = memcached_exit(*args)
    assert theirs_rc is not None and theirs_rc != 0
    assert (ours_rc, ours_err) == (theirs_rc, theirs_err)


@pytest.mark.parametrize("args", [("--bogus",), ("-c",)], ids=" ".join)
def test_a_bad_flag_exits_as_memcached_does(args: tuple[str, ...]) -> None:
    need_memcached()
    ours_rc, _, ours_err = run_cli(*args)
    theirs_rc, _ = memcached_exit(*args)
    assert ours_rc == theirs_rc == 1
    assert "Traceback" not in ours_err


def _unix_socket_mode(sock: Path, *args: str) -> int:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "-s", str(sock), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stderr.read() if proc.stderr else b""
        return stat.S_IMODE(sock.stat().st_mode)
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _memcached_unix_socket_mode(sock: Path, *args: str) -> int:
    cmd = [MEMCACHED, "-s", str(sock), *args] + (["-u", "root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        return stat.S_IMODE(sock.stat().st_mode)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("mask", ["750", "999", "75x"])
def test_unix_mask_is_read_as_memcached_reads_it(tmp_path: Path, mask: str) -> None:
    """memcached reads -a with strtol(.., 8): the leading octal digits, 0 when there are none."""
    need_memcached()
    ours = _unix_socket_mode(tmp_path / "ours.sock", "-a", mask)
    assert ours == _memcached_unix_socket_mode(tmp_path / "mc.sock", "-a", mask)


def test_flags_come_from_the_environment_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMCACHE_SERVER_MEMORY_LIMIT", "16")
    monkeypatch.setenv("MEMCACHE_SERVER_CONN_LIMIT", "77")
    monkeypatch.setenv("MEMCACHE_SERVER_EXTENDED", "idle_timeout=9 track_sizes")
    srv = start_node("-c", "50")
    try:
        settings = stats(srv, "settings")
    finally:
        srv.stop()
    assert settings["maxbytes"] == str(16 * 1024 * 1024)
    assert settings["maxconns"] == "50"
    assert settings["idle_timeout"] == "9"
    assert settings["track_sizes"] == "yes"


def _help_suboptions(text: str) -> set[str]:
    """Sub-option names in a -h listing: memcached's ``   - name:`` lines, or our table's."""
    names = set(re.findall(r"^\s+- ([a-z_]+):", text, re.M))
    names |= set(re.findall(r"^\s{4}([a-z_]+)(?:=[NRS]|\[=N\])?\s{2,}\S", text, re.M))
    return names


def test_help_lists_every_extended_option() -> None:
    ours = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "-h"], capture_output=True, text=True, timeout=30
    )
    assert ours.returncode == 0
    listed = _help_suboptions(ours.stdout)
    assert listed == set(EXTENDED)  # each accepted sub-option listed, nothing else
    assert all(len(line) <= 100 for line in ours.stdout.splitlines())


def test_help_lists_what_memcached_lists_but_its_external_storage() -> None:
    need_memcached()
    theirs = subprocess.run([MEMCACHED, "-h"], capture_output=True, text=True, timeout=30)
    documented = {n for n in _help_suboptions(theirs.stdout) if not n.startswith("ext_")}
    assert len(documented) > 20
    assert documented <= set(EXTENDED)


@pytest.mark.skipif(os.geteuid() != 0, reason="the rule is about starting as root")
def test_root_without_u_refuses_as_memcached_does() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEMCACHE_SERVER_USER"}
    ours = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert ours.returncode == 64
    assert ours.stderr == "can't run as root without the -u switch\n"
    theirs = subprocess.run(
        [need_memcached(), "-l", "127.0.0.1", "-p", str(free_port()), "-U", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)


# Sub-options apply in the order given, as memcached's getsubopt loop applies them: a later one
# wins over what an earlier one set or implied, except a slab_chunk_max given before no_modern.
ORDER_SETTINGS = ("lru_maintainer_thread", "lru_segmented", "lru_crawler", "slab_reassign",
                  "slab_automove", "maxconns_fast", "slab_chunk_max", "hash_algorithm")


@pytest.mark.parametrize(
    "subopts",
    [
        "lru_maintainer,no_modern",
        "no_modern,lru_maintainer",
        "slab_reassign,no_modern",
        "no_modern,slab_reassign,slab_automove=2",
        "slab_chunk_max=16384,no_modern",
        "no_modern,slab_chunk_max=16384",
        "no_lru_maintainer,modern,lru_maintainer,no_lru_maintainer",
    ],
)
def test_sub_options_apply_in_order_as_memcached(subopts: str) -> None:
    need_memcached()
    mc = start_memcached("-o", subopts)
    try:
        expected = stats(mc, "settings")
    finally:
        mc.stop()
    ours = start_node("-o", subopts, "-t", "1")
    try:
        got = stats(ours, "settings")
    finally:
        ours.stop()
    for name in ORDER_SETTINGS:
        assert got.get(name) == expected.get(name), (name, got.get(name), expected.get(name))

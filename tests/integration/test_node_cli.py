"""Start-up flags an operator relies on, on real processes: ``--cluster-token`` on the node
side (a join with the config node's token, refusals without it), ``-d -P`` (the pidfile is
written and removed on exit, as memcached does), ``-u`` (privileges are dropped: checked in
/proc), and the ``-v``/``-vv`` lines on stderr.

Every process is stopped by its PID; a daemon, which is not our child, by the PID its pidfile
names.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import config_get, ports_in, start_config_node, stats_of
from procs import MEMCACHED, ROOT, ServerProc, free_port, start_node, wait_listening
from reference import need_memcached
from wire import talk, wait_for

TOKEN = "s3cret-token"


def stop_for_stderr(srv: ServerProc) -> str:
    """SIGTERM by PID, then everything the process wrote to stderr."""
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.stderr is not None
    err = srv.proc.stderr.read().decode(errors="replace")
    srv.stop()
    return err


@pytest.fixture
def config_node(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_config_node(tmp_path / "state", "--cluster-token", TOKEN)
    yield srv
    srv.stop()


def member(config: ServerProc, *args: str, env: dict[str, str] | None = None) -> ServerProc:
    join = ("--join", f"127.0.0.1:{config.port}", "--heartbeat-interval", "0.2")
    return start_node(*join, "--drain-seconds", "0", *args, env=env)


def test_node_joins_with_the_token_and_is_refused_without_it(config_node: ServerProc) -> None:
    good = member(config_node, "--cluster-token", TOKEN)
    from_env = member(config_node, env={"MEMCACHE_CLUSTER_TOKEN": TOKEN})
    wrong = member(config_node, "--cluster-token", "not-the-token")
    missing = member(config_node)
    try:
        both = {good.port, from_env.port}
        wait_for(lambda: ports_in(config_get(config_node.port)) == both)
        assert int(stats_of(good.port)["cluster_joins"]) == 1
        # the refused keep trying (a heartbeat each), and are never listed
        for refused in (wrong, missing):
            assert wait_for(
                lambda r=refused: int(stats_of(r.port)["cluster_heartbeat_failures"]) >= 3
            )  # type: ignore[misc]
            assert stats_of(refused.port)["cluster_joins"] == "0"
        assert ports_in(config_get(config_node.port)) == both
    finally:
        errors = {
            name: stop_for_stderr(srv) for name, srv in (("wrong", wrong), ("missing", missing))
        }
        good.stop()
        from_env.stop()
    # each says why once (not once per heartbeat), naming the config node
    endpoint = f"cluster: config node 127.0.0.1:{config_node.port}:"
    for name, reason in (("wrong", "bad cluster token"), ("missing", "cluster token required")):
        lines = [line for line in errors[name].splitlines() if line.startswith(endpoint)]
        assert len(lines) == 1 and reason in lines[0], errors[name]


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _daemon_cmd(kind: str, port: int, pidfile: Path) -> list[str]:
    common = ["-d", "-P", str(pidfile), "-l", "127.0.0.1", "-p", str(port)]
    if kind == "memcached":
        return [MEMCACHED, "-U", "0", "-u", "root", *common]
    return [sys.executable, str(ROOT / "cli.py"), *common]


@pytest.mark.parametrize("kind", ["node", "memcached"])
def test_daemon_writes_its_pidfile_and_removes_it_on_exit(kind: str, tmp_path: Path) -> None:
    if kind == "memcached":
        need_memcached()
    pidfile, port = tmp_path / "server.pid", free_port()
    launcher = subprocess.run(_daemon_cmd(kind, port, pidfile), cwd=ROOT, timeout=30)
    assert launcher.returncode == 0  # the foreground process returns once the daemon runs
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"))
    pid = int(pidfile.read_text())
    try:
        wait_listening("127.0.0.1", port)
        assert os.getsid(pid) != os.getsid(0)  # in a session of its own, detached from ours
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"-d\0-P\0" + str(pidfile).encode() in f.read()
    finally:
        os.kill(pid, signal.SIGTERM)
        stopped = wait_for(lambda: _pid_gone(pid), timeout=15)
        if not stopped:
            os.kill(pid, signal.SIGKILL)
    assert stopped
    assert not pidfile.exists()


def _ids(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs) uids and gids of a process, from /proc."""
    fields: dict[str, list[int]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Uid", "Gid"):
                fields[name] = [int(x) for x in rest.split()]
    return fields["Uid"], fields["Gid"]


@pytest.mark.skipif(os.geteuid() != 0, reason="-u only changes the user of a root process")
def test_user_flag_drops_root_privileges() -> None:
    nobody = pwd.getpwnam("nobody")
    srv = start_node("-u", "nobody")
    try:
        uids, gids = _ids(srv.proc.pid)
        assert uids == [nobody.pw_uid] * 4 and gids == [nobody.pw_gid] * 4
        assert talk(srv, [b"set k 0 0 1\r\nx\r\nget k\r\n"]) == [
            b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"
        ]
    finally:
        srv.stop()


def test_unknown_user_refuses_to_start() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "-p", "0", "-u", "no-such-user-here"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if os.geteuid() != 0:
        pytest.skip("-u is ignored unless the process runs as root")
    assert proc.returncode != 0 and "can't find the user no-such-user-here" in proc.stderr


FD = re.compile(r"^([<>]?)(\d+)([: ])")
REQUESTS = b"set k 0 0 1\r\nx\r\nget k\r\nmg k v\r\n"
# what -vv logs for REQUESTS on the input side: the connection, each command, the close
COMMAND_LINES = [
    "<N new auto-negotiating client connection",
    "<N set k 0 0 1",
    "<N get k",
    "<N mg k v",
    "<N connection closed.",
]
# One connection's byte script for the exact comparison, a chunk per round trip: hits and misses
# of the get family, noreply on storage and other commands (and `delete noreply`, which deletes
# the key "noreply"), meta commands (logged: MN, me's EN, errors), stats (not logged, except
# `stats reset` and errors), odd lines (empty, leading spaces, a bad data chunk), then quit.
VV_SCRIPT = [
    REQUESTS,
    b"get nope\r\ngets k nope k\r\nset n 0 0 1 noreply\r\ny\r\ndelete n noreply\r\n"
    b"delete noreply\r\nincr c 1 noreply\r\nincr c 1\r\n",
    b"mg nope v\r\nms z 1 T0\r\nz\r\nmd z q\r\nme nope\r\nma k N0 J\r\nmn\r\n",
    b"stats\r\n",
    b"stats detail dump\r\nstats reset\r\nstats bogus\r\nversion\r\nbogus\r\n\r\n  get   k\r\n"
    b"verbosity 2\r\nflush_all noreply\r\ntouch k 10\r\nset k 0 0 1\r\nxyz\r\nquit\r\n",
]
STATS_CHUNK = 3  # its reply (pids, times) differs between any two servers


def _conversation(err: str) -> list[str]:
    """The -vv lines (``<fd``, ``>fd``, ``fd:``) of the connection that sent REQUESTS, from its
    opening line to its close, with its fd written N (an fd is reused by later connections)."""
    lines = err.splitlines()
    first = " set k 0 0 1"
    at = next(i for i, line in enumerate(lines) if line.startswith("<") and line.endswith(first))
    fd = FD.match(lines[at]).group(2)  # type: ignore[union-attr]
    opened = f"<{fd} new auto-negotiating client connection"
    start = max(i for i in range(at) if lines[i] == opened)
    out: list[str] = []
    for line in lines[start:]:
        m = FD.match(line)
        if m and m.group(2) == fd:
            out.append(f"{m.group(1)}N{m.group(3)}{line[m.end() :]}")
            if out[-1] == COMMAND_LINES[-1]:
                break
    return out


def _very_verbose(kind: str, chunks: list[bytes]) -> tuple[list[bytes], list[str]]:
    """Run ``chunks`` on one connection to a fresh -vv server: its replies and its -vv lines."""
    if kind == "memcached":
        need_memcached()
        srv = ServerProc(*_start_memcached_vv())
    else:
        srv = start_node("-vv")
    try:
        replies = talk(srv, chunks)
        wait_for(lambda: int(stats_of(srv.port)["curr_connections"]) <= 2)  # the close is seen
    finally:
        err = stop_for_stderr(srv)
    return replies, _conversation(err)


def _start_memcached_vv() -> tuple[subprocess.Popen[bytes], str, int]:
    port = free_port()
    cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root", "-vv"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_listening("127.0.0.1", port)
    return proc, "127.0.0.1", port


def test_verbose_says_where_it_listens() -> None:
    srv = start_node("-v")
    assert talk(srv, [b"version\r\n"]) == [b"VERSION 1.6.18\r\n"]
    err = stop_for_stderr(srv)
    assert err.splitlines()[0].endswith(f"listening on 127.0.0.1:{srv.port}")
    # -v logs no client traffic
    assert not any(FD.match(line) for line in err.splitlines())


@pytest.mark.parametrize("kind", ["node", "memcached"])
def test_very_verbose_logs_each_connection_and_command(kind: str) -> None:
    """-vv logs the connection, every command line, and the close, in order (memcached too:
    a check on the expectation itself)."""
    replies, conversation = _very_verbose(kind, [REQUESTS])
    assert replies == [b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\nVA 1\r\nx\r\n"]
    assert [line for line in conversation if line in COMMAND_LINES] == COMMAND_LINES, conversation


def test_very_verbose_logs_exactly_what_memcached_logs() -> None:
    """The same bytes to memcached -vv and to our node -vv: the same replies and, fd numbers
    aside, the same stderr lines for the connection, in the same order."""
    ours_replies, ours = _very_verbose("node", VV_SCRIPT)
    theirs_replies, theirs = _very_verbose("memcached", VV_SCRIPT)
    del ours_replies[STATS_CHUNK], theirs_replies[STATS_CHUNK]
    assert ours_replies == theirs_replies
    assert ours == theirs
    # the script reaches what it is meant to: a data block is never logged, noreply is
    assert "<N x" not in ours and ">N NOREPLY STORED" in ours and ">N sending key k" in ours

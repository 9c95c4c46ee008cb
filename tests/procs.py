"""Start and stop real server processes for tests: our node and real memcached.

Every process is stopped by its PID (never by name). Our node is started with ``-p 0`` and prints
the port it bound as the first line of its stdout; memcached is given a free port chosen here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from reference import memcached_path
from replies import reply_complete

ROOT = Path(__file__).resolve().parent.parent
# memcached on PATH (see reference.py: which release it is, and what a missing one means)
MEMCACHED = memcached_path() or "memcached"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProc:
    """A running server process and the address it answers on."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection(self.address, timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop by PID; escalate to SIGKILL if it does not exit in time. Returns once the
        processes it had started are gone too: a node's worker processes outlive a SIGKILLed
        supervisor by a few milliseconds (the kernel kills them when their parent dies), and
        until then they hold its listening socket, so the port still accepts connections and
        resets them."""
        family = _descendants(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        deadline = time.monotonic() + timeout
        while any(_running(*p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.005)
        return int(self.proc.returncode)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid``, as (pid, start time): the start time tells a later process
    that reuses the number from it."""
    parents: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                parents[int(name)] = (int(fields[1]), fields[19])
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in parents.items():
            if ppid == parent:
                found.append((child, started))
                todo.append(child)
    return found


def _running(pid: int, started: str) -> bool:
    """Whether process ``pid`` that started at ``started`` still runs (a zombie does not)."""
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once a connection to ``host:port`` succeeds, and once the server has closed it.

    Why wait for the server's close: a server that lists its connections (``stats conns``)
    or counts them still held the probe until it read the probe's end, so a test asking
    right away could see it there. Our half-close, then reading to the server's end of the
    stream, makes the server's close of the probe part of the wait (a server that does not
    answer the half-close within 2 s is left to it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = socket.create_connection((host, port), timeout=0.5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        with probe:
            probe.settimeout(2.0)
            try:
                probe.shutdown(socket.SHUT_WR)
                while probe.recv(4096):
                    pass
            except OSError:
                pass
        return


# Under the GIL a node runs one event loop whatever -t says (see app.py); this environment makes
# it run one per -t thread, so the tests can drive the hand-offs between loops.
MULTI_LOOP_ENV = {"MEMCACHE_SERVER_GIL_LOOPS": "4"}
# parameter id -> environment, for tests that run once per event-loop model
NODE_LOOPS: dict[str, dict[str, str] | None] = {"1-loop": None, "4-loops": MULTI_LOOP_ENV}


def start_node(
    *args: str,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    env: dict[str, str] | None = None,
) -> ServerProc:
    """Start our node with memcached-style ``args`` on a free port and wait until it serves;
    ``env`` is added to this process's environment (``MULTI_LOOP_ENV``, say)."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "-l", host, "-p", "0", *args]
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=full_env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.wait(timeout)
        raise RuntimeError(f"node did not start: {err}")
    port = int(line.split()[-1])
    wait_listening(host, port, timeout)
    return ServerProc(proc, host, port)


def start_memcached(*args: str, host: str = "127.0.0.1", timeout: float = 10.0) -> ServerProc:
    """Start real memcached with ``args`` on a free port and wait until it serves."""
    port = free_port()
    cmd = [MEMCACHED, "-l", host, "-p", str(port), "-U", "0", *args]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_listening(host, port, timeout)
    return ServerProc(proc, host, port)


def exchange(
    sock: socket.socket, request: bytes, settle: float = 0.05, first_wait: float = 5.0
) -> bytes:
    """Send ``request``; read until the reply reaches its end (``replies.reply_complete``) and
    the peer is then quiet for ``settle`` seconds, or it closes. The first byte, and the rest of
    a reply cut short, get ``first_wait``: a stalled server is waited for, not cut off."""
    sock.sendall(request)
    buf = b""
    deadline = time.monotonic() + first_wait + 5.0
    while time.monotonic() < deadline:
        wait = settle if reply_complete(buf) else first_wait
        sock.settimeout(max(0.001, min(wait, deadline - time.monotonic())))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        buf += data
    return buf

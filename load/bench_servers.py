"""Start, inspect and stop the servers under test for ``load.bench``.

Every server is stopped by its PID.  CPU comes from ``/proc/<pid>/stat``, summed over the whole
process tree: our node at ``-t N`` is a supervisor whose child (the spawner) forks the workers,
so the workers that serve are grandchildren of the PID we started.  Memory of a tree is in
``bench_procmem``; item counts come from the server's own ``stats`` command.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OURS_CMD = "{python} cli.py -l 127.0.0.1 -p 0 -t {threads} -m {memory}"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0]


def start_ours(cmd_template: str, threads: int, memory: int) -> Server:
    """Start our node from the repository root.

    Placeholders: ``{python}``, ``{threads}``, ``{memory}`` and optionally ``{port}``; with
    ``{port}`` a free port is chosen here, otherwise the node must print its bound port as the
    last token of its first stdout line.
    """
    port = free_port() if "{port}" in cmd_template else 0
    text = cmd_template.format(python=sys.executable, threads=threads, memory=memory, port=port)
    argv = shlex.split(text)
    if argv[:2] == [sys.executable, "cli.py"] and not (ROOT / "cli.py").exists():
        raise FileNotFoundError("cli.py not found at the repository root; pass --ours-cmd")
    if os.geteuid() == 0 and "-u" not in argv:  # both refuse a root start without -u
        argv += ["-u", "root"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        if not port:
            line = _first_line(proc, 30.0)
            if not line.split():
                raise RuntimeError(f"our node printed no port line (cmd: {text})")
            port = int(line.split()[-1])
        wait_listening(port)
    except Exception:
        _kill(proc)
        raise
    return Server("ours", proc, port)


def start_memcached(threads: int, memory: int) -> Server:
    exe = shutil.which("memcached") or "/usr/bin/memcached"
    port = free_port()
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", str(threads)]
    argv += ["-m", str(memory)]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        wait_listening(port)
    except Exception:
        _kill(proc)
        raise
    return Server("memcached", proc, port)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def stop(server: Server) -> None:
    """Stop by PID, escalating to SIGKILL after 10 s."""
    _kill(server.proc)


def process_tree(pid: int) -> list[tuple[int, int]]:
    """``(pid, depth)`` for ``pid`` (depth 0) and every live descendant, parents first.

    Our node at ``-t N`` is supervisor (0) -> spawner (1) -> workers (2); memcached is one
    process.  Read from every ``/proc/<pid>/stat``'s ppid field, so it sees all generations.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[tuple[int, int]] = []
    todo = [(pid, 0)]
    while todo:
        p, depth = todo.pop(0)
        out.append((p, depth))
        todo.extend((c, depth + 1) for c in sorted(children.get(p, [])))
    return out


def _descendants(pid: int) -> list[int]:
    return [p for p, _ in process_tree(pid)]


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the process tree rooted at ``pid``.

    Each live process adds its own utime + stime and the cutime + cstime of the children it
    has reaped, so a worker that dies and is reaped by the spawner mid-run still counts (its
    time moves from its own line to its reaper's; a difference over a run stays right).
    """
    total = 0
    for p in _descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat(5); fields[0] is field 3
        total += sum(int(f) for f in fields[11:15])
    return total / CLK_TCK


def server_stats(port: int, timeout: float = 5.0) -> dict[str, str]:
    """The ``stats`` command's ``STAT name value`` lines as a dict."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    out = {}
    for line in buf.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out

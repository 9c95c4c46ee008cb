"""The supervisor: ``-t N`` as N worker processes over one node, where a GIL allows one core.

Why processes: under CPython's GIL one process runs one event loop at a time, so extra loops add
hand-offs, not throughput. N processes over one shared segment (``storage/segment.py``) and one
store lock (``storage/proclock.py``) serve one cache on N cores.

Shape (gunicorn's arbiter, rewritten for a node whose memory is built before any fork):

- The supervisor (the process the command line started) builds the node: the segment, the
  listening sockets, TLS and the auth table. It shares the store's lock, then, before it starts
  any thread, forks a *spawner*, and only then starts its own threads: the clock ticker, the
  metrics endpoint, the LRU crawler, the slab mover, and what the command line adds (cluster
  membership). It serves no connection.
- The spawner stays single-threaded all its life, so forking from it is safe: no lock that
  another thread could hold at the moment of a fork exists in it (the supervisor's threads
  would make a fork there hazardous). It forks worker k on request, reaps its workers, gives
  the store lock back when a worker died holding it (after the repair pass,
  ``storage/repair.py``), reports every start and death to the supervisor, and passes the
  supervisor's signals on.
- Worker k serves as the node's worker k (``Node.become_worker``): one event loop, and an
  acceptor thread on the inherited listening sockets (the kernel hands each connection to
  one of the processes waiting in accept). SIGTERM/SIGINT/SIGUSR1 stop it gracefully (stop
  accepting, answer what was read, close); a second one stops it at once; SIGHUP reloads the
  auth file. Its ``shutdown`` command writes one byte to the supervisor's pipe.
- The supervisor restarts a worker that dies, after a delay that doubles while workers die
  within ``QUICK_DEATH`` of starting (up to ``BACKOFF_MAX``), logging each death; it forwards
  SIGHUP; and on SIGTERM/SIGINT/SIGUSR1 or a worker's ``shutdown`` it stops every worker
  (waiting at most ``STOP_TIMEOUT``, or not at all after a second signal), then its threads.
- No worker outlives the supervisor: the spawner and each worker ask the kernel for SIGKILL
  when their parent dies (``PR_SET_PDEATHSIG``), and the spawner kills its workers as soon as
  the supervisor's command pipe closes. Nothing is left in /dev/shm: the segment file and the
  lock's semaphore are unlinked the moment they are created.

Test hook, off by default: with MEMCACHE_SERVER_TEST_HOLD_LOCK=1 in its environment, a worker
that receives SIGUSR2 takes the store lock, skews a store counter (as a half-done change
would) and keeps the lock until it is killed, so tests can kill a worker holding the lock.

Messages are lines on pipes: ``spawn K`` / ``signal N`` / ``stop`` / ``hurry`` to the spawner;
``up K PID`` / ``down K PID STATUS RESCUE`` back.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING

from memcache_server.server.listener import Acceptor
from memcache_server.storage.proclock import ProcessLock, Rescue
from memcache_server.storage.repair import repair

if TYPE_CHECKING:
    from memcache_server.app import Node

__all__ = ["Supervisor", "processes_for"]

PR_SET_PDEATHSIG = 1
QUICK_DEATH = 5.0  # seconds: a worker dying sooner after its start counts as dying in a loop
BACKOFF_MIN = 0.1  # seconds before a worker is restarted
BACKOFF_MAX = 10.0
STOP_TIMEOUT = 10.0  # seconds workers get to drain before they are killed
POLL = 0.1  # seconds between looks at the pipes and children
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
HOLD_LOCK_ENV = "MEMCACHE_SERVER_TEST_HOLD_LOCK"  # the test hook (see the module docstring)


def processes_for(threads: int) -> int:
    """How many worker processes ``-t threads`` means here: 0 (serve in this process, with
    ``threads`` loops) without a GIL, for ``-t 1``, or while MEMCACHE_SERVER_GIL_LOOPS asks for
    in-process loops (kept for measuring them); else ``threads``."""
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if not gil or threads <= 1 or os.environ.get("MEMCACHE_SERVER_GIL_LOOPS"):
        return 0
    return threads


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (and leave if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _hold_lock(node: Node) -> None:
    """The test hook: take the store lock, leave a counter wrong, and never give it back."""
    node.store.lock.acquire()
    node.store.curr_items += 1000
    while True:
        time.sleep(3600)


def _log(text: str) -> None:
    try:
        os.write(2, f"supervisor: {text}\n".encode())
    except OSError:
        pass


class Supervisor:
    """Runs ``node`` as ``processes`` worker processes; see the module docstring."""

    def __init__(self, node: Node, processes: int) -> None:
        self.node = node
        self.processes = processes
        self.pid = os.getpid()
        self.spawner = -1
        self.workers: dict[int, int] = {}  # slot -> pid, as last reported
        self.started: dict[int, float] = {}  # slot -> when its current process started
        self.backoff: dict[int, float] = {}  # slot -> delay before its next restart
        self.restart_at: dict[int, float] = {}  # slot -> when to restart it
        self.deaths = 0
        self._reload = False
        self._events = b""

    # ------------------------------------------------------------------ supervisor

    def start(self) -> None:
        """Fork the spawner (before any thread exists here), ask it for every worker, then
        start the background threads."""
        node = self.node
        if not node.listeners:
            node.bind()
        node.store.share()
        self.cmd_r, self.cmd_w = os.pipe()
        self.event_r, self.event_w = os.pipe()
        self.stop_r, self.stop_w = os.pipe()  # a worker's `shutdown`: b"g" or b"s"
        for fd in (self.event_r, self.stop_r):
            os.set_blocking(fd, False)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._spawner()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.spawner = pid
        for fd in (self.cmd_r, self.event_w, self.stop_w):
            os.close(fd)
        for k in range(self.processes):
            self._send(f"spawn {k}")
        node.bind_supervisor()  # the background threads' events go to their own log ring
        node.start_background()

    def request_reload(self) -> None:
        """SIGHUP: reload here and in every worker (a signal handler: only flags)."""
        self.node.request_reload()
        self._reload = True

    def wait(self) -> None:
        """Serve until a stop is requested: restart dead workers, pass SIGHUP on."""
        node = self.node
        while not node.stop_requested:
            ready, _, _ = select.select([self.event_r, self.stop_r], [], [], POLL)
            if self.stop_r in ready:
                self._worker_shutdown()
            if self.event_r in ready:
                self._read_events()
            if self._reload:
                self._reload = False
                self._send(f"signal {int(signal.SIGHUP)}")
            now = time.monotonic()
            for slot, when in list(self.restart_at.items()):
                if when <= now:
                    del self.restart_at[slot]
                    self._send(f"spawn {slot}")
            if self._spawner_gone():
                _log("the worker spawner died; stopping")
                node.request_shutdown(graceful=False)

    def shutdown(self) -> None:
        """Stop every worker (gracefully unless hurried), then the supervisor's own threads."""
        node = self.node
        self._send("stop")
        for lst in node.listeners:
            lst.close()  # the workers hold the port until each has stopped accepting
        deadline = time.monotonic() + STOP_TIMEOUT + 5
        hurried = False
        while not self._spawner_gone():
            if node.hurry_requested() and not hurried:
                hurried = True
                self._send("hurry")
            if time.monotonic() > deadline:
                os.kill(self.spawner, signal.SIGKILL)  # its workers die with it
                os.waitpid(self.spawner, 0)
                break
            time.sleep(0.02)
        self._read_events()
        node.shutdown()
        for fd in (self.cmd_w, self.event_r, self.stop_r):
            os.close(fd)

    def _send(self, line: str) -> None:
        try:
            os.write(self.cmd_w, line.encode() + b"\n")
        except OSError:
            pass  # the spawner is gone; wait() notices

    def _spawner_gone(self) -> bool:
        if self.spawner < 0:
            return True
        try:
            pid, _ = os.waitpid(self.spawner, os.WNOHANG)
        except ChildProcessError:
            pid = self.spawner
        if pid:
            self.spawner = -1
            return True
        return False

    def _worker_shutdown(self) -> None:
        try:
            data = os.read(self.stop_r, 64)
        except BlockingIOError:
            return
        if data:
            self.node.request_shutdown(graceful=b"s" not in data)

    def _read_events(self) -> None:
        while True:
            try:
                data = os.read(self.event_r, 4096)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._events += data
        *lines, self._events = self._events.split(b"\n")
        for line in lines:
            self._event(line.decode().split())

    def _event(self, words: list[str]) -> None:
        now = time.monotonic()
        if words[0] == "up":
            slot, pid = int(words[1]), int(words[2])
            self.workers[slot] = pid
            self.started[slot] = now
            return
        slot, pid, status, rescue = int(words[1]), int(words[2]), int(words[3]), words[4]
        self.workers.pop(slot, None)
        self.deaths += 1
        if self.node.stop_requested:
            return
        quick = now - self.started.get(slot, 0.0) < QUICK_DEATH
        delay = min(self.backoff.get(slot, BACKOFF_MIN / 2) * 2, BACKOFF_MAX) if quick \
            else BACKOFF_MIN
        self.backoff[slot] = delay
        self.restart_at[slot] = now + delay
        how = f"signal {-status}" if status < 0 else f"status {status}"
        lock = {Rescue.REPAIRED: "; it held the store lock: store repaired, lock released",
                Rescue.ORPHANED: "; it held the store lock: lock released"}.get(rescue, "")
        _log(f"worker {slot} (pid {pid}) exited with {how}{lock}; restarting in {delay:.1f}s")

    # ------------------------------------------------------------------ spawner

    def _spawner(self) -> int:
        """The spawner's life: fork workers on request, reap them, rescue the lock, report."""
        _die_with_parent(self.pid)
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the supervisor decides
        os.close(self.cmd_w)
        os.close(self.event_r)
        os.close(self.stop_r)
        store = self.node.store
        lock = store.lock
        children: dict[int, int] = {}  # pid -> slot
        pending = b""
        stop_by = 0.0
        while True:
            ready, _, _ = select.select([self.cmd_r], [], [], POLL)
            if ready:
                data = os.read(self.cmd_r, 4096)
                if not data:  # the supervisor is gone: so are its workers
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                    return 1
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    cmd, _, arg = line.decode().partition(" ")
                    if cmd == "spawn" and not stop_by:
                        slot = int(arg)
                        pid = self._fork_worker(slot)
                        children[pid] = slot
                        self._report(f"up {slot} {pid}")
                    elif cmd == "signal":
                        for pid in children:
                            os.kill(pid, int(arg))
                    elif cmd == "stop":
                        stop_by = time.monotonic() + STOP_TIMEOUT
                        self.node.settings.stopping = 1  # before the signals (see _worker)
                        for pid in children:
                            os.kill(pid, signal.SIGTERM)
                    elif cmd == "hurry":
                        stop_by = time.monotonic()
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                slot = children.pop(pid, -1)
                rescue = Rescue.FREE
                if isinstance(lock, ProcessLock) and not stop_by:
                    rescue = lock.rescue(pid, lambda: repair(store))
                code = os.waitstatus_to_exitcode(status)
                if slot >= 0:
                    self.node.reclaim_worker(slot)  # its connections and watchers are gone
                self._report(f"down {slot} {pid} {code} {rescue}")
            if stop_by:
                if not children:
                    return 0
                if time.monotonic() >= stop_by:
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)

    def _report(self, line: str) -> None:
        try:
            os.write(self.event_w, line.encode() + b"\n")
        except OSError:
            pass

    def _fork_worker(self, slot: int) -> int:
        spawner = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            code = self._worker(slot, spawner)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    # ------------------------------------------------------------------ worker

    def _worker(self, slot: int, spawner: int) -> int:
        """Worker ``slot``'s life: its event loop and acceptor until a stop signal."""
        _die_with_parent(spawner)
        os.close(self.cmd_r)
        os.close(self.event_w)
        node = self.node
        stops = [0]
        reload = [False]

        def on_stop(signum: int, frame: object) -> None:
            stops[0] += 1

        def on_hup(signum: int, frame: object) -> None:
            reload[0] = True

        for sig in STOP_SIGNALS:
            signal.signal(sig, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        # A stop signal sent before the handlers above existed was ignored (the spawner's
        # disposition, inherited): the spawner sets this word before it signals.
        if node.settings.stopping:
            stops[0] += 1
        if os.environ.get(HOLD_LOCK_ENV) == "1":
            signal.signal(signal.SIGUSR2, lambda signum, frame: _hold_lock(node))
        stop_w = self.stop_w

        def ask_shutdown(graceful: bool) -> None:
            try:
                os.write(stop_w, b"g" if graceful else b"s")
            except OSError:
                pass

        node.become_worker(slot)
        node.on_shutdown_request = ask_shutdown
        node.start_serving()
        worker = node.workers[0]
        acceptor = node.acceptor
        assert isinstance(acceptor, Acceptor)
        while not stops[0]:
            time.sleep(POLL)
            if not worker.is_alive():
                return 1  # its loop crashed (logged): the supervisor starts another
            if reload[0]:
                reload[0] = False
                node.reload_auth()
        acceptor.stop()
        acceptor.join(5)
        worker.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        while worker.is_alive() and stops[0] < 2 and time.monotonic() < deadline:
            worker.join(0.05)
        return 0

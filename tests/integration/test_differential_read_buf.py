"""Differential ``-o read_buf_mem_limit``: a get naming more keys than memcached's response
buffers hold gets memcached's answer and counters (see ``commands/respbudget.py``).

Both servers get the same settings and the same requests: gets, gets, gat and gats just inside
and just past the budget (it depends on the worker threads and on whether the request line fits
a 16 KB read buffer), a too-long key before the point where the budget runs out and one after
it, and a get pipelined ahead of a refused one. Every reply is compared byte for byte, and so are
the counters a refused get moves (cmd_get, get_hits, get_misses, cmd_touch, touch_hits,
touch_misses, response_obj_oom, read_buf_oom). Live only: ``need_memcached`` says why it skips.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest
from differential_corpus import setcmd, start_reference
from procs import ServerProc, start_node
from reference import need_memcached
from test_ops import stats

from memcache_server.commands.respbudget import BUFFER, RESP_PER_BUFFER, get_keys_budget

COUNTERS = ("cmd_get", "get_hits", "get_misses", "cmd_touch", "touch_hits", "touch_misses",
            "response_obj_oom", "read_buf_oom", "curr_items")
MB = 1024 * 1024


ENDS = (b"END\r\n", b"response\r\n", b"format\r\n", b"STORED\r\n")


def _ask(sock: socket.socket, data: bytes, ends: tuple[bytes, ...] = ENDS) -> bytes:
    """Send, then read to the end of the last reply (END, or the one-line SERVER_ERROR /
    CLIENT_ERROR that replaces a refused get's reply)."""
    sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + 30
    while not buf.endswith(ends):
        assert time.monotonic() < deadline, buf[-200:]
        chunk = sock.recv(1 << 20)
        assert chunk, buf[-200:]
        buf += chunk
    return buf


def _get(cmd: bytes, keys: list[bytes]) -> bytes:
    return cmd + b" " + b" ".join(keys) + b"\r\n"


def script(sock: socket.socket, allowed: int) -> list[tuple[str, object]]:
    """The same requests to either server: around the budget of ``allowed`` keys."""
    seen: list[tuple[str, object]] = []

    def step(tag: str, data: bytes, ends: tuple[bytes, ...] = ENDS) -> None:
        seen.append((tag, _ask(sock, data, ends)))
        got = stats(sock)
        seen.append((tag + " counters", {k: got[k] for k in COUNTERS}))

    for i in range(20):
        seen.append(("set", _ask(sock, setcmd(b"k%d" % i, b"v%d" % i, flags=i))))
    keys = [b"k%d" % (i % 25) for i in range(allowed + 1)]  # hits and misses
    for cmd, head in ((b"get", b"get"), (b"gets", b"gets"), (b"gat", b"gat 100"),
                      (b"gats", b"gats 100")):
        step(f"{cmd.decode()} of {allowed} keys", _get(head, keys[:allowed]))
        step(f"{cmd.decode()} of {allowed + 1} keys", _get(head, keys))
    # a long line has its own buffer, so one buffer more of replies fits
    long_keys = [b"%s%d" % (b"x" * 90, i) for i in range(allowed + RESP_PER_BUFFER + 1)]
    assert len(_get(b"get", long_keys)) > BUFFER
    step("long line, within", _get(b"get", long_keys[:-1]))
    step("long line, past", _get(b"get", long_keys))
    bad = b"b" * 251
    step("too long a key where the budget holds", _get(b"get", [*keys[:5], bad, *keys]))
    step("too long a key past the budget", _get(b"get", [*keys, bad]))
    # memcached has sent a get's reply before it reads the next command: it stays
    step("a get, then a refused one", b"get k1\r\n" + _get(b"get", keys), (b"response\r\n",))
    step("a plain get after it", b"get k1 k2\r\n")
    return seen


def _replay(start: Callable[..., ServerProc], args: tuple[str, ...], allowed: int) -> list[
        tuple[str, object]]:
    srv = start(*args)
    try:
        with srv.connect(timeout=30) as sock:
            return script(sock, allowed)
    finally:
        srv.stop(signal.SIGKILL if start is start_reference else signal.SIGTERM)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_get_past_the_response_buffers_answers_as_memcached(threads: int) -> None:
    need_memcached()
    args = ("-t", str(threads), "-o", "read_buf_mem_limit=1")
    allowed = (get_keys_budget(MB, threads) - 1) * RESP_PER_BUFFER
    assert allowed == {1: 819, 4: 195}[threads]  # what memcached 1.6.18 was measured to take
    ref = _replay(start_reference, args, allowed)
    ours = _replay(start_node, args, allowed)
    problems = [f"{tag}:\n  memcached {want!r:.300}\n  ours      {got!r:.300}"
                for (tag, want), (_, got) in zip(ref, ours, strict=True) if want != got]
    assert not problems, "\n".join(problems)
    final = ref[-1][1]
    assert isinstance(final, dict) and final["response_obj_oom"] == "7"  # the script's refusals

"""How many keys one get may name under ``-o read_buf_mem_limit``: memcached's response budget.

memcached 1.6 builds a get's reply from response objects, one per key, carved 13 to a 16 KB
buffer from a per-thread cache that also holds each connection's read buffer. With
read_buf_mem_limit set, each worker thread may hold ``limit / threads`` bytes of those buffers
(at least one buffer). A get that names more keys than the buffers left hold looks up the keys
that fit, then drops every reply queued on the connection, answers ``SERVER_ERROR out of memory
writing get response`` and counts ``response_obj_oom`` (proto_text.c, process_get_command).
The connection's read buffer takes one buffer unless the request line was longer than a
buffer: memcached then moves the line to a buffer of its own (rbuf_switch_to_malloc).

Why only this case: memcached's answer to it depends on nothing but the request and the
settings, so a client sees the same bytes from both servers. The rest of memcached's budget
(read buffers and replies of other connections of the same thread, held while they wait) is a
count of 16 KB buffers the node does not have; there the node keeps its own model, a node-wide
budget on the bytes its connections hold (``server/worker.py``), and counts ``read_buf_oom`` /
``response_obj_oom`` when it closes a connection for growing past it, as memcached closes one
that cannot get a buffer. Also not modelled: with under two buffers a thread (32 or more
threads per MB) memcached closes a connection at its first command.
"""

from __future__ import annotations

__all__ = ["BUFFER", "RESP_PER_BUFFER", "get_keys_budget", "keys_allowed"]

BUFFER = 16384  # memcached's READ_BUFFER_SIZE: read buffers and response bundles alike
RESP_PER_BUFFER = 13  # MAX_RESP_PER_BUNDLE of 64-bit memcached 1.6.18


def get_keys_budget(limit: int, threads: int) -> int:
    """Buffers one worker thread may hold (0: no limit), as memcached's thread setup sets it."""
    if not limit:
        return 0
    share = limit // max(threads, 1)
    return 1 if share < BUFFER else share // BUFFER


def keys_allowed(buffers: int, tokens: list[bytes]) -> int:
    """Keys a get line of ``tokens`` may name with ``buffers`` per thread (-1: any number)."""
    if not buffers:
        return -1
    line = sum(map(len, tokens)) + len(tokens) + 1  # single spaces and CRLF, as clients send
    held = 1 if line <= BUFFER else 0
    return max(buffers - held, 0) * RESP_PER_BUFFER

"""Set every key once before measuring, so that a get-heavy run measures hits, not misses.

Runs in each worker for its share of the key space (key index modulo the number of processes),
pipelined in batches over one blocking connection per server; not part of the measurement.
"""

from __future__ import annotations

import random
import socket
import time
from array import array
from collections import Counter

from memcache_server.load.keys import key_name
from memcache_server.load.protocol import ErrorReply, ProtocolError, encode_set, parse_set
from memcache_server.load.values import make_value
from memcache_server.load.workload import Workload

BATCH = 200


def prefill(
    servers: list[tuple[str, int]],
    parts: list[array[int]],
    wl: Workload,
    prefix: bytes,
    share: tuple[int, int],
    version: int,
    deadline: float,
) -> tuple[int, Counter[str]]:
    """Set this worker's keys; returns (keys stored, errors by kind). Stops at ``deadline``."""
    wid, procs = share
    stored = 0
    errors: Counter[str] = Counter()
    rng = random.Random(version)
    for addr, ids in zip(servers, parts, strict=True):
        mine = ids[wid::procs] if procs > 1 else ids
        with socket.create_connection(addr, timeout=10.0) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(mine), BATCH):
                if time.monotonic() > deadline:
                    errors["prefill_timeout"] += 1
                    return stored, errors
                batch = mine[start : start + BATCH]
                payload = b"".join(
                    encode_set(k, make_value(k, version, wl.value_size.pick(rng)), wl.ttl)
                    for k in (key_name(prefix, i) for i in batch)
                )
                sock.sendall(payload)
                ok, errs = _read_replies(sock, len(batch))
                stored += ok
                errors.update(errs)
    return stored, errors


def _read_replies(sock: socket.socket, count: int) -> tuple[int, Counter[str]]:
    buf = b""
    pos = 0
    ok = 0
    errors: Counter[str] = Counter()
    done = 0
    while done < count:
        try:
            r = parse_set(buf, pos)
        except ErrorReply as e:
            errors["prefill_" + e.kind] += 1
            pos = e.next_pos
            done += 1
            continue
        except ProtocolError:
            errors["prefill_malformed"] += 1
            raise
        if r is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection during prefill")
            buf = buf[pos:] + chunk
            pos = 0
            continue
        pos = r
        ok += 1
        done += 1
    return ok, errors

"""``slabs reassign <src> <dst>`` and ``slabs automove <0|1|2>|ratio <r>``, as memcached 1.6.18.

Parsing and replies are memcached's, byte for byte (proto_text.c ``process_slabs_command``):
``reassign`` needs exactly two arguments and takes no ``noreply``; ``automove`` honours a
trailing ``noreply`` (which silences its errors too) and ignores extra tokens. The work itself
is the rebalancer's (``storage/rebalancer.py``, through the node-wide context); a reassign
is answered as soon as it is queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtod, strtol32, strtoul32
from memcache_server.storage.rebalancer import Reassign

if TYPE_CHECKING:
    from memcache_server.commands.session import Session

__all__ = ["cmd_slabs", "SLABS_HANDLERS"]

REASSIGN_REPLIES = {
    Reassign.OK: C.OK,
    Reassign.RUNNING: C.REASSIGN_BUSY,
    Reassign.BADCLASS: C.REASSIGN_BADCLASS,
    Reassign.NOSPARE: C.REASSIGN_NOSPARE,
    Reassign.SAME: C.REASSIGN_SAME,
}


def cmd_slabs(s: Session, tokens: list[bytes]) -> None:
    ntokens = len(tokens) + 1  # memcached counts a terminal token
    rebalancer = s.node_wide().rebalancer
    if ntokens == 5 and tokens[1] == b"reassign":
        if not rebalancer.enabled:
            s.out += C.REASSIGN_DISABLED
            return
        src = strtol32(tokens[2])
        dst = strtol32(tokens[3])
        if src is None or dst is None:
            s.out += C.BAD_FORMAT
            return
        s.out += REASSIGN_REPLIES[rebalancer.reassign(src, dst)]
    elif ntokens >= 4 and tokens[1] == b"automove":
        reply = _automove(s, tokens, ntokens)
        if tokens[-1] != b"noreply":
            s.out += reply
    else:
        s.out += C.ERROR


def _automove(s: Session, tokens: list[bytes], ntokens: int) -> bytes:
    rebalancer = s.node_wide().rebalancer
    if tokens[2] == b"ratio":
        ratio = strtod(tokens[3]) if ntokens >= 5 else None
        if ratio is None:
            return C.ERROR
        rebalancer.ratio = ratio
        return C.OK
    level = strtoul32(tokens[2])
    if level is None:
        return C.BAD_FORMAT
    if level > 2:
        return C.ERROR
    rebalancer.set_automove(level)
    return C.OK


SLABS_HANDLERS = {b"slabs": cmd_slabs}

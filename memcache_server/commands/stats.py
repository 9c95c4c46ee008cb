"""``stats`` and its sub-commands: ``settings items slabs sizes sizes_enable sizes_disable conns
reset cachedump detail``.

Field lists and their formats are built by ``report`` (shared with the metrics collector); this
module only picks the sub-command from a table and turns its snapshot into reply bytes. Runs on
the calling connection's worker thread; it reaches the node through the node-wide context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server import report
from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtoul32

if TYPE_CHECKING:
    from memcache_server.commands.context import AdminContext
    from memcache_server.commands.session import Session

__all__ = ["STATS_HANDLERS"]



def cmd_stats(s: Session, tokens: list[bytes]) -> None:
    node = s.node_wide()
    if len(tokens) == 1:
        s.out += report.format_stats(report.general_stats(node))
        return
    sub = _SUBCOMMANDS.get(tokens[1])
    s.out += C.ERROR if sub is None else sub(node, s, tokens[1:])


def _settings(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    return report.format_stats(report.settings_stats(node))


def _items(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    return report.format_stats(report.items_stats(node))


def _slabs(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    return report.format_stats(report.slabs_stats(node))


def _sizes(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    counts = node.store.size_counts()
    if counts is None:
        return C.SIZES_DISABLED + C.END
    return report.format_stats([(str(size), n) for size, n in counts])


def _sizes_enable(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    # memcached answers sizes_enable and sizes_disable with one line and no END
    if not node.config.use_cas:  # it needs CAS to tell old items from new
        return C.SIZES_NEED_CAS
    node.store.track_sizes(True)
    return C.SIZES_ENABLED


def _sizes_disable(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    node.store.track_sizes(False)
    return C.SIZES_DISABLED


def _conns(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    return report.format_stats(report.conns_stats(node, s.cid))


def _reset(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    node.reset_stats()
    return C.RESET


def _cachedump(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    if not node.config.dump_enabled:
        return C.CACHEDUMP_NOT_ALLOWED
    if len(args) < 3:
        return C.STATS_BAD
    cid = strtoul32(args[1])
    limit = strtoul32(args[2])
    if cid is None or limit is None:
        return C.BAD_FORMAT
    if cid >= 64:
        return C.CACHEDUMP_BAD_SLAB
    lines = [
        b"ITEM %b [%d b; %d s]\r\n" % (key, nbytes, exp)
        for key, nbytes, exp in node.store.dump_class(cid, limit)
    ]
    lines.append(C.END)
    return b"".join(lines)


def _detail(node: AdminContext, s: Session, args: list[bytes]) -> bytes:
    """``stats detail on|off|dump``: off keeps what was counted (dump still shows it)."""
    sub = args[1] if len(args) > 1 else b""
    if sub == b"on" or sub == b"off":
        node.set_detail(sub == b"on")
        return C.OK
    if sub == b"dump":
        return node.ops.prefix_stats.dump()
    return C.DETAIL_USAGE


_SUBCOMMANDS: dict[bytes, Callable[[AdminContext, Session, list[bytes]], bytes]] = {
    b"settings": _settings,
    b"items": _items,
    b"slabs": _slabs,
    b"sizes": _sizes,
    b"sizes_enable": _sizes_enable,
    b"sizes_disable": _sizes_disable,
    b"conns": _conns,
    b"reset": _reset,
    b"cachedump": _cachedump,
    b"detail": _detail,
}

STATS_HANDLERS = {b"stats": cmd_stats}

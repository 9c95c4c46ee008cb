"""The one dispatch table: a command's first token -> its handler, for every family.

``ITEM_HANDLERS`` holds what needs only the item context (items, meta, the cluster view, the
admin commands that touch only the store); ``HANDLERS`` adds the node-wide families (stats,
slabs, the other admin commands), for sessions the node builds. Storage commands (their data
block framed) go to ``items.store_request`` and ``ms`` to ``meta.meta_store``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server.commands.admin import ITEM_ADMIN_HANDLERS, NODE_ADMIN_HANDLERS
from memcache_server.commands.cluster import CLUSTER_HANDLERS
from memcache_server.commands.items import ITEM_COMMAND_HANDLERS
from memcache_server.commands.meta import META_HANDLERS
from memcache_server.commands.slabs import SLABS_HANDLERS
from memcache_server.commands.stats import STATS_HANDLERS

if TYPE_CHECKING:
    from memcache_server.commands.session import Handler

__all__ = ["HANDLERS", "ITEM_HANDLERS"]

ITEM_HANDLERS: dict[bytes, Handler] = {
    **ITEM_COMMAND_HANDLERS,
    **META_HANDLERS,
    **CLUSTER_HANDLERS,
    **ITEM_ADMIN_HANDLERS,
}

HANDLERS: dict[bytes, Handler] = {
    **ITEM_HANDLERS,
    **STATS_HANDLERS,
    **SLABS_HANDLERS,
    **NODE_ADMIN_HANDLERS,
}

"""The cluster view a cache node serves, re-exported: it lives with the node's commands.

``config get cluster`` is a command every cache node answers, so the view is part of the node
(``memcache_server.commands.cluster``); membership fills it from here.
"""

from memcache_server.commands.cluster import (
    CONFIG_WRITES_REFUSED,
    LEGACY_READ_ONLY,
    ClusterView,
    ViewCounters,
)

__all__ = ["ClusterView", "ViewCounters", "CONFIG_WRITES_REFUSED", "LEGACY_READ_ONLY"]

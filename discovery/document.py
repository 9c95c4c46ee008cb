"""The cluster document codec, re-exported: it lives with the node's protocol.

Every cache node serves the document (``config get cluster``), so its codec is part of the
node's sans-IO protocol layer (``memcache_server.protocol.document``); discovery code and its
users keep importing it from here.
"""

from memcache_server.protocol.document import (
    CONFIG_GET,
    LEGACY_GET,
    LEGACY_KEY,
    MAX_DOCUMENT,
    MAX_HOSTNAME,
    MAX_VERSION,
    NO_DOCUMENT,
    ClusterDocument,
    DocumentError,
    NodeAddress,
    Reply,
    config_reply,
    legacy_value,
    node_tuples,
    parse_config_reply,
    parse_document,
    parse_reply,
    supersedes,
)

__all__ = [
    "CONFIG_GET",
    "LEGACY_GET",
    "LEGACY_KEY",
    "MAX_DOCUMENT",
    "MAX_HOSTNAME",
    "MAX_VERSION",
    "NO_DOCUMENT",
    "ClusterDocument",
    "DocumentError",
    "NodeAddress",
    "Reply",
    "config_reply",
    "legacy_value",
    "node_tuples",
    "parse_config_reply",
    "parse_document",
    "parse_reply",
    "supersedes",
]

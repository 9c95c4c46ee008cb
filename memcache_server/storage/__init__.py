"""Item storage: slab classes, per-class LRU, expiry and eviction. No protocol bytes, no sockets."""

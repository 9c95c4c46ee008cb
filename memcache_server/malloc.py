"""Process-wide allocator setting: give large buffers back to the OS when they are freed.

Why: replies are built by copying values into per-connection buffers, so a burst of clients
that ask for megabytes and never read (then vanish) makes the node hold hundreds of MB for a
moment. glibc serves such buffers with mmap, but each time one is freed it raises its mmap
threshold (up to 32 MB), after which buffers of that size come from the heap and stay resident
after use. Measured: 60 such clients per round, the node's RSS went 27 MB -> 200-490 MB and
stayed there between rounds; with the threshold pinned at 1 MB it is back at 27 MB after each
round. Buffers under 1 MB (every ordinary reply) are unaffected; one over 1 MB costs an
mmap/munmap pair, small next to copying a megabyte.

Called once, by the command-line entry point, before any thread starts. A no-op where the C
library has no ``mallopt`` (not glibc).
"""

from __future__ import annotations

import ctypes

__all__ = ["pin_mmap_threshold", "MMAP_THRESHOLD"]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1024 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (which also turns its dynamic adjustment off)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))

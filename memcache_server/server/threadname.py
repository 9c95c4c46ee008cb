"""Kernel-visible thread names, as memcached gives its threads (``mc-worker``, ...).

Why: ``top -H``, ``ps -L`` and ``/proc/<pid>/task/*/comm`` are how an operator (and a test)
tells a node's event loops from its other threads; Python's ``Thread.name`` stays inside the
interpreter, and CPython 3.11 has no call to pass it to the kernel. Linux's ``prctl`` names the
calling thread (at most 15 bytes). Elsewhere, or if the call is unavailable, nothing happens:
a name is a convenience, never a reason to fail.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["name_this_thread"]

PR_SET_NAME = 15
NAME_MAX = 15  # the kernel's TASK_COMM_LEN less the terminating NUL


def name_this_thread(name: str) -> None:
    """Give the calling thread ``name`` as the kernel shows it (cut to ``NAME_MAX`` bytes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:NAME_MAX]), 0, 0, 0)
    except (OSError, AttributeError):
        pass

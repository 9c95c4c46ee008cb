"""Shared fixtures: real server processes, stopped by PID after each use."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the project root, so `pytest` (not only `python -m pytest`) imports memcache_server
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from procs import ServerProc, have_memcached, start_memcached, start_node  # noqa: E402


@pytest.fixture
def node() -> Iterator[ServerProc]:
    """A fresh node with default settings."""
    srv = start_node()
    yield srv
    srv.stop()


@pytest.fixture
def memcached() -> Iterator[ServerProc]:
    """A fresh real memcached with default settings (skips where it is not installed)."""
    if not have_memcached():
        pytest.skip("memcached is not installed")
    srv = start_memcached()
    yield srv
    srv.stop()

"""Shared fixtures: real server processes, stopped by PID after each use."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the project root, so `pytest` (not only `python -m pytest`) imports memcache_server
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

if os.geteuid() == 0:
    # memcached (and so our node) refuses to start as root without -u; the tests run as root
    # here and start memcached with -u root, so every node they start gets the same
    os.environ.setdefault("MEMCACHE_SERVER_USER", "root")

from certs import OPENSSL, Certs, make_certs  # noqa: E402
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


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Test CA, server, client and rogue certificates (skips without the openssl tool)."""
    if OPENSSL is None:
        pytest.skip("the openssl tool is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))

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

from certs import Certs, make_certs  # noqa: E402
from procs import ServerProc, start_memcached, start_node  # noqa: E402
from reference import need_memcached, need_tool, reference_skip_reason, required  # noqa: E402


@pytest.fixture
def node() -> Iterator[ServerProc]:
    """A fresh node with default settings."""
    srv = start_node()
    yield srv
    srv.stop()


@pytest.fixture
def memcached() -> Iterator[ServerProc]:
    """A fresh real memcached with default settings (see ``reference.need_memcached``)."""
    need_memcached()
    srv = start_memcached()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Test CA, server, client and rogue certificates (made with the openssl tool)."""
    need_tool("openssl", "apt-get install openssl")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def live_reference() -> str:
    """Marks a test that compares with a live memcached: the path of the pinned binary."""
    return need_memcached()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line that says how many tests a missing (or unpinned) reference skipped, and why;
    printed on every run, so CI's log shows the zero."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = reference_skip_reason(getattr(report, "longrepr", None))
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    total = sum(reasons.values())
    why = "".join(f"; {n} x {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    if required():
        switch = " (REQUIRE_REFERENCES is set: a missing reference fails)"
    else:
        switch = " (REQUIRE_REFERENCES=1 makes missing references fail)" if total else ""
    terminalreporter.write_line(
        f"reference skips: {total} tests{why}{switch}", yellow=bool(total), green=not total
    )

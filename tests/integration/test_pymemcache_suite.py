"""pymemcache's own integration tests (shipped in its wheel) against a real node of ours.

They exercise the client end to end: every verb, serialisation, prefixes, pooled and hashed
clients. Running them unchanged is the best evidence that a real client cannot tell us apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pymemcache
from procs import ServerProc


def test_pymemcache_integration_suite(node: ServerProc) -> None:
    suite = Path(pymemcache.__file__).parent / "test" / "test_integration.py"
    assert suite.exists(), "pymemcache's wheel ships its integration tests"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(suite),
            "--server",
            node.host,
            "--port",
            str(node.port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=suite.parent,
    )
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail

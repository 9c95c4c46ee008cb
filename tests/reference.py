"""Which reference a test compares against, and what happens when one is missing.

Why: a suite that compares our bytes with memcached's proves nothing on a machine where the
comparisons quietly skip, or where they run against some other memcached release. So:

- The reference is pinned: memcached ``PINNED_VERSION``. Live comparisons run only against that
  release; the corpora (classic, meta, slabs) fall back to transcripts recorded from it
  (``tests/data/transcripts``, written by ``python tests/record_transcripts.py``) when the
  installed memcached is missing or another release. ``REFERENCE=transcripts`` forces the
  transcripts even where the pinned memcached is installed.
- A missing reference (memcached, openssl, prometheus, pylibmc) skips with a reason that starts
  with ``MISSING``; the session summary counts those skips in one line. With
  ``REQUIRE_REFERENCES=1`` (set by CI) the same test fails instead, so CI cannot go green by
  skipping.
- An installed memcached of another release is not missing, but it is not the reference either:
  live-only comparisons skip with a reason that starts with ``NOT_PINNED`` (never a failure, so
  a distribution upgrade does not break CI, and never mistaken for the reference).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
from types import ModuleType
from typing import NoReturn

import pytest

PINNED_VERSION = "1.6.18"
MISSING = "reference missing:"
NOT_PINNED = "reference not pinned:"


def required() -> bool:
    """CI's switch: a missing reference fails the test instead of skipping it."""
    return os.environ.get("REQUIRE_REFERENCES", "") not in ("", "0")


def memcached_path() -> str | None:
    """The memcached binary on PATH (``MEMCACHED_BIN`` overrides; an empty value means none)."""
    if "MEMCACHED_BIN" in os.environ:
        given = os.environ["MEMCACHED_BIN"]
        return given if given and os.access(given, os.X_OK) else None
    return shutil.which("memcached")


@functools.cache
def memcached_version() -> str | None:
    """``memcached -V`` says ``memcached 1.6.18``; None when there is no usable binary."""
    path = memcached_path()
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    words = out.split()
    return words[1] if len(words) >= 2 and words[0] == "memcached" else None


def transcripts_forced() -> bool:
    return os.environ.get("REFERENCE", "") == "transcripts"


def live_memcached() -> bool:
    """True when the corpora compare against a live memcached: the pinned release is installed
    and the transcripts are not forced."""
    return memcached_version() == PINNED_VERSION and not transcripts_forced()


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (``REQUIRE_REFERENCES=1``) because a reference is not installed."""
    message = f"{MISSING} {what}"
    if required():
        pytest.fail(f"{message} (REQUIRE_REFERENCES is set)", pytrace=False)
    pytest.skip(message)


def need_memcached() -> str:
    """For a test that talks to a live memcached: its path, or a skip/failure that says why."""
    version = memcached_version()
    path = memcached_path()
    if version is None or path is None:
        missing("memcached is not installed (apt-get install memcached)")
    if version != PINNED_VERSION:
        pytest.skip(
            f"{NOT_PINNED} memcached {version} is installed, the reference is {PINNED_VERSION}"
        )
    return path


def need_tool(name: str, install: str) -> str:
    """The path of a reference tool (openssl, promtool, memcaslap, ...), or skip/fail."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed ({install})")
    return path


def need_module(name: str, install: str) -> ModuleType:
    """An optional reference client library (pylibmc needs libmemcached to build)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the {name} module is not installed ({install})")


def reference_skip_reason(longrepr: object) -> str | None:
    """The reference part of a skip report's reason (``None`` for other skips)."""
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    reason = str(reason).removeprefix("Skipped: ")
    return reason if reason.startswith((MISSING, NOT_PINNED)) else None

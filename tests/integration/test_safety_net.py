"""The suite's own guards: what a missing reference does, that the recorded transcripts stand in
for memcached, and that the multi-loop pass really runs more than one event loop.

Each guard runs a small slice of the suite in a child pytest with a changed environment
(``MEMCACHED_BIN=`` hides memcached, ``REFERENCE=transcripts`` forces the transcripts), so the
switch is exercised exactly as CI and a developer's machine use it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from procs import MULTI_LOOP_ENV, ROOT, start_node
from reference import need_memcached

NO_MEMCACHED = {"MEMCACHED_BIN": ""}
MEMCACHED_TESTS = [
    "tests/integration/test_node_raw.py::test_bad_data_chunk_same_bytes_as_memcached",
    "tests/integration/test_node_raw.py::test_binary_keys_same_bytes_as_memcached",
]


def child_pytest(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run pytest on ``args`` with ``env`` added (the switches cleared first); (rc, output)."""
    base = {k: v for k, v in os.environ.items() if k not in ("REQUIRE_REFERENCES", "REFERENCE")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def counts(output: str) -> dict[str, int]:
    """pytest's final tally: {"passed": 3, "skipped": 1, ...}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}


def test_missing_memcached_skips_with_one_summary_line() -> None:
    rc, out = child_pytest(MEMCACHED_TESTS, NO_MEMCACHED)
    assert rc == 0, out
    assert counts(out) == {"skipped": 2}, out
    summary = [line for line in out.splitlines() if line.startswith("reference skips:")]
    assert summary == [
        "reference skips: 2 tests; 2 x reference missing: memcached is not installed "
        "(apt-get install memcached) (REQUIRE_REFERENCES=1 makes missing references fail)"
    ], out


def test_missing_memcached_fails_when_references_are_required() -> None:
    rc, out = child_pytest(MEMCACHED_TESTS, {**NO_MEMCACHED, "REQUIRE_REFERENCES": "1"})
    assert rc == 1, out
    assert counts(out) == {"error": 2}, out  # raised in the fixture: an error at setup
    assert "reference missing: memcached is not installed" in out
    assert "reference skips: 0 tests (REQUIRE_REFERENCES is set: a missing reference fails)" in out


def test_transcripts_stand_in_for_a_missing_memcached() -> None:
    """Classic (shared and fresh cases), meta and slab corpora against the transcripts alone,
    with references required: nothing skips, and no memcached is needed."""
    rc, out = child_pytest(
        [
            "tests/integration/test_differential.py::test_differential[set_get]",
            "tests/integration/test_differential.py::test_differential[verbosity_1]",
            "tests/integration/test_meta_differential.py::test_meta_differential[mg_miss]",
            "tests/integration/test_differential_slabs.py::test_slab_accounting[defaults]",
        ],
        {**NO_MEMCACHED, "REQUIRE_REFERENCES": "1", "REFERENCE": "transcripts"},
    )
    assert rc == 0, out
    assert counts(out) == {"passed": 4}, out


def test_a_newer_memcached_is_not_taken_for_the_reference(tmp_path: Path) -> None:
    """A distribution upgrade must neither fail CI nor be compared against as if it were the
    pinned release: with a memcached that says 1.6.99, live comparisons skip as unpinned (even
    with references required) and the corpora use the transcripts."""
    real = need_memcached()
    newer = tmp_path / "memcached"
    newer.write_text(
        '#!/bin/sh\n[ "$1" = -V ] && { echo "memcached 1.6.99"; exit 0; }\n'
        f'exec {real} "$@"\n'
    )
    newer.chmod(0o755)
    rc, out = child_pytest(
        [*MEMCACHED_TESTS, "tests/integration/test_differential.py::test_differential[set_get]"],
        {"MEMCACHED_BIN": str(newer), "REQUIRE_REFERENCES": "1"},
    )
    assert rc == 0, out
    assert counts(out) == {"passed": 1, "skipped": 2}, out
    assert (
        "reference skips: 2 tests; 2 x reference not pinned: memcached 1.6.99 is installed, "
        "the reference is 1.6.18 (REQUIRE_REFERENCES is set: a missing reference fails)"
    ) in out


def _tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += [c for c, parent in parents.items() if parent == p]
    return tree


def _event_loops(pid: int) -> dict[int, int]:
    """Per process of the node started as ``pid``: its event loop threads, which the node
    names ``mc-worker`` as memcached does (other threads, such as the clock or the LRU
    maintainer, come and go with features and are not counted)."""
    loops: dict[int, int] = {}
    for p in _tree(pid):
        names = []
        for tid in os.listdir(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                continue
        if "mc-worker" in names:
            loops[p] = names.count("mc-worker")
    return loops


def test_the_multi_loop_node_runs_four_event_loops() -> None:
    """The second pass is only worth something if it changes the process model: with
    ``MULTI_LOOP_ENV`` a ``-t 4`` node runs its four event loops as threads of one process
    (hand-offs between loops sharing one interpreter), where the default runs one loop in
    each of four worker processes."""
    one, four = start_node("-t", "4"), start_node("-t", "4", env=MULTI_LOOP_ENV)
    try:
        # a node serves once it listens; its loops (and worker processes) may start just after
        deadline = time.monotonic() + 15
        while True:
            multi, default = _event_loops(four.proc.pid), _event_loops(one.proc.pid)
            if sum(multi.values()) >= 4 and sum(default.values()) >= 4:
                break
            assert time.monotonic() < deadline, (multi, default)
            time.sleep(0.05)
        assert multi == {four.proc.pid: 4}
        assert sorted(default.values()) == [1, 1, 1, 1], default
        assert one.proc.pid not in default  # the supervisor serves no connection itself
    finally:
        one.stop()
        four.stop()

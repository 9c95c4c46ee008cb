"""memcache-server(1): generated from the options table, committed up to date, rendered by man
without warnings, and shipped in the wheel where ``man`` looks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from memcache_server.manpage import render
from memcache_server.options import OPTIONS

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "man" / "man1" / "memcache-server.1"


def test_the_committed_page_is_what_the_table_gives() -> None:
    assert PAGE.read_text() == render(), (
        "regenerate: python -m memcache_server.manpage > docs/man/man1/memcache-server.1"
    )


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_renders_every_flag_and_sub_option() -> None:
    done = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    plain = done.stdout.replace("\u2010", "-")  # man may hyphenate with U+2010
    for option in OPTIONS:
        for flag in option.flags:
            assert flag in plain, flag
        if option.sub:
            assert option.sub in plain, option.sub


def test_the_wheel_installs_the_page_for_man(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py"):
        shutil.copy(ROOT / name, src / name)
    for name in ("memcache_server", "discovery", "load", "docs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        pages = [n for n in names if n.endswith("/data/share/man/man1/memcache-server.1")]
        assert len(pages) == 1
        assert zf.read(pages[0]).decode() == render()

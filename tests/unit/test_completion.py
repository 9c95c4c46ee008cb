"""Shell completion, as README documents it: the script for each shell, and flag completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
RUN = [sys.executable, "-c", "import cli; cli.main(prog_name='memcache-server')"]


def _complete(env: dict[str, str]) -> str:
    done = subprocess.run(
        RUN, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_its_script(shell: str) -> None:
    script = _complete({"_MEMCACHE_SERVER_COMPLETE": f"{shell}_source"})
    assert "_MEMCACHE_SERVER_COMPLETE" in script and "memcache-server" in script


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("memcache-server --memory-l", 1, "plain,--memory-limit"),
        ("memcache-server config-node --state", 2, "plain,--state-file"),
        ("memcache-server clu", 1, "plain,cluster"),
    ],
)
def test_bash_completes_flags_and_commands(words: str, cword: int, expected: str) -> None:
    out = _complete(
        {
            "_MEMCACHE_SERVER_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
    )
    assert expected in out.splitlines()


def test_readme_documents_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "_MEMCACHE_SERVER_COMPLETE=bash_source memcache-server" in readme

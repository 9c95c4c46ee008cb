"""The systemd units in deploy/systemd: systemd accepts them, and our command line accepts every
flag they pass (with their default OPTIONS, as a fresh install starts them)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

import memcache_server.cli as cli

UNITS = sorted((Path(__file__).parents[2] / "deploy" / "systemd").glob("*.service"))
BINARY = "/usr/local/bin/memcache-server"


def _service(unit: Path) -> dict[str, list[str]]:
    section, out = "", {}
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_units_are_there() -> None:
    names = {u.name for u in UNITS}
    assert names == {
        "memcache-server.service",
        "memcache-server@.service",
        "memcache-config-node.service",
    }


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_accepts(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    installed = shutil.which("memcache-server")
    if analyze is None or installed is None:
        pytest.skip("needs systemd-analyze and an installed memcache-server")
    # the unit as shipped, pointed at wherever this install put the console script
    name = unit.name.replace("@.", "@11212.")
    (tmp_path / name).write_text(unit.read_text().replace(BINARY, installed))
    # Documentation=man:memcache-server(1) is checked with man: show it the generated page
    manpath = f"{Path(__file__).parents[2] / 'docs' / 'man'}:"
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPATH": manpath},
    )
    ours = [line for line in done.stderr.splitlines() if name.split("@")[0] in line]
    assert done.returncode == 0 and not ours, done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_every_flag_the_unit_passes_is_accepted(unit: Path) -> None:
    service = _service(unit)
    (exec_start,) = service["ExecStart"]
    (env,) = service["Environment"]
    options = shlex.split(env.partition("=")[2].strip('"'))
    argv = shlex.split(exec_start)
    assert argv[0] == BINARY
    words: list[str] = []
    for word in argv[1:]:
        if word == "$OPTIONS":
            words += options
        else:  # systemd's specifiers and variables, as a started unit would see them
            words.append(
                re.sub(r"\$\{STATE_DIRECTORY\}", "/var/lib/memcache-config-node", word).replace(
                    "%i", "11212"
                )
            )
    group = cli.main
    sub = group.get_command(click.Context(group), words[0]) if words else None
    if sub is not None:
        words.pop(0)
        command: click.Command = sub
    else:
        command = group
    ctx = command.make_context("memcache-server", list(words), resilient_parsing=False)
    assert ctx.params  # parsed, not refused


def test_the_node_units_never_run_as_root_and_keep_state_only_where_meant() -> None:
    for unit in UNITS:
        service = _service(unit)
        assert service["DynamicUser"] == ["yes"]
        if "config-node" in unit.name:
            assert service["StateDirectory"] == ["memcache-config-node"]
            assert "${STATE_DIRECTORY}/" in service["ExecStart"][0]
        else:
            assert "StateDirectory" not in service

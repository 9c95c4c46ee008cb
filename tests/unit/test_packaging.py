"""The distribution claims one import name, ``memcache_server``: the wheel built from the sources
(with the symlinks memcache_server/{discovery,load,cli.py} as committed) holds that package, its
dist-info and the man page, nothing else at the top, and the cluster code, load generator and
command line inside it as ordinary files. Unpacked away from the checkout it starts a node and
the load generator; and no module imports the short names, which only a checkout resolves.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "memcache_server"
#: top-level directories/modules of the repository that are installed inside the namespace
INSIDE = {"discovery": "discovery", "load": "load", "cli.py": "cli.py"}
SHORT_NAMES = {"discovery", "load", "cli"}
PRINT_FILES = (
    "import memcache_server.cli as c, memcache_server.discovery.client as d,"
    " memcache_server.load.cli as g; print(c.__file__, d.__file__, g.__file__)"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build the wheel `pip install .` installs, from a copy of the sources that keeps symlinks
    as symlinks (as git checks them out and as a container build copies them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py"):
        shutil.copy(ROOT / name, src / name)
    for name in ("memcache_server", "discovery", "load", "docs"):
        shutil.copytree(
            ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert (src / NAMESPACE / "discovery").is_symlink()
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    [built] = (tmp / "dist").glob("*.whl")
    yield built


def test_the_wheel_claims_only_the_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist = wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
    assert tops == {NAMESPACE, f"{dist}.dist-info", f"{dist}.data"}
    data = {n for n in names if n.startswith(f"{dist}.data/")}
    assert data == {f"{dist}.data/data/share/man/man1/memcache-server.1"}
    top_level = zipfile.ZipFile(wheel).read(f"{dist}.dist-info/top_level.txt").decode()
    assert top_level.split() == [NAMESPACE]


def test_the_wheel_holds_every_module_as_a_plain_file(wheel: Path) -> None:
    """Each .py of discovery/, load/ and cli.py is in the wheel under the namespace, byte for
    byte, and no entry is a symlink (a zip symlink would install as a dangling link)."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            assert not stat.S_ISLNK(info.external_attr >> 16), info.filename
        names = set(zf.namelist())
        for top, inside in INSIDE.items():
            path = ROOT / top
            sources = [path] if path.is_file() else sorted(path.rglob("*.py"))
            assert sources
            for source in sources:
                member = f"{NAMESPACE}/{inside}"
                if path.is_dir():
                    member += f"/{source.relative_to(path)}"
                assert member in names, member
                assert zf.read(member) == source.read_bytes(), member


def test_the_console_scripts_point_into_the_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        entry = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(entry).decode()
    assert "memcache-server = memcache_server.cli:main" in text
    assert "memcache-load = memcache_server.load.cli:main" in text


def test_the_unpacked_wheel_runs_a_node_and_the_load_generator(wheel: Path, tmp_path: Path) -> None:
    """Run from the unpacked wheel, not the checkout: the working directory is elsewhere and
    the unpacked files come first on the path, so every import is one the wheel satisfies."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", PRINT_FILES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(site / NAMESPACE), path

    help_ = subprocess.run(
        [sys.executable, "-m", "memcache_server.load", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_.returncode == 0, help_.stderr
    assert "Load generator" in help_.stdout

    node = subprocess.Popen(
        [sys.executable, "-m", "memcache_server.cli", "-l", "127.0.0.1", "-p", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert line, node.stderr.read() if node.stderr else b""
        port = int(line.split()[-1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"version\r\n")
            assert s.recv(100).startswith(b"VERSION ")
    finally:
        node.terminate()
        node.wait(10)
        for stream in (node.stdout, node.stderr):
            if stream is not None:
                stream.close()
    assert node.returncode == 0


def _short_imports(path: Path) -> list[str]:
    found = []
    for n in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names = [n.module]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{n.lineno} {m}"
            for m in names
            if m.split(".")[0] in SHORT_NAMES
        ]
    return found


def test_no_module_imports_the_short_names() -> None:
    """`discovery`, `load` and `cli` resolve only in a checkout, and a module imported under
    both names is loaded twice (two registries, two sets of classes)."""
    files = [ROOT / "cli.py"]
    for top in ("memcache_server", "discovery", "load", "tests"):
        # rglob does not enter the symlinked directories; each real file is read once
        files += (f for f in (ROOT / top).rglob("*.py") if not f.is_symlink())
    assert any(f.parent.name == "discovery" for f in files)
    found = [hit for f in files for hit in _short_imports(f)]
    assert found == []

"""`memcache-server cluster owner`: which node owns a key, from an endpoint or a node list."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from client_endpoint import Endpoint
from procs import ROOT, free_port

import memcache_server.cli as cli

SET_B = "127.0.0.1,127.0.0.1:11212,127.0.0.1:11213"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, ["cluster", "owner", *args])
    return result.exit_code, result.stdout, result.stderr


def test_static_list_matches_libmemcached() -> None:
    # owners from the libmemcached vectors, set B
    code, out, _ = run("--nodes", SET_B, "foo", "bar", "user:2")
    assert code == 0
    assert out.splitlines() == [
        "foo 127.0.0.1:11211 -",
        "bar 127.0.0.1:11212 -",
        "user:2 127.0.0.1:11213 -",
    ]


def test_from_the_config_endpoint(endpoint: Endpoint) -> None:
    endpoint.set(
        7, [("node-a.cache.local", "10.0.0.1", 11211), ("node-b.cache.local", "10.0.0.2", 11211)]
    )
    code, by_host, _ = run("--config", endpoint.spec, "user:1", "user:2", "user:3")
    assert code == 0
    assert [line.split()[0] for line in by_host.splitlines()] == ["user:1", "user:2", "user:3"]
    assert all(line.split()[2] in ("10.0.0.1", "10.0.0.2") for line in by_host.splitlines())
    # hashed by IP the owners are those of a client configured with 10.0.0.1 and 10.0.0.2
    code, by_ip, _ = run("--config", endpoint.spec, "--naming", "ip", "foo", "baz")
    expected = run("--nodes", "10.0.0.1,10.0.0.2", "foo", "baz")[1]
    assert [line.split()[2] for line in by_ip.splitlines()] == [
        line.split()[1].split(":")[0] for line in expected.splitlines()
    ]


def test_rendezvous_scheme() -> None:
    # pymemcache HRW, contracts table set A: foo -> 10.0.0.3, bar -> 10.0.0.2
    code, out, _ = run(
        "--nodes", "10.0.0.1,10.0.0.2,10.0.0.3", "--scheme", "rendezvous", "foo", "bar"
    )
    assert code == 0
    assert out.splitlines() == ["foo 10.0.0.3:11211 -", "bar 10.0.0.2:11211 -"]


def test_errors(endpoint: Endpoint) -> None:
    assert run("foo")[0] == 2  # neither source
    assert run("--nodes", "a", "--config", "b:1", "foo")[0] == 2  # both
    code, _, err = run("--config", f"127.0.0.1:{free_port()}", "foo")
    assert code == 1 and "cannot build the ring" in err
    endpoint.mode = "end"
    code, _, err = run("--config", endpoint.spec, "foo")
    assert code == 1 and "no cluster document" in err


def test_console_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "cluster", "owner", "--nodes", SET_B, "key0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "key0 127.0.0.1:11213 -\n"

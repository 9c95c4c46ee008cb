"""The config node's state on disk is correct and durable: an operator's removal survives a
restart, a state file that cannot be written is refused at start, a failed publish is counted
and logged, and the operator commands say what went wrong in words."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click
from cluster_procs import HOST, config_get, request, start_config_node, stats_of
from procs import ROOT, start_node

from memcache_server.discovery.commands import config_node_command

CLI = [sys.executable, str(ROOT / "cli.py")]


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "cluster", *args], capture_output=True, text=True, timeout=30)


def _hosts(port: int) -> set[str]:
    doc = config_get(port)
    return {n.hostname for n in doc.nodes} if doc else set()


def test_a_removal_survives_a_config_node_restart(tmp_path: Path) -> None:
    state = tmp_path / "cluster.state"
    cfg = start_config_node(state)
    try:
        for name in (b"node-a", b"node-b"):
            request(cfg.port, b"cluster_join %s 127.0.0.1 11211 0\r\n" % name)
        assert _hosts(cfg.port) == {"node-a", "node-b"}
        removed = _cluster("remove", "--config", f"{HOST}:{cfg.port}", "node-a:11211")
        assert removed.returncode == 0, removed.stderr
        assert _hosts(cfg.port) == {"node-b"}
    finally:
        cfg.stop()
    assert (tmp_path / "cluster.state.removed").read_text() == "node-a 11211\n"
    cfg = start_config_node(state)
    try:
        # node-a's process is still running: its heartbeats must not bring it back
        reply = request(cfg.port, b"cluster_heartbeat node-a 127.0.0.1 11211 0\r\n")
        assert b"node-a" not in reply
        request(cfg.port, b"cluster_heartbeat node-b 127.0.0.1 11211 0\r\n")
        assert _hosts(cfg.port) == {"node-b"}
        listing = _cluster("nodes", "--config", f"{HOST}:{cfg.port}")
        assert re.search(r"^node-a\s.*\sremoved\s", listing.stdout, re.M), listing.stdout
        # a restarted process joins afresh and is welcome again, and that is saved too
        request(cfg.port, b"cluster_join node-a 127.0.0.1 11211 0\r\n")
        assert _hosts(cfg.port) == {"node-a", "node-b"}
        assert (tmp_path / "cluster.state.removed").read_text() == ""
    finally:
        cfg.stop()


def test_a_state_file_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "cluster.state"
    done = subprocess.run(
        [*CLI, "config-node", "-l", HOST, "-p", "0", "--state-file", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 73  # EX_CANTCREAT
    assert done.stdout == ""  # no port announced: it never served
    assert done.stderr == f"cannot write state file {missing}: No such file or directory\n"


def test_a_failed_publish_is_logged_and_counted(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir()
    cfg = start_config_node(home / "cluster.state")
    try:
        request(cfg.port, b"cluster_join node-a 127.0.0.1 11211 0\r\n")
        assert stats_of(cfg.port)["cluster_publish_failures"] == "0"
        shutil.rmtree(home)  # the disk the state lives on is gone
        reply = request(cfg.port, b"cluster_join node-b 127.0.0.1 11211 0\r\n")
        assert reply == b"SERVER_ERROR cannot persist the cluster state\r\n"
        assert _hosts(cfg.port) == {"node-a"}  # nothing published that is not durable
        assert int(stats_of(cfg.port)["cluster_publish_failures"]) >= 1
        cfg.proc.send_signal(signal.SIGTERM)
        _, err = cfg.proc.communicate(timeout=15)
        assert b"config-node: cannot publish: " in err, err
    finally:
        if cfg.proc.poll() is None:
            cfg.stop()


def test_removing_an_unknown_node_leaves_nothing_behind(tmp_path: Path) -> None:
    cfg = start_config_node(tmp_path / "cluster.state")
    try:
        request(cfg.port, b"cluster_join node-a 127.0.0.1 11211 0\r\n")
        nope = _cluster("remove", "--config", f"{HOST}:{cfg.port}", "nope:1")
        assert nope.returncode == 1
        assert "nope:1 is not a member of the cluster" in nope.stderr
        listing = _cluster("nodes", "--config", f"{HOST}:{cfg.port}")
        assert "nope" not in listing.stdout
        assert listing.stdout.startswith("version 1, 1 node(s)\n")
    finally:
        cfg.stop()


def test_asking_a_cache_node_for_the_cluster_says_so() -> None:
    node = start_node()
    try:
        for args in (("nodes",), ("remove", "node-a:11211")):
            done = _cluster(args[0], "--config", f"{HOST}:{node.port}", *args[1:])
            assert done.returncode == 1
            assert f"{HOST}:{node.port} is not a config node" in done.stderr, done.stderr
            assert "configuration endpoint" in done.stderr
    finally:
        node.stop()


def test_the_config_node_port_is_the_one_readme_shows_and_not_a_cache_nodes() -> None:
    (port,) = (p.default for p in config_node_command.params if p.name == "port")
    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"config-node [^\n]*?-p (\d+)", readme))
    assert shown == {str(port)}
    assert port != 11211  # a config node and a cache node can share a host on their defaults
    assert isinstance(config_node_command, click.Command)

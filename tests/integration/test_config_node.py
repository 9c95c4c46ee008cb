"""The config node as a real process, spoken to with raw sockets: discovery answers, private
membership commands, the token, refusals that keep the stream in sync, stats, the operator CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_procs import HOST, request, start_config_node
from procs import ROOT, ServerProc, exchange

from memcache_server.discovery.document import ClusterDocument, NodeAddress, parse_config_reply

TOKEN = "s3cret-token"


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_config_node(tmp_path / "state", "--cluster-token", TOKEN)
    yield srv
    srv.stop()


def test_discovery_answers_before_anyone_joined(cfg: ServerProc) -> None:
    assert request(cfg.port, b"config get cluster\r\n") == b"END\r\n"
    assert request(cfg.port, b"config get cluster \r\n") == b"END\r\n"  # libmemcached's form
    assert request(cfg.port, b"get AmazonElastiCache:cluster\r\n") == b"END\r\n"
    assert request(cfg.port, b"version\n") == b"VERSION 1.6.18\r\n"


def test_data_commands_are_refused_and_the_stream_stays_in_sync(cfg: ServerProc) -> None:
    with cfg.connect() as s:
        got = exchange(
            s,
            b"get foo\r\nset foo 0 0 5\r\nhello\r\nconfig set cluster 0 3\r\n1\nx\r\n"
            b"incr a 1\r\nbogus\r\nversion\r\n",
            settle=0.3,
        )
    assert got == (
        b"SERVER_ERROR this is a cluster configuration endpoint: it stores no items\r\n" * 2
        + b"CLIENT_ERROR the configuration endpoint's document is managed by membership\r\n"
        + b"SERVER_ERROR this is a cluster configuration endpoint: it stores no items\r\n"
        + b"ERROR\r\nVERSION 1.6.18\r\n"
    )


def _join(port: int, line: bytes) -> bytes:
    return request(port, line)


def test_token_is_required_to_join(cfg: ServerProc) -> None:
    line = b"cluster_join node-a 127.0.0.1 11311 0"
    assert _join(cfg.port, line + b"\r\n") == b"CLIENT_ERROR cluster token required\r\n"
    assert _join(cfg.port, line + b" wrong\r\n") == b"CLIENT_ERROR bad cluster token\r\n"
    assert _join(cfg.port, b"cluster_join node-a 1.2.3 11311 0 " + TOKEN.encode() + b"\r\n") == (
        b"CLIENT_ERROR bad node address\r\n"
    )
    reply = _join(cfg.port, line + b" " + TOKEN.encode() + b"\r\n")
    assert reply == b"CONFIG cluster 0 25\r\n1\nnode-a|127.0.0.1|11311\n\r\nEND\r\n"
    # a second node: version 2, and the reply to its join already lists both, in order
    reply = _join(cfg.port, b"cluster_join node-0 127.0.0.1 11312 1 " + TOKEN.encode() + b"\r\n")
    assert parse_config_reply(reply) == ClusterDocument.of(
        2,
        [NodeAddress("node-0", "127.0.0.1", 11312), NodeAddress("node-a", "127.0.0.1", 11311)],
    )
    assert request(cfg.port, b"config get cluster\r\n") == reply
    legacy = request(cfg.port, b"get AmazonElastiCache:cluster\r\n")
    doc = reply.split(b"\r\n", 1)[1][: -len(b"\r\nEND\r\n")]
    assert legacy == b"VALUE AmazonElastiCache:cluster 0 %d\r\n%b\r\nEND\r\n" % (len(doc), doc)
    stats = request(cfg.port, b"stats\r\n")
    for field in (b"cluster_version 2", b"cluster_nodes 2", b"cluster_joins 2"):
        assert b"STAT " + field + b"\r\n" in stats
    assert b"STAT cluster_heartbeat_failures 3\r\n" in stats
    assert b"STAT version 1.6.18\r\n" in stats


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "cluster", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_operator_cli_lists_and_removes(cfg: ServerProc) -> None:
    tok = TOKEN.encode()
    for name, port in ((b"n1", 2001), (b"n2", 2002)):
        _join(cfg.port, b"cluster_join %b 127.0.0.1 %d 0 %b\r\n" % (name, port, tok))
    out = _cli("nodes", "--config", f"{HOST}:{cfg.port}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "version 2, 2 node(s)"
    assert [ln.split()[:4] for ln in lines[2:]] == [
        ["n1", "127.0.0.1", "2001", "up"],
        ["n2", "127.0.0.1", "2002", "up"],
    ]
    bad = _cli("remove", "--config", f"{HOST}:{cfg.port}", "n1:2001")  # no token
    assert bad.returncode != 0 and "token required" in bad.stderr
    ok = _cli("remove", "--config", f"{HOST}:{cfg.port}", "--cluster-token", TOKEN, "n1:2001")
    assert ok.returncode == 0 and "removed n1:2001" in ok.stdout
    doc = parse_config_reply(request(cfg.port, b"config get cluster\r\n"))
    assert doc is not None and doc.version == 3 and [n.hostname for n in doc.nodes] == ["n2"]
    # its heartbeats do not bring it back; only a restart of its process (a join) would
    hb = request(cfg.port, b"cluster_heartbeat n1 127.0.0.1 2001 3 %b\r\n" % tok)
    assert parse_config_reply(hb) == doc
    again = _cli("remove", "--config", f"{HOST}:{cfg.port}", "--cluster-token", TOKEN, "n1:2001")
    assert again.returncode == 1 and "not a member" in again.stderr
    out = _cli("nodes", "--config", f"{HOST}:{cfg.port}")
    assert "n1  " in out.stdout and "removed" in out.stdout


def test_version_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    srv = start_config_node(state)
    try:
        for port in (3001, 3002, 3003):
            request(srv.port, b"cluster_join h 127.0.0.1 %d 0\r\n" % port)
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    assert state.read_bytes().startswith(b"3\n")
    srv = start_config_node(state)
    try:
        doc = parse_config_reply(request(srv.port, b"config get cluster\r\n"))
        assert doc is not None and doc.version == 3 and len(doc.nodes) == 3  # served as saved
        reply = request(srv.port, b"cluster_leave h 3002\r\n")
        doc = parse_config_reply(reply)
        assert doc is not None and doc.version == 4 and len(doc.nodes) == 2
    finally:
        srv.stop()


def test_unreadable_state_file_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="not a cluster document"):
        start_config_node(state)

"""Membership and version rules of the config node, on a manual clock with a real state file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memcache_server.discovery.document import ClusterDocument, NodeAddress, parse_config_reply
from memcache_server.discovery.registry import Registry
from memcache_server.discovery.statefile import StateError, load_state, save_state

A = NodeAddress("a", "127.0.0.1", 1001)
B = NodeAddress("b", "127.0.0.1", 1002)
C = NodeAddress("c", "127.0.0.1", 1003)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(path: Path, clock: Clock, timeout: float = 10.0) -> Registry:
    return Registry(path, timeout, clock)


def hosts(reg: Registry) -> list[str]:
    doc = reg.document()
    return [n.hostname for n in doc.nodes] if doc else []


def test_versions_rise_by_one_per_change_and_are_persisted_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clock = Clock()
    seen: list[int] = []

    def persist(path: Path, doc: ClusterDocument) -> None:
        # the state file holds the new version before the registry serves it
        assert reg.published is None or reg.published.version < doc.version
        save_state(path, doc)
        seen.append(doc.version)

    reg = Registry(state, 10.0, clock, persist)
    assert reg.reply() == b"END\r\n"  # nothing to publish yet
    reg.register(A, 0, fresh=True)
    assert reg.publish() and reg.version == 1
    reg.register(A, 1, fresh=False)  # a heartbeat changes nothing
    assert not reg.publish() and reg.version == 1
    reg.register(B, 0, fresh=True)
    reg.publish()
    reg.register(NodeAddress("a", "127.0.0.5", 1001), 2, fresh=False)  # same node, new IP
    reg.publish()
    assert seen == [1, 2, 3]
    assert load_state(state) == reg.document()
    assert parse_config_reply(reg.reply()) == reg.document()
    assert not list(tmp_path.glob("*.tmp"))


def test_heartbeat_timeout_removes_and_counts(tmp_path: Path) -> None:
    clock = Clock()
    reg = make(tmp_path / "s", clock, timeout=10)
    for n in (A, B):
        reg.register(n, 0, fresh=True)
    reg.publish()
    clock.t += 6
    reg.register(A, 1, fresh=False)
    clock.t += 6  # B silent for 12 s, A for 6 s
    assert reg.expire() == 1
    reg.publish()
    assert hosts(reg) == ["a"] and reg.version == 2
    assert reg.counters.removals == 1 and reg.counters.joins == 2


def test_left_node_stays_out_until_it_restarts(tmp_path: Path) -> None:
    clock = Clock()
    reg = make(tmp_path / "s", clock)
    for n in (A, B):
        reg.register(n, 0, fresh=True)
    reg.publish()
    assert reg.leave("b", 1002)
    reg.publish()
    assert hosts(reg) == ["a"] and reg.version == 2
    reg.register(B, 2, fresh=False)  # a heartbeat that was already on its way
    assert not reg.publish() and hosts(reg) == ["a"]
    assert [(r.address.hostname, r.state) for r in reg.removed()] == [("b", "left")]
    reg.register(B, 2, fresh=True)  # the process restarted and joins again
    reg.publish()
    assert hosts(reg) == ["a", "b"] and reg.version == 3
    assert reg.counters.leaves == 1 and reg.counters.joins == 3


def test_operator_removal_and_tombstone_expiry(tmp_path: Path) -> None:
    clock = Clock()
    reg = make(tmp_path / "s", clock, timeout=5)
    reg.register(A, 0, fresh=True)
    reg.register(B, 0, fresh=True)
    reg.publish()
    assert reg.remove("a", 1001) and not reg.remove("zz", 1)
    reg.publish()
    for _ in range(4):  # it keeps heartbeating: it stays out, and so does its tombstone
        clock.t += 3
        reg.register(A, 2, fresh=False)
        reg.register(B, 2, fresh=False)
        reg.expire()
        assert not reg.publish()
    assert hosts(reg) == ["b"]
    clock.t += 6  # it went quiet: the tombstone goes too
    reg.register(B, 2, fresh=False)
    reg.expire()
    assert [r.address.hostname for r in reg.removed()] == []


def test_version_continues_after_restart_and_membership_is_rebuilt(tmp_path: Path) -> None:
    state = tmp_path / "s"
    clock = Clock()
    reg = make(state, clock, timeout=10)
    for n in (A, B, C):
        reg.register(n, 0, fresh=True)
        reg.publish()
    assert reg.version == 3

    clock.t += 100  # the config node restarts: it serves what it had, unconfirmed
    reg2 = make(state, clock, timeout=10)
    assert reg2.version == 3 and hosts(reg2) == ["a", "b", "c"]
    assert {r.state for r in reg2.listing()} == {"restored"}
    clock.t += 4
    reg2.register(A, 3, fresh=False)
    reg2.register(C, 3, fresh=False)
    assert not reg2.publish()  # heartbeats of known members: no new version
    states = {r.address.hostname: r.state for r in reg2.listing()}
    assert states == {"a": "up", "b": "restored", "c": "up"}
    clock.t += 7  # b never came back
    reg2.expire()
    assert reg2.publish() and reg2.version == 4 and hosts(reg2) == ["a", "c"]


def test_version_never_repeats_even_without_the_state_file(tmp_path: Path) -> None:
    clock = Clock()
    reg = make(tmp_path / "lost", clock)  # the state file is gone: version starts from 0...
    reg.register(A, 41, fresh=False)  # ...but the node holds version 41 from before
    reg.publish()
    assert reg.version == 42


def test_same_list_again_is_not_a_new_version(tmp_path: Path) -> None:
    clock = Clock()
    reg = make(tmp_path / "s", clock)
    reg.register(A, 0, fresh=True)
    reg.publish()
    reg.leave("a", 1001)
    reg.register(A, 1, fresh=True)  # left and came back before anything was published
    assert not reg.publish() and reg.version == 1


def test_persist_failure_publishes_nothing_and_retries(tmp_path: Path) -> None:
    clock = Clock()
    fail = [True]

    def persist(path: Path, doc: ClusterDocument) -> None:
        if fail[0]:
            raise OSError(28, "No space left on device")
        save_state(path, doc)

    reg = Registry(tmp_path / "s", 10.0, clock, persist)
    reg.register(A, 0, fresh=True)
    with pytest.raises(OSError):
        reg.publish()
    assert reg.document() is None and reg.version == 0
    fail[0] = False
    assert reg.publish() and reg.version == 1


def test_state_file_is_the_document_and_corruption_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "s"
    doc = ClusterDocument.of(7, [A, B])
    save_state(state, doc)
    assert state.read_bytes() == doc.encode()
    assert oct(os.stat(state).st_mode & 0o777) == "0o644"
    assert load_state(tmp_path / "missing") is None
    state.write_bytes(b"7\nnot a node\n")
    with pytest.raises(StateError):
        Registry(state, 10.0, Clock())

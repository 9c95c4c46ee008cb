"""Config nodes on a real etcd: two of them serving one cluster, failover, an etcd restart,
lease expiry of a killed node, operator removal kept in etcd, and the version only rising.

Heartbeats every 0.2 s. The heartbeat timeout is 4 s, so a node starved of CPU on a loaded
machine is not removed where the test says nobody may be; the SIGKILL test uses 2 s (etcd's
minimum lease TTL) to check removal within the timeout + 1 s.
Every process is started here on loopback and stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import Certs
from cluster_procs import (
    HOST,
    config_get,
    ports_in,
    start_config_node,
    start_member,
    stats_of,
    wait_for,
)
from etcd_procs import Etcd
from procs import ROOT, ServerProc
from pymemcache.client.base import Client

from memcache_server.discovery.document import ClusterDocument

TIMEOUT = 4.0
SHORT_TIMEOUT = 2.0
INTERVAL = 0.2


class EtcdCluster:
    """An etcd, config nodes on it and cache nodes joined to them; ``close()`` stops all."""

    def __init__(self, tmp: Path, timeout: float = TIMEOUT) -> None:
        self.tmp = tmp
        self.timeout = timeout
        self.etcd = Etcd(tmp / "etcd")
        self.configs: list[ServerProc] = []
        self.nodes: list[ServerProc] = []

    def start_config(self, port: int = 0) -> ServerProc:
        cfg = start_config_node(
            None,
            "--etcd",
            self.etcd.url,
            "--cluster-name",
            "test",
            "--heartbeat-timeout",
            str(self.timeout),
            port=port,
        )
        self.configs.append(cfg)
        return cfg

    def join_arg(self) -> str:
        return ",".join(f"{HOST}:{c.port}" for c in self.configs)

    def add_node(self, join: str | None = None) -> ServerProc:
        node = start_member(join or self.join_arg(), INTERVAL, 0.5)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for p in self.nodes + self.configs:
            p.stop(timeout=10)
        self.etcd.stop()


@pytest.fixture
def ec(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``memcache-server ARGS`` to completion (bounded), output as text."""
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)


def doc_of(cfg: ServerProc) -> ClusterDocument | None:
    try:
        return config_get(cfg.port)
    except OSError:
        return None


def all_list(configs: list[ServerProc], expect: set[int]) -> list[ClusterDocument] | None:
    """The documents of every config node, once each lists exactly ``expect`` (else None)."""
    docs = [doc_of(c) for c in configs]
    if all(d is not None and ports_in(d) == expect for d in docs):
        return [d for d in docs if d is not None]
    return None


def test_two_config_nodes_publish_the_same_document(ec: EtcdCluster) -> None:
    a, b = ec.start_config(), ec.start_config()
    n1, n2 = ec.add_node(), ec.add_node()
    docs = wait_for("both nodes on both config nodes", lambda: all_list([a, b], {n1.port, n2.port}))
    assert docs[0] == docs[1]  # same version, same nodes, byte for byte the same document
    assert docs[0].encode() == docs[1].encode()
    # the cache nodes serve it too
    wait_for("n1 holds it", lambda: doc_of(n1) == docs[0])
    # a join reaches the other config node within a heartbeat (1 s by default) of the first
    n3 = ec.add_node(f"{HOST}:{a.port}")
    first = wait_for("n3 on a or b", lambda: [c for c in (a, b) if n3.port in ports_in(doc_of(c))])
    seen_first = time.monotonic()
    other = b if first[0] is a else a
    wait_for("n3 on the other", lambda: n3.port in ports_in(doc_of(other)), timeout=5)
    assert time.monotonic() - seen_first < 1.0
    assert doc_of(a) == doc_of(b)
    assert stats_of(a.port)["cluster_joins"] == stats_of(b.port)["cluster_joins"] == "3"


def test_failover_between_config_nodes_loses_no_member_and_no_request(ec: EtcdCluster) -> None:
    a, b = ec.start_config(), ec.start_config()
    nodes = [ec.add_node(), ec.add_node()]
    ports = {n.port for n in nodes}
    before = wait_for("both nodes listed", lambda: all_list([a, b], ports))[0]
    wait_for("heartbeats go to a", lambda: int(stats_of(a.port)["cluster_heartbeats"]) > 0)
    assert stats_of(b.port)["cluster_heartbeats"] == "0"

    errors: list[str] = []
    seen_versions: list[int] = []
    missing: list[ClusterDocument | None] = []
    stop = threading.Event()

    def traffic() -> None:  # a cache client working against the nodes all along
        clients = [Client((HOST, n.port), connect_timeout=2, timeout=2) for n in nodes]
        i = 0
        while not stop.is_set():
            c = clients[i % 2]
            try:
                c.set(f"k{i}", b"v", noreply=False)
                if c.get(f"k{i}") != b"v":
                    errors.append(f"k{i} not read back")
            except Exception as exc:
                errors.append(repr(exc))
            i += 1
            time.sleep(0.005)
        for c in clients:
            c.close()

    def watch_b() -> None:  # the surviving config node's document, polled all along
        while not stop.is_set():
            d = doc_of(b)
            if d is not None:
                seen_versions.append(d.version)
            if d is None or not ports <= ports_in(d):
                missing.append(d)
            time.sleep(0.05)

    threads = [threading.Thread(target=traffic), threading.Thread(target=watch_b)]
    for t in threads:
        t.start()
    try:
        a.stop(signal.SIGKILL)
        # longer than the heartbeat timeout: nodes that were on `a` must have moved to `b`
        time.sleep(TIMEOUT * 2)
        n3 = ec.add_node()  # its --join lists the dead config node too
        wait_for("n3 joins through b", lambda: n3.port in ports_in(doc_of(b)))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert missing == []
    assert seen_versions and seen_versions[0] >= before.version
    assert seen_versions == sorted(seen_versions)
    # the nodes were on `a` (listed first), failed, and moved to `b` without leaving
    for n in nodes:
        assert int(stats_of(n.port)["cluster_heartbeat_failures"]) >= 1
    assert int(stats_of(b.port)["cluster_heartbeats"]) > 0


def test_sigkilled_node_leaves_every_document_within_timeout_plus_1s(ec: EtcdCluster) -> None:
    ec.timeout = SHORT_TIMEOUT
    a, b = ec.start_config(), ec.start_config()
    stay, victim = ec.add_node(), ec.add_node()
    wait_for("both listed", lambda: all_list([a, b], {stay.port, victim.port}))
    victim.stop(signal.SIGKILL)
    killed = time.monotonic()
    gone = {}
    deadline = killed + SHORT_TIMEOUT + 10
    while len(gone) < 2 and time.monotonic() < deadline:
        for cfg in (a, b):
            if cfg.port not in gone and ports_in(doc_of(cfg)) == {stay.port}:
                gone[cfg.port] = time.monotonic() - killed
        time.sleep(0.02)
    assert len(gone) == 2, gone
    # the last heartbeat renewed the lease up to INTERVAL before the kill
    assert max(gone.values()) <= SHORT_TIMEOUT + 1.0, gone
    removals = stats_of(a.port)["cluster_removals"]
    assert removals == "1", (removals, gone)


def test_etcd_restart_removes_nobody_and_changes_resume(ec: EtcdCluster) -> None:
    a, b = ec.start_config(), ec.start_config()
    n1 = ec.add_node()
    doc = wait_for("n1 listed", lambda: all_list([a, b], {n1.port}))[0]
    wait_for("n1 holds it", lambda: doc_of(n1) == doc)
    ec.etcd.stop()
    # well past the heartbeat timeout: config nodes keep their document, the node keeps serving
    end = time.monotonic() + TIMEOUT * 2
    while time.monotonic() < end:
        assert doc_of(a) == doc and doc_of(b) == doc
        assert doc_of(n1) == doc
        time.sleep(0.2)
    c = Client((HOST, n1.port), connect_timeout=2, timeout=2)
    c.set("during", b"outage", noreply=False)
    assert c.get("during") == b"outage"
    c.close()
    ec.etcd.start()
    n2 = ec.add_node()
    after = wait_for("n2 joins after etcd is back", lambda: all_list([a, b], {n1.port, n2.port}))
    assert after[0].version > doc.version
    # and n1 was never dropped: still there a heartbeat timeout later
    time.sleep(TIMEOUT + 0.5)
    wait_for("both still listed", lambda: all_list([a, b], {n1.port, n2.port}))
    for cfg in (a, b):  # reading the prefix again after the outage counted nobody twice
        st = stats_of(cfg.port)
        assert (st["cluster_joins"], st["cluster_removals"]) == ("2", "0")


def test_version_rises_across_config_node_restarts(ec: EtcdCluster) -> None:
    a, b = ec.start_config(), ec.start_config()
    n1 = ec.add_node()
    v1 = wait_for("n1 listed", lambda: all_list([a, b], {n1.port}))[0].version
    for cfg in (a, b):  # restart both, one after the other, on the same ports
        port = cfg.port
        cfg.stop()
        ec.configs.remove(cfg)
        ec.start_config(port=port)
    a, b = ec.configs
    same = wait_for("restarted config nodes serve it", lambda: all_list([a, b], {n1.port}))
    assert [d.version for d in same] == [v1, v1]  # nothing changed: the same version
    n2 = ec.add_node()
    v2 = wait_for("n2 listed", lambda: all_list([a, b], {n1.port, n2.port}))[0].version
    assert v2 > v1
    n2.stop()  # a graceful leave
    v3 = wait_for("n2 left", lambda: all_list([a, b], {n1.port}))[0].version
    assert v3 > v2


def test_operator_removal_is_kept_in_etcd(ec: EtcdCluster) -> None:
    a, b = ec.start_config(), ec.start_config()
    n1, n2 = ec.add_node(), ec.add_node()
    wait_for("both listed", lambda: all_list([a, b], {n1.port, n2.port}))
    out = cli("cluster", "remove", "--config", f"{HOST}:{a.port}", f"{HOST}:{n2.port}")
    assert out.returncode == 0, out.stderr
    wait_for("n2 removed everywhere", lambda: all_list([a, b], {n1.port}))
    # n2 still heartbeats; restart both config nodes: the removal stands
    for cfg in list(ec.configs):
        port = cfg.port
        cfg.stop()
        ec.configs.remove(cfg)
        ec.start_config(port=port)
    time.sleep(TIMEOUT + 0.5)
    assert all_list(ec.configs, {n1.port})
    listing = cli("cluster", "nodes", "--config", f"{HOST}:{ec.configs[1].port}")
    assert f"{n2.port}  removed" in listing.stdout, listing.stdout


def test_config_node_on_etcd_over_tls_with_a_client_certificate(
    tmp_path: Path, certs: Certs
) -> None:
    etcd = Etcd(tmp_path / "etcd", certs)
    procs: list[ServerProc] = []
    try:
        tls = ["--etcd-cacert", str(certs.ca), "--etcd-cert", str(certs.client_cert)]
        tls += ["--etcd-key", str(certs.client_key)]
        cfg = start_config_node(None, "--etcd", etcd.url, *tls, "--heartbeat-timeout", "2")
        procs.append(cfg)
        node = start_member(f"{HOST}:{cfg.port}", INTERVAL, 0.5)
        procs.append(node)
        wait_for("the node listed", lambda: ports_in(doc_of(cfg)) == {node.port})
        # without the client certificate etcd refuses the config node: it never publishes
        bare = start_config_node(
            None, "--etcd", etcd.url, "--etcd-cacert", str(certs.ca), "--heartbeat-timeout", "2"
        )
        procs.append(bare)
        time.sleep(1.5)
        assert doc_of(bare) is None and stats_of(bare.port)["cluster_version"] == "0"
    finally:
        for p in procs:
            p.stop()
        etcd.stop()


def test_config_node_needs_a_state_file_or_etcd(tmp_path: Path) -> None:
    run = ("config-node", "-p", "0")
    neither = cli(*run)
    assert neither.returncode == 2
    assert "--state-file PATH" in neither.stderr and "--etcd URL" in neither.stderr
    both = cli(*run, "--state-file", str(tmp_path / "s"), "--etcd", "http://127.0.0.1:1")
    assert both.returncode == 2 and "not both" in both.stderr
    mixed = cli(*run, "--etcd", "https://e1:2379,http://e2:2379")
    assert mixed.returncode == 2 and "all http:// or all https://" in mixed.stderr
    cert_on_http = cli(*run, "--etcd", "http://e1", "--etcd-cacert", str(ROOT / "pyproject.toml"))
    assert cert_on_http.returncode == 2 and "need https://" in cert_on_http.stderr

"""The cluster across a real network: each node and the config node in a namespace of its own.

A bridge joins the hosts; the clients (our ``ClusterClient`` on pymemcache, and
django-elastipymemcache) run in the test process and reach them over a veth leg. Faults are real
packet filtering inside a host's namespace: a partitioned node, random packet loss (and netem
delay where the kernel has it), the config node cut off from the nodes, and a node that comes
back on a new IP under the same hostname. Throughout, the keys of the healthy nodes never see an
error, and a partitioned node is ejected after exactly the client's failure limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_procs import wait_for
from netns import PORT, Host, Lan, unavailable
from pymemcache.exceptions import MemcacheError
from reference import need_module, need_tool

from memcache_server.discovery.client import ClusterClient, fetch_document
from memcache_server.discovery.document import ClusterDocument, parse_document

HEARTBEAT_TIMEOUT = 3.0
FAILURE_LIMIT = 2


class Net:
    """The LAN: config node on .2, nodes a/b/c on .11-.13 (hostnames ``node-x.cache.test``)."""

    def __init__(self, tmp: Path) -> None:
        self.lan = Lan()
        self.tmp = tmp
        self.cfg = self.lan.add_host("cfg", 2, "config.cache.test")
        self.nodes = [
            self.lan.add_host(n, 11 + i, f"node-{n}.cache.test") for i, n in enumerate("abc")
        ]
        self.cfg.start(
            "--state-file",
            str(tmp / "cluster.state"),
            "--heartbeat-timeout",
            str(HEARTBEAT_TIMEOUT),
            config_node=True,
        )
        for host in self.nodes:
            self.start_node(host)

    @property
    def endpoint(self) -> str:
        return f"{self.cfg.ip}:{PORT}"

    def start_node(self, host: Host) -> None:
        host.start(
            "-t",
            "2",
            "-m",
            "16",
            "--join",
            self.endpoint,
            "--advertise",
            host.hostname,
            "--heartbeat-interval",
            "0.3",
            "--drain-seconds",
            "0.5",
        )

    def document(self, host: Host | None = None) -> ClusterDocument | None:
        """The document ``host`` (default: the config node) serves now, None if none/down."""
        where = host or self.cfg
        try:
            raw = fetch_document((where.ip, PORT), timeout=2.0)
        except OSError:
            return None
        return parse_document(raw) if raw else None

    def listed(self, host: Host | None = None) -> dict[str, str]:
        """hostname -> ip of the nodes in the document ``host`` serves."""
        doc = self.document(host)
        return {n.hostname: n.ip for n in doc.nodes} if doc else {}

    def healthy(self) -> None:
        """Wait until every node is listed at its current address."""
        want = {h.hostname: h.ip for h in self.nodes}
        wait_for("all nodes listed", lambda: self.listed() == want, timeout=30)

    def close(self) -> None:
        self.lan.close()


@pytest.fixture(scope="module")
def module_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    need_tool("ip", "apt-get install iproute2")
    need_tool("iptables", "apt-get install iptables")
    reason = unavailable()  # not root, or a kernel without network namespaces
    if reason is not None:
        pytest.skip(reason)
    net: Net | None = None
    try:
        net = Net(Path(tmp_path_factory.mktemp("netns")))
        net.healthy()
        yield net
    finally:
        if net is not None:
            net.close()


@pytest.fixture
def net(module_net: Net) -> Iterator[Net]:
    """The LAN with every node listed; every fault a test made is removed afterwards."""
    module_net.healthy()
    try:
        yield module_net
    finally:
        for host in module_net.lan.hosts:
            host.heal()


def cluster_client(net: Net, **kw: Any) -> ClusterClient:
    opts: dict[str, Any] = {
        "poll_interval": 30.0,
        "connect_timeout": 0.5,
        "timeout": 0.5,
        "failure_limit": FAILURE_LIMIT,
        "dead_timeout": 60.0,
    }
    opts.update(kw)
    return ClusterClient(net.endpoint, **opts)


def django_cache(net: Net, **options: Any) -> Any:
    """django-elastipymemcache's Django cache backend, on the config endpoint, unchanged."""
    need_module("django_elastipymemcache", "pip install django-elastipymemcache")
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django_elastipymemcache.backend import ElastiPymemcache

    opts = {"connect_timeout": 0.5, "timeout": 0.5, **options}
    return ElastiPymemcache(net.endpoint, {"KEY_PREFIX": "netns", "OPTIONS": opts})


def django_server(cache: Any, key: str) -> str:
    """The node (ip) django-elastipymemcache sends ``key`` to."""
    client = cache._cache._get_client(cache.make_and_validate_key(key))
    return str(client.server[0])


def sweep(client: ClusterClient, keys: dict[str, bytes], owners: dict[str, str]) -> dict[str, int]:
    """``get`` every key once; count errors per owner hostname and check every value read."""
    errors = {h: 0 for h in set(owners.values())}
    for key, value in keys.items():
        try:
            got = client.get(key)
        except (OSError, MemcacheError):
            errors[owners[key]] += 1
            continue
        assert got in (value, None), key  # a moved key may miss, never read another value
        if got is None:
            errors.setdefault("miss:" + owners[key], 0)
            errors["miss:" + owners[key]] += 1
    return errors


def test_partitioned_node_is_ejected_and_the_others_never_fail(net: Net) -> None:
    victim = net.nodes[1]
    keys = {f"part:{i}": b"value-%d" % i for i in range(300)}
    dj = django_cache(net)
    with cluster_client(net) as client:
        assert client.set_many(keys, expire=600) == []
        owners = {k: client.owner(k).hostname for k in keys}
        assert set(owners.values()) == {h.hostname for h in net.nodes}
        dj_keys = [f"dj-part:{i}" for i in range(60)]
        dj.set_many({k: k for k in dj_keys}, timeout=600)
        dj_healthy = [k for k in dj_keys if django_server(dj, k) != victim.ip]

        victim.partition()
        errors = sweep(client, keys, owners)
        # healthy nodes: not one error, not one miss
        for host in net.nodes:
            if host is not victim:
                assert errors[host.hostname] == 0 and f"miss:{host.hostname}" not in errors
        # the partitioned node: exactly failure_limit errors, then its keys go to successors
        assert errors[victim.hostname] == FAILURE_LIMIT
        assert client.stats().ejections == 1
        assert victim.hostname not in {n.hostname for n in client.live_nodes}
        assert (
            errors[f"miss:{victim.hostname}"]
            == list(owners.values()).count(victim.hostname) - FAILURE_LIMIT
        )
        # django-elastipymemcache keeps serving the healthy nodes' keys
        assert dj.get_many(dj_healthy) == {k: k for k in dj_healthy}
        assert victim.dropped() > 0  # packets really were dropped

        # the config node stops hearing it and publishes the cluster without it
        wait_for(
            "the victim removed",
            lambda: victim.hostname not in net.listed(),
            timeout=HEARTBEAT_TIMEOUT + 15,
        )
        assert client.poll() == "updated"
        assert {n.hostname for n in client.members} == {
            h.hostname for h in net.nodes if h is not victim
        }
    dj.close()
    victim.heal()
    net.healthy()  # heartbeats get through again: it is back in the document


def test_packet_loss_costs_time_not_errors(net: Net) -> None:
    lossy = net.nodes[0]
    keys = {f"loss:{i}": b"v%d" % i for i in range(120)}
    dj = django_cache(net, connect_timeout=5, timeout=5)
    with cluster_client(net, connect_timeout=5.0, timeout=5.0) as client:
        owners = {k: client.owner(k).hostname for k in keys}
        lossy.lose(0.05)
        for key, value in keys.items():
            assert client.set(key, value, expire=600)
        assert client.get_many(keys) == keys
        assert all(v == 0 for v in sweep(client, keys, owners).values())
        assert client.stats().ejections == 0
        dj.set_many({k: k for k in keys}, timeout=600)
        assert dj.get_many(list(keys)) == {k: k for k in keys}
    dj.close()
    assert lossy.dropped() > 0


def test_netem_delay_slows_one_node_without_errors(net: Net) -> None:
    slow = net.nodes[2]
    reason = slow.delay(80)
    if reason is not None:
        pytest.skip(reason)
    keys = {f"delay:{i}": b"v%d" % i for i in range(60)}
    with cluster_client(net, timeout=5.0, connect_timeout=5.0) as client:
        owners = {k: client.owner(k).hostname for k in keys}
        assert client.set_many(keys) == []
        for key, value in keys.items():
            started = time.monotonic()
            assert client.get(key) == value
            took = time.monotonic() - started
            if owners[key] == slow.hostname:
                assert took >= 0.08


def test_config_node_cut_off_nodes_keep_serving_the_last_document(net: Net) -> None:
    keys = {f"cut:{i}": b"v%d" % i for i in range(150)}
    dj = django_cache(net)
    with cluster_client(net, poll_interval=0.3) as client:
        assert client.set_many(keys, expire=600) == []
        owners = {k: client.owner(k).hostname for k in keys}
        before = client.version
        dj.set_many({k: k for k in keys}, timeout=600)

        net.cfg.cut_from(*net.nodes)
        # the config node hears no heartbeat and removes every node; the nodes keep the
        # document they had, and the clients keep using it
        wait_for("config node empty", lambda: not net.listed(), timeout=HEARTBEAT_TIMEOUT + 15)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # clients poll the endpoint and the nodes meanwhile
            assert all(v == 0 for v in sweep(client, keys, owners).values())
            assert dj.get_many(list(keys)) == {k: k for k in keys}
        # The client follows the config endpoint, which removes the nodes as each one's
        # heartbeats time out: it may publish two- and one-node documents on the way to an
        # empty one (which clients ignore). Whatever it published, the client's nodes are
        # some of the three, and it never failed a request above.
        live = {n.hostname for n in client.live_nodes}
        assert live and live <= {h.hostname for h in net.nodes}
        # Each node keeps serving a document it had: usually all three, but in some runs a
        # node already holds a two-node one when the cut lands (a removal published just
        # before it; not yet understood, see the cluster notes). Never an empty one.
        for host in net.nodes:
            kept = set(net.listed(host))
            assert kept and kept <= {h.hostname for h in net.nodes}
        assert net.cfg.dropped() > 0

        net.cfg.heal()
        net.healthy()  # heartbeats resume: every node is published again, in a newer version
        # (each returning node is published as it is heard: wait for the version with all)
        everyone = {h.hostname for h in net.nodes}
        wait_for(
            "the client on a newer version with every node",
            lambda: (
                (client.version or 0) > (before or 0)
                and {n.hostname for n in client.live_nodes} == everyone
            ),
            timeout=15,
        )
        assert all(v == 0 for v in sweep(client, keys, owners).values())
    dj.close()


def test_node_on_a_new_ip_keeps_its_hostname_and_its_keys_placement(net: Net) -> None:
    moving = net.nodes[2]
    old_ip = moving.ip
    keys = {f"move:{i}": b"v%d" % i for i in range(150)}
    dj = django_cache(net, discovery_interval=0.2)
    with cluster_client(net, poll_interval=0.3) as client:
        assert client.set_many(keys, expire=600) == []
        owners = {k: client.owner(k).hostname for k in keys}
        staying = {k: v for k, v in keys.items() if owners[k] != moving.hostname}

        moving.stop_all()  # a graceful stop: it leaves, then the host comes back elsewhere
        moving.readdress(net.lan.address(23))
        net.start_node(moving)
        while net.listed().get(moving.hostname) != moving.ip:
            errors = sweep(client, staying, owners)  # the other nodes serve on, error-free
            assert all(v == 0 for v in errors.values()), errors
        wait_for(
            "the client on the new address",
            lambda: any(n.ip == moving.ip for n in client.members),
            timeout=15,
        )
        # placement hashes the hostname: no key changed owner, the moved node's keys go to it
        assert {k: client.owner(k).hostname for k in keys} == owners
        assert all(n.ip != old_ip for n in client.members)
        assert client.set_many(keys, expire=600) == []
        assert client.get_many(keys) == keys

        wait_for(
            "django on the new address",
            lambda: f"{moving.ip}:{PORT}" in set(dj._cache.clients) and dj.get("probe") is None,
            timeout=15,
        )
        dj.set_many({k: k for k in keys}, timeout=600)
        assert dj.get_many(list(keys)) == {k: k for k in keys}
    dj.close()

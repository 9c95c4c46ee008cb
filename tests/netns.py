"""A private multi-host network for cluster tests: Linux network namespaces joined by a bridge.

``Lan`` builds, for one test module, a bridge in a namespace of its own ("lan") and one namespace
per host, each with a veth leg on the bridge and an address of its own in a private 10.200.x.0/24
range, plus one leg from the test's own (root) namespace so the clients in the test process reach
every host as over a real network. Faults are real packet filtering inside a host's namespace
(iptables): a partition, random loss, a cut between two hosts; ``tc netem`` delay only where the
kernel has the netem qdisc.

A host's hostname resolves inside its namespace through ``/etc/netns/<ns>/hosts`` (which ``ip
netns exec`` mounts over ``/etc/hosts``), so a node can advertise a hostname and have its own
IP published with it. Every namespace, link and hosts file made here is removed by ``close()``;
processes are started with ``ip netns exec`` (which execs, so the PID is the server's) and
stopped by that PID.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from procs import ROOT, ServerProc, wait_listening

IP = shutil.which("ip")
IPTABLES = shutil.which("iptables")
TC = shutil.which("tc")
NETNS_ETC = Path("/etc/netns")
PORT = 11211  # every host has an address of its own, so every server can use the standard port


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be used here (``None`` if they can): the one skip reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if IP is None or IPTABLES is None:
        return "network namespace tests need the ip and iptables commands"
    probe = f"mcprobe{secrets.token_hex(3)}"
    made = _run(IP, "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        ok = _run(IP, "netns", "exec", probe, IPTABLES, "-L", "INPUT", "-n", check=False)
        if ok.returncode != 0:
            return f"iptables does not work in a namespace: {ok.stderr.strip()}"
    finally:
        _run(IP, "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One host of the LAN: a namespace with ``eth0`` on the bridge and one address."""

    lan: Lan
    ns: str
    ip: str
    hostname: str
    procs: list[ServerProc] = field(default_factory=list)

    def sh(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace."""
        assert IP is not None
        return _run(IP, "netns", "exec", self.ns, *cmd, check=check)

    def iptables(self, *rule: str) -> None:
        assert IPTABLES is not None
        self.sh(IPTABLES, *rule)

    # ------------------------------------------------------------------ faults

    def partition(self) -> None:
        """Drop every packet in and out of ``eth0``: the host is cut off from everyone."""
        self.iptables("-I", "INPUT", "-i", "eth0", "-j", "DROP")
        self.iptables("-I", "OUTPUT", "-o", "eth0", "-j", "DROP")

    def cut_from(self, *peers: Host) -> None:
        """Drop traffic between this host and ``peers`` only (both directions)."""
        for peer in peers:
            self.iptables("-I", "INPUT", "-s", peer.ip, "-j", "DROP")
            self.iptables("-I", "OUTPUT", "-d", peer.ip, "-j", "DROP")

    def lose(self, probability: float) -> None:
        """Drop each packet arriving on and leaving ``eth0`` with ``probability``."""
        p = f"{probability:.4f}"
        for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self.iptables(
                "-I",
                chain,
                way,
                "eth0",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                p,
                "-j",
                "DROP",
            )

    def dropped(self) -> int:
        """Packets the DROP rules of this host have dropped so far (proof a fault was real)."""
        assert IPTABLES is not None
        total = 0
        for chain in ("INPUT", "OUTPUT"):
            out = self.sh(IPTABLES, "-L", chain, "-v", "-x", "-n").stdout
            for line in out.splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == "DROP" and fields[0].isdigit():
                    total += int(fields[0])
        return total

    def delay(self, ms: int) -> str | None:
        """Add ``ms`` of delay on ``eth0`` with netem; returns why not if the kernel cannot."""
        if TC is None:
            return "no tc command"
        done = self.sh(
            TC, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{ms}ms", check=False
        )
        return None if done.returncode == 0 else f"tc netem unavailable: {done.stderr.strip()}"

    def heal(self) -> None:
        """Remove every fault: filter rules and any netem qdisc."""
        assert IPTABLES is not None
        self.sh(IPTABLES, "-F")
        if TC is not None:
            self.sh(TC, "qdisc", "del", "dev", "eth0", "root", check=False)

    def readdress(self, ip: str) -> None:
        """Give the host a new IP (same hostname): the old address stops answering."""
        self.sh("ip", "addr", "flush", "dev", "eth0")
        self.sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.ip = ip
        self.lan.write_hosts(self)

    # ------------------------------------------------------------------ processes

    def start(self, *args: str, config_node: bool = False, timeout: float = 30.0) -> ServerProc:
        """Start ``cli.py`` (a cache node, or the config node) on this host's address, port
        11211, and wait until it accepts connections from the test's namespace."""
        assert IP is not None
        sub = ["config-node"] if config_node else []
        cmd = [IP, "netns", "exec", self.ns, sys.executable, str(ROOT / "cli.py"), *sub]
        cmd += ["-l", self.ip, "-p", str(PORT), *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        srv = ServerProc(proc, self.ip, PORT)
        self.procs.append(srv)
        try:
            wait_listening(self.ip, PORT, timeout)
        except OSError:
            srv.stop(timeout=5)
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{self.hostname} did not start: {err}") from None
        return srv

    def stop_all(self) -> None:
        for srv in self.procs:
            srv.stop(timeout=15)
        self.procs.clear()


class Lan:
    """A bridge and its hosts; ``close()`` removes all of it (call it from a finalizer)."""

    def __init__(self) -> None:
        assert IP is not None
        self.tag = secrets.token_hex(3)  # unique per LAN: names never clash with another run
        self.subnet = self._free_subnet()
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        self._root_links: list[str] = []
        self.lan_ns = self._namespace("lan")
        self._ip_ns(self.lan_ns, "link", "add", "br0", "type", "bridge")
        self._ip_ns(self.lan_ns, "link", "set", "br0", "up")
        # the test's own leg, .1: clients in the test process reach every host through it
        self.client_ip = self.address(1)
        leg = self._leg("r")
        self._root_links.append(leg)
        _run(IP, "addr", "add", f"{self.client_ip}/24", "dev", leg)
        _run(IP, "link", "set", leg, "up")

    @staticmethod
    def _free_subnet() -> str:
        used = _run("ip", "-4", "route", "show").stdout
        for third in (int.from_bytes(secrets.token_bytes(1), "big") for _ in range(64)):
            if f"10.200.{third}." not in used:
                return f"10.200.{third}"
        raise RuntimeError("no free 10.200.x.0/24 subnet")

    def address(self, last: int) -> str:
        return f"{self.subnet}.{last}"

    def _namespace(self, role: str) -> str:
        assert IP is not None
        name = f"mc{self.tag}{role}"
        _run(IP, "netns", "add", name)
        self._namespaces.append(name)
        return name

    @staticmethod
    def _ip_ns(ns: str, *args: str) -> None:
        assert IP is not None
        _run(IP, "-n", ns, *args)

    def _leg(self, role: str) -> str:
        """A veth pair: one end on the bridge, the other left in the root namespace (returned)
        for the caller to move. Names fit IFNAMSIZ and carry the LAN's tag."""
        assert IP is not None
        inner, outer = f"v{self.tag}{role}a", f"v{self.tag}{role}b"
        _run(IP, "link", "add", inner, "type", "veth", "peer", "name", outer)
        _run(IP, "link", "set", outer, "netns", self.lan_ns)
        self._ip_ns(self.lan_ns, "link", "set", outer, "master", "br0")
        self._ip_ns(self.lan_ns, "link", "set", outer, "up")
        return inner

    def add_host(self, role: str, last: int, hostname: str | None = None) -> Host:
        """A host with address ``<subnet>.<last>``, named ``hostname`` in its own hosts file."""
        assert IP is not None
        ns = self._namespace(role)
        leg = self._leg(role)
        _run(IP, "link", "set", leg, "netns", ns)
        self._ip_ns(ns, "link", "set", leg, "name", "eth0")
        self._ip_ns(ns, "addr", "add", f"{self.address(last)}/24", "dev", "eth0")
        self._ip_ns(ns, "link", "set", "eth0", "up")
        self._ip_ns(ns, "link", "set", "lo", "up")
        host = Host(self, ns, self.address(last), hostname or f"{role}.cache.test")
        self.hosts.append(host)
        self.write_hosts(host)
        return host

    def write_hosts(self, host: Host) -> None:
        """``/etc/hosts`` as seen inside ``host``: localhost and its own name -> its address."""
        path = NETNS_ETC / host.ns / "hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"127.0.0.1 localhost\n{host.ip} {host.hostname}\n")

    def close(self) -> None:
        """Stop every process by PID, then delete the links, namespaces and hosts files."""
        assert IP is not None
        for host in self.hosts:
            host.stop_all()
        for link in self._root_links:
            _run(IP, "link", "del", link, check=False)
        for ns in reversed(self._namespaces):
            _run(IP, "netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self._namespaces.clear()
        self._root_links.clear()

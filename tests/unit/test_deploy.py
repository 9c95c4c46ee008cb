"""deploy/kubernetes and the Dockerfile: every manifest is valid Kubernetes (kubernetes-validate's
bundled schemas, offline), every flag a manifest passes is one our command line accepts (parsed
and validated by click, no server started) or, for etcd, one etcd knows, and the Dockerfile
copies everything README's `pip install .` needs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from memcache_server.cli import _build_config, main
from memcache_server.discovery.commands import _etcd_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.30.0"  # a release operators run today; the schemas ship with the package


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def containers(image_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, doc in documents():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            if c["image"].split("/")[-1].startswith(image_prefix):
                found.append((f"{name}/{c['name']}", c))
    return found


def expand(args: list[str], env: list[dict[str, Any]]) -> list[str]:
    """Kubernetes' $(VAR) expansion, with a plausible value for each variable the pod defines."""
    values = {e["name"]: f"value-of-{e['name'].lower().replace('_', '-')}" for e in env}
    return [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in args]


def test_there_are_manifests_for_nodes_config_nodes_and_etcd() -> None:
    kinds = {name.split(":")[1] for name, _ in documents()}
    assert {
        "StatefulSet/memcache",
        "Service/memcache",
        "Deployment/memcache-config",
        "Service/memcache-config",
        "PodDisruptionBudget/memcache",
        "PodDisruptionBudget/memcache-config",
        "StatefulSet/etcd",
    } <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kv.validate(doc, K8S_VERSION, strict=True)  # raises on any error


def test_validation_rejects_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field is an error in strict mode."""
    kv = pytest.importorskip("kubernetes_validate")
    doc = dict(documents())["config-nodes.yaml:Deployment/memcache-config"]
    doc["spec"]["selectr"] = doc["spec"].pop("selector")
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, K8S_VERSION, strict=True)


def test_headless_service_gives_nodes_stable_names_they_advertise() -> None:
    docs = dict(documents())
    svc = docs["cache-nodes.yaml:Service/memcache"]
    sts = docs["cache-nodes.yaml:StatefulSet/memcache"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    [(_, node)] = containers("memcache-server")[:1]
    advertise = next(a for a in node["args"] if a.startswith("--advertise="))
    assert advertise == (
        "--advertise=$(POD_NAME).memcache.$(POD_NAMESPACE).svc.cluster.local:11211"
    )
    config = docs["config-nodes.yaml:Deployment/memcache-config"]
    assert config["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name,container", containers("memcache-server"), ids=lambda x: x)
def test_every_flag_is_accepted_by_the_command_line(name: str, container: dict[str, Any]) -> None:
    args = expand(container["args"], container.get("env", []))
    if args[0] == "config-node":
        parent = main.make_context("memcache-server", [])
        command = main.get_command(parent, "config-node")
        assert command is not None
        sub = command.make_context("config-node", args[1:], parent=parent)
        p = sub.params
        etcd = _etcd_settings(
            p["state_file"], p["etcd_urls"], p["cluster_name"], p["etcd_prefix"], 10.0
        )
        assert etcd is not None and len(etcd.endpoints) >= 1
    else:
        # memcached-style validation, as at start-up
        cfg = _build_config(main.make_context("memcache-server", list(args)).params)
        assert cfg.join and cfg.advertise and cfg.metrics_listen
    # the probes and the metrics annotation point at ports the container declares
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9150
    assert any(a.endswith(f":{ports['metrics']}") for a in args if "--metrics-listen" in a)


def test_a_bad_flag_in_a_manifest_would_be_caught() -> None:
    [(_, node)] = containers("memcache-server")[:1]
    args = [*expand(node["args"], node.get("env", [])), "--no-such-flag"]
    with pytest.raises(click.UsageError, match="No such option '--no-such-flag'"):
        main.make_context("memcache-server", args)


def test_scrape_annotations_match_the_metrics_port() -> None:
    for name, doc in documents():
        template = doc.get("spec", {}).get("template")
        if not template or "etcd" in name:
            continue
        ann = template["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/path"] == "/metrics"
        port = int(ann["prometheus.io/port"])
        [c] = template["spec"]["containers"]
        assert f"--metrics-listen=0.0.0.0:{port}" in c["args"]


def test_grace_period_covers_prestop_leave_and_drain() -> None:
    docs = dict(documents())
    pod = docs["cache-nodes.yaml:StatefulSet/memcache"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(next(a for a in c["args"] if a.startswith("--drain-seconds=")).split("=")[1])
    leave_worst = 5 * 2  # a leave tries each config node once, 5 s io timeout at most
    assert pod["terminationGracePeriodSeconds"] >= pause + leave_worst + drain
    for p in ("readinessProbe", "livenessProbe"):
        assert p in c


def test_etcd_flags_are_ones_etcd_knows() -> None:
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    known = subprocess.run([etcd, "--help"], capture_output=True, text=True, timeout=30)
    text = known.stdout + known.stderr
    [(_, c)] = containers("etcd")
    for arg in c["command"][1:]:
        flag = arg.split("=")[0]
        assert re.search(rf"^\s+{re.escape(flag)}\b", text, re.M), flag


def test_dockerfile_copies_what_pip_install_needs(tmp_path: Path) -> None:
    """Copy exactly what the Dockerfile copies, build the wheel `pip install .` would install,
    and check it holds the command and every package."""
    text = (ROOT / "Dockerfile").read_text()
    assert "RUN pip install --no-cache-dir ." in text
    ctx = tmp_path / "src"
    ctx.mkdir()
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for s in sources:
                target = ctx / dest / s if dest.endswith("/") else ctx / dest
                if (ROOT / s).is_dir():
                    # symlinks stay symlinks, as a container build copies them: their targets
                    # must be copied too
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(ROOT / s, target, symlinks=True, ignore=skip)
                else:
                    shutil.copy(ROOT / s, target)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "wheel"), str(ctx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "memcache_server/cli.py" in names
    for pkg in ("memcache_server", "memcache_server/discovery", "memcache_server/load"):
        assert f"{pkg}/__init__.py" in names
    assert "memcache_server/discovery/etcd_registry.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert "memcache-server = memcache_server.cli:main" in scripts
    assert "memcache-load = memcache_server.load.cli:main" in scripts

"""End to end: ``python -m memcache_server.load run`` for 2 s against a real memcached on
127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from procs import ROOT, start_memcached

pytestmark = pytest.mark.usefixtures("live_reference")


def _run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcache_server.load", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_against_memcached(tmp_path: Path) -> None:
    server = start_memcached("-m", "64", "-t", "2")
    try:
        out = tmp_path / "r.json"
        proc = _run(
            [
                "--server",
                f"127.0.0.1:{server.port}",
                "--workload",
                "get90",
                "--keys",
                "2000",
                "--prefill",
                "--duration",
                "2",
                "--procs",
                "1",
                "--connections",
                "4",
                "--pipeline",
                "4",
                "--loopback-only",
                "--json",
                str(out),
            ]
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
    finally:
        server.stop()
    assert result["schema"] == "load-result/1"
    tot = result["totals"]
    assert tot["errors_total"] == 0, tot["errors"]
    assert tot["ops"] > 0 and result["throughput_ops_s"] > 0
    assert tot["hits"] > 0 and tot["hit_ratio"] > 0.9  # prefilled
    assert tot["prefill"]["stored"] == 2000
    assert tot["gets"] + tot["sets"] == tot["ops"]
    lat = result["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert result["timeseries"] and result["timeseries"][0]["ops"] > 0
    assert "throughput" in proc.stdout


def test_loopback_only_refuses_before_connecting() -> None:
    proc = _run(["--server", "192.0.2.1:11211", "--loopback-only", "--duration", "1"])
    assert proc.returncode != 0
    assert "non-loopback" in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_closed_port_is_named_without_a_traceback() -> None:
    port = _closed_port()
    proc = _run(["--server", f"127.0.0.1:{port}", "--duration", "1", "--quiet"])
    assert proc.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_json_dash_writes_the_result_to_stdout(tmp_path: Path) -> None:
    server = start_memcached("-m", "16")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "memcache_server.load", "run"]
            + ["--server", f"127.0.0.1:{server.port}"]
            + ["--keys", "200", "--duration", "0.5", "--connections", "1", "--json", "-"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema"] == "load-result/1"
    assert "ops/s" in proc.stderr  # the human table moved to stderr
    assert not (tmp_path / "-").exists()

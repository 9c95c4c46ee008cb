"""Extract memcached_exporter's metric names, types and labels from its Go source into a fixture.

The metrics test compares a node's ``/metrics`` with what memcached_exporter itself defines, so
the reference must come from the exporter's source, not from our collector. Run from the project
root with the exporter's ``pkg/exporter/exporter.go`` at a release tag:

    git -C memcached_exporter show v0.16.0:pkg/exporter/exporter.go > /tmp/exporter.go
    python tests/extract_exporter_metrics.py /tmp/exporter.go v0.16.0

It writes ``tests/data/memcached_exporter.json``: per metric its full name, its types (from the
``prometheus.CounterValue``/``GaugeValue`` its emissions use: one, except where the exporter
emits one metric from two stats maps with two types), label names, and the stats fields it is
emitted from (``stats``, ``settings``, ``items`` or ``slabs``, the field, the type, and the field
that gates it: the exporter emits extstore and proxy metrics only when ``extstore_limit_maxbytes``
or ``proxy_backend_total`` is present, the LRU crawler's settings only when ``lru_crawler`` is
``yes``), so the test knows which metrics a server reporting those fields must expose.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "memcached_exporter.json"
REPO = "https://github.com/prometheus/memcached_exporter"
SOURCE = "pkg/exporter/exporter.go"

_CONSTS = re.compile(r'^\s*(\w+)\s*=\s*"([^"]*)"', re.MULTILINE)
_DESC = re.compile(
    r"(\w+): prometheus\.NewDesc\(\s*prometheus\.BuildFQName\((\w+), (\"[^\"]*\"|\w+), "
    r"\"([^\"]+)\"\),\s*\"(?:[^\"\\]|\\.)*\",\s*(nil|\[\]string\{([^}]*)\})",
)
# e.parseAndNewMetric(ch, e.uptime, prometheus.CounterValue, s, "uptime") and the bool and
# timeval variants; op+"_hits" style keys keep their suffix only
_EMIT = re.compile(
    r"parse\w*AndNewMetric\(ch, e\.(\w+), prometheus\.(Counter|Gauge)Value, (\w+), "
    r"(\w+\+)?\"(\w+)\""
)
_CONST_METRIC = re.compile(r"MustNewConstMetric\(e\.(\w+), prometheus\.(Counter|Gauge)Value")
# the per-class maps: "evicted": e.itemsEvicted, inside itemsCounterMetrics / itemsGaugeMetrics
_MAP = re.compile(r"items(Counter|Gauge)Metrics := map\[string\]\*prometheus\.Desc\{([^}]*)\}")
_MAP_ENTRY = re.compile(r"\"(\w+)\":\s*e\.(\w+)")
# which stats map each variable holds in the exporter's loops
_SOURCES = {"s": "stats", "u": "items", "v": "slabs", "settings": "settings"}
# if _, ok := s["proxy_backend_total"]; ok {
# if v, ok := settings["lru_crawler"]; ok && v == "yes" {
_GATE = re.compile(r'if \w+, ok := (\w+)\["(\w+)"\]; ok(?: && \w+ == "(\w+)")? \{')
Source = tuple[str, str, str, tuple[str, ...]]


def _gated_lines(go: str) -> list[tuple[str, tuple[str, ...]]]:
    """Each line with the innermost gate around it: (map, field[, value]) or ()."""
    out: list[tuple[str, tuple[str, ...]]] = []
    depth = 0
    gates: list[tuple[int, tuple[str, ...]]] = []
    for line in go.splitlines():
        m = _GATE.search(line)
        if m:
            var, key, value = m.groups()
            gates.append((depth, (_SOURCES[var], key, *([value] if value else []))))
        out.append((line, gates[-1][1] if gates else ()))
        depth += line.count("{") - line.count("}")
        while gates and depth <= gates[-1][0]:
            gates.pop()
    return out


def extract(go: str) -> dict[str, dict[str, object]]:
    consts = dict(_CONSTS.findall(go))
    fields: dict[str, tuple[str, list[str]]] = {}
    for field, ns, sub, name, _, labels in _DESC.findall(go):
        sub = consts.get(sub, sub.strip('"'))
        full = "_".join(part for part in (consts[ns], sub, name) if part)
        fields[field] = (full, re.findall(r'"([^"]+)"', labels))
    types: dict[str, set[str]] = {}
    sources: dict[str, set[Source]] = {}
    for line, gate in _gated_lines(go):
        for field, kind, var, op, key in _EMIT.findall(line):
            key = "*" + key if op else key  # op+"_hits": every field that ends so
            types.setdefault(field, set()).add(kind.lower())
            sources.setdefault(field, set()).add((_SOURCES[var], key, kind.lower(), gate))
    for field, kind in _CONST_METRIC.findall(go):
        types.setdefault(field, set()).add(kind.lower())
    for kind, body in _MAP.findall(go):
        for key, field in _MAP_ENTRY.findall(body):
            types.setdefault(field, set()).add(kind.lower())
            sources.setdefault(field, set()).add(("items", key, kind.lower(), ()))
    out: dict[str, dict[str, object]] = {}
    for field, (full, labels) in sorted(fields.items(), key=lambda kv: kv[1][0]):
        kinds = types.get(field, set())
        if not kinds:
            raise SystemExit(f"{full}: defined but never emitted (has the source changed shape?)")
        out[full] = {
            "types": sorted(kinds),
            "labels": labels,
            "from": [
                {"map": m, "field": f, "type": t, "when": list(g)}
                for m, f, t, g in sorted(sources.get(field, set()))
            ],
        }
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    go_path, release = argv
    metrics = extract(Path(go_path).read_text())
    doc = {
        "exporter": REPO,
        "release": release,
        "source": f"{REPO}/blob/{release}/{SOURCE}",
        "extracted_with": "python tests/extract_exporter_metrics.py exporter.go " + release,
        "metrics": metrics,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(metrics)} metrics from memcached_exporter {release} -> {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Transcripts: the pinned memcached's replies to the differential corpora, committed.

Why: the differential tests must compare against memcached 1.6.18 on every machine, including
one whose distribution ships another release or none. Each corpus's replies are recorded once
from 1.6.18 (``python tests/record_transcripts.py``) and compared against when the live
reference is not there (see ``reference.live_memcached``). Where it is there, the tests also
check that the live replies still equal the transcripts, so a stale transcript cannot hide.

Replies are stored normalised (every comparison happens after normalisation), one list of
step replies per case, as latin-1 text in JSON so a re-recording reads as a diff. A corpus whose
replies are large (the slab workload's pipelines) is stored gzipped.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from reference import PINNED_VERSION

DIR = Path(__file__).resolve().parent / "data" / "transcripts"
RECORD_COMMAND = "python tests/record_transcripts.py"
GZIP_ABOVE = 256 * 1024  # bytes of JSON


class TranscriptError(AssertionError):
    """A transcript is missing, was recorded from another release, or lacks a case."""


def _path(corpus: str) -> Path:
    plain = DIR / f"{corpus}.json"
    return plain if plain.exists() else DIR / f"{corpus}.json.gz"


@functools.cache
def load(corpus: str) -> dict[str, list[bytes]]:
    """Case name -> normalised step replies, as recorded from the pinned memcached (read once,
    when a test first needs it, so the recording script can import the test modules)."""
    path = _path(corpus)
    if not path.exists():
        raise TranscriptError(f"no transcript for the {corpus} corpus: run {RECORD_COMMAND}")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    doc = json.loads(raw)
    if doc["memcached"] != PINNED_VERSION:
        raise TranscriptError(
            f"{path.name} was recorded from memcached {doc['memcached']}, "
            f"the reference is {PINNED_VERSION}: run {RECORD_COMMAND}"
        )
    return {name: [r.encode("latin-1") for r in steps] for name, steps in doc["cases"].items()}


def expected(corpus: str, name: str) -> list[bytes]:
    """One case's recorded replies; a case added to the corpus after recording fails loudly."""
    try:
        return load(corpus)[name]
    except KeyError:
        raise TranscriptError(
            f"case {name!r} is not in the {corpus} transcript: run {RECORD_COMMAND}"
        ) from None


def save(corpus: str, cases: Mapping[str, Sequence[bytes]], version: str) -> Path:
    """Write a corpus's transcript (the recording script's half)."""
    doc = {
        "memcached": version,
        "recorded_with": RECORD_COMMAND,
        "cases": {name: [r.decode("latin-1") for r in cases[name]] for name in sorted(cases)},
    }
    text = json.dumps(doc, indent=1, ensure_ascii=True).encode() + b"\n"
    DIR.mkdir(parents=True, exist_ok=True)
    for stale in (DIR / f"{corpus}.json", DIR / f"{corpus}.json.gz"):
        stale.unlink(missing_ok=True)
    if len(text) > GZIP_ABOVE:
        path = DIR / f"{corpus}.json.gz"
        path.write_bytes(gzip.compress(text, mtime=0))
    else:
        path = DIR / f"{corpus}.json"
        path.write_bytes(text)
    return path

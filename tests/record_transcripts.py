"""Record the pinned memcached's replies to the differential corpora into tests/data/transcripts.

Run from the project root on a machine where ``memcached -V`` says the pinned release:

    python tests/record_transcripts.py            # every corpus
    python tests/record_transcripts.py meta       # one corpus (classic, meta, slabs)

Each case is replayed exactly as the differential tests replay it (same servers, same
arguments, same reading and normalisation: the functions are the tests' own), on memcached
alone. Every corpus is recorded twice and the two recordings must agree, so a transcript never
holds a reply that depends on timing.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "integration"), str(HERE.parent)]

import test_differential as classic  # noqa: E402
import test_differential_slabs as slabs  # noqa: E402
import test_meta_differential as meta  # noqa: E402
import transcripts  # noqa: E402
from differential_corpus import Case, flush, normalise, start_reference  # noqa: E402
from meta_corpus import normalise_meta  # noqa: E402
from procs import ServerProc  # noqa: E402
from reference import PINNED_VERSION, memcached_version  # noqa: E402


def _record_cases(
    cases: list[Case], replay: Callable[[ServerProc, Case], list[bytes]]
) -> dict[str, list[bytes]]:
    """Raw replies per case: shared cases on one flushed memcached, fresh ones each on their own
    (started with the case's arguments), as in the tests."""
    out: dict[str, list[bytes]] = {}
    shared = start_reference()
    try:
        for c in cases:
            if c.fresh:
                srv = start_reference(*c.server_args)
                try:
                    out[c.name] = replay(srv, c)
                finally:
                    srv.stop(signal.SIGKILL)
            else:
                if shared.proc.poll() is not None:
                    shared = start_reference()
                flush(shared)
                out[c.name] = replay(shared, c)
    finally:
        shared.stop(signal.SIGKILL)
    return out


def record_classic() -> dict[str, list[bytes]]:
    raw = _record_cases(classic.CASES, classic._replay)
    return {name: normalise(replies) for name, replies in raw.items()}


def record_meta() -> dict[str, list[bytes]]:
    raw = _record_cases(meta.CASES, meta.replay_on)
    return {name: normalise_meta(replies) for name, replies in raw.items()}


def record_slabs() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for config, args in slabs.CONFIGS.items():
        srv = start_reference(*args)
        try:
            out[config] = slabs.replies(srv)
        finally:
            srv.stop(signal.SIGKILL)
    return out


RECORDERS: dict[str, Callable[[], dict[str, list[bytes]]]] = {
    "classic": record_classic,
    "meta": record_meta,
    "slabs": record_slabs,
}


def main(argv: list[str]) -> int:
    version = memcached_version()
    if version != PINNED_VERSION:
        print(f"memcached -V says {version}; transcripts are recorded from {PINNED_VERSION}")
        return 1
    for corpus in argv or list(RECORDERS):
        first, second = RECORDERS[corpus](), RECORDERS[corpus]()
        unstable = sorted(name for name in first if first[name] != second.get(name))
        if unstable:
            print(f"{corpus}: replies differ between two recordings: {unstable}")
            return 1
        path = transcripts.save(corpus, first, version)
        print(f"{corpus}: {len(first)} cases -> {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

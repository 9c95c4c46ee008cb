"""Differential corpus for the memcached text protocol, and the rules for replaying it.

Every case is a raw request byte stream. The differential tests send it, unchanged, to a real
memcached and to our node, and compare the replies after :func:`normalise`. No case carries an
expected reply: what real memcached answers *is* the expectation, so the corpus can never drift
from the reference behaviour through a hand-written typo.

The module also holds the reading and normalisation code because both ``test_differential.py``
and ``test_differential_slabs.py`` need exactly the same rules (a rule that differs between the
two would make one of them lie).

Reading strategy (why it is fast and still exact): after a step's bytes we append a ``version``
sentinel in the same write and read until the sentinel's ``VERSION`` line arrives. ``version``
touches no stats counter, so the sentinel changes nothing that a later ``stats`` could see.
Steps whose bytes would swallow the sentinel (an unterminated line, an unfinished data block,
binary protocol) disable it and are read until the peer is quiet for a short time or closes.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from procs import ServerProc, start_memcached

CRLF = b"\r\n"
SENTINEL = b"version\r\n"
EOF_MARK = b"<EOF>"

# Quiet periods. A step with a sentinel ends at the sentinel, so its quiet period only matters when
# the sentinel is swallowed (never for memcached) and can be long: a loaded 2-core machine has been
# seen to stall a server for several hundred ms, which a short value would turn into a truncated
# reply. Steps without a sentinel (binary protocol, unfinished data) pay their quiet period on
# every run, so theirs is shorter, yet still well above scheduler hiccups.
QUIET_NO_SENTINEL = 0.3
QUIET_WITH_SENTINEL = 3.0
MAX_WAIT = 8.0


@dataclass(frozen=True)
class Step:
    """One write-then-read exchange of a case.

    ``chunks`` are written one after another with ``pause`` seconds between them (split writes
    exercise the server's incremental parser). ``{cas:N}`` or ``{cas:N+D}`` inside a chunk is
    replaced by the N-th distinct CAS unique this server returned earlier in the case (plus D):
    CAS values differ between servers, so a literal one could not test a successful ``cas``.
    """

    chunks: tuple[bytes, ...]
    pause: float = 0.0
    sentinel: bool = True


@dataclass(frozen=True)
class Case:
    """A named request stream; ``fresh`` cases get their own newly started server pair.

    Fresh pairs are for cases whose replies depend on global state that the shared pair would
    carry from case to case (stats counters, settings such as verbosity or the memory limit,
    delayed flushes) and for cases that may take a non-conforming server down.
    """

    name: str
    steps: tuple[Step, ...]
    fresh: bool = False
    server_args: tuple[str, ...] = field(default_factory=tuple)


def _step(data: bytes | Sequence[bytes], pause: float, sentinel: bool | None) -> Step:
    chunks = (data,) if isinstance(data, bytes) else tuple(data)
    if sentinel is None:
        # A sentinel appended to an unterminated line would become part of that line.
        sentinel = chunks[-1].endswith(b"\n")
    return Step(chunks, pause, sentinel)


def case(
    name: str,
    data: bytes | Sequence[bytes],
    *,
    pause: float = 0.02,
    sentinel: bool | None = None,
    fresh: bool = False,
    server_args: Sequence[str] = (),
) -> Case:
    """A single-step case; ``data`` is one write or a list of writes."""
    return Case(name, (_step(data, pause, sentinel),), fresh, tuple(server_args))


def steps(
    name: str,
    *parts: bytes | Sequence[bytes],
    sentinel: bool | None = None,
    fresh: bool = False,
    server_args: Sequence[str] = (),
) -> Case:
    """A multi-step case: each part is sent and fully read before the next one is templated."""
    return Case(name, tuple(_step(p, 0.02, sentinel) for p in parts), fresh, tuple(server_args))


def setcmd(
    key: bytes, value: bytes, flags: int = 0, exptime: int = 0, cmd: bytes = b"set"
) -> bytes:
    """A well-formed storage command with its data block."""
    return b"%s %s %d %d %d\r\n%s\r\n" % (cmd, key, flags, exptime, len(value), value)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

K250 = b"k" * 250
K251 = b"k" * 251
HUNDRED_KEYS = [b"key:%03d" % i for i in range(100)]
LONG_GET_KEYS = [b"longkey-%04d-%s" % (i, b"x" * 20) for i in range(80)]  # > 2048 byte line
PAST_ABSOLUTE = 1_000_000_000  # 2001: > 30 days, so absolute and already in the past
FUTURE_ABSOLUTE = 4_102_444_800  # 2100


def _storage_cases() -> list[Case]:
    return [
        case("set_get", setcmd(b"a", b"hello") + b"get a\r\n"),
        case("set_flags_get", setcmd(b"a", b"v", flags=123) + b"get a\r\n"),
        case("set_zero_length", b"set a 0 0 0\r\n\r\nget a\r\n"),
        case("set_value_with_crlf_inside", setcmd(b"a", b"x\r\ny\r\n") + b"get a\r\n"),
        case("set_value_binary_bytes", setcmd(b"a", bytes(range(256))) + b"get a\r\n"),
        case("set_overwrite", setcmd(b"a", b"one") + setcmd(b"a", b"two", 7) + b"get a\r\n"),
        case("add_new", setcmd(b"a", b"v", cmd=b"add") + b"get a\r\n"),
        case("add_existing", setcmd(b"a", b"v") + setcmd(b"a", b"w", cmd=b"add") + b"get a\r\n"),
        case("replace_missing", setcmd(b"a", b"v", cmd=b"replace") + b"get a\r\n"),
        case(
            "replace_existing",
            setcmd(b"a", b"v") + setcmd(b"a", b"w", 3, cmd=b"replace") + b"get a\r\n",
        ),
        case(
            "append_existing",
            setcmd(b"a", b"mid", 5) + setcmd(b"a", b"end", 9, cmd=b"append") + b"get a\r\n",
        ),
        case(
            "prepend_existing",
            setcmd(b"a", b"mid", 5) + setcmd(b"a", b"pre", 9, cmd=b"prepend") + b"get a\r\n",
        ),
        case("append_missing", setcmd(b"a", b"x", cmd=b"append") + b"get a\r\n"),
        case("prepend_missing", setcmd(b"a", b"x", cmd=b"prepend") + b"get a\r\n"),
        case(
            "append_keeps_exptime_of_original",
            setcmd(b"a", b"x", exptime=-1) + setcmd(b"a", b"y", cmd=b"append") + b"get a\r\n",
        ),
        case("flags_max_u32", b"set a 4294967295 0 1\r\nx\r\nget a\r\n"),
        case("flags_2_pow_32", b"set a 4294967296 0 1\r\nx\r\nget a\r\n"),
        case("flags_negative", b"set a -1 0 1\r\nx\r\nget a\r\n"),
        case("flags_junk", b"set a abc 0 1\r\nx\r\nget a\r\n"),
        case("flags_trailing_junk", b"set a 12x 0 1\r\nx\r\nget a\r\n"),
        case("flags_hex", b"set a 0x10 0 1\r\nx\r\nget a\r\n"),
        case("flags_huge", b"set a 99999999999999999999999 0 1\r\nx\r\nget a\r\n"),
        case("exptime_negative_expires", b"set a 0 -1 1\r\nx\r\nget a\r\n"),
        case("exptime_junk", b"set a 0 soon 1\r\nx\r\nget a\r\n"),
        case("exptime_huge", b"set a 0 99999999999 1\r\nx\r\nget a\r\n"),
        case("exptime_int_min", b"set a 0 -2147483648 1\r\nx\r\nget a\r\n"),
        case("exptime_absolute_past", setcmd(b"a", b"x", exptime=PAST_ABSOLUTE) + b"get a\r\n"),
        case("exptime_absolute_future", setcmd(b"a", b"x", exptime=FUTURE_ABSOLUTE) + b"get a\r\n"),
        case("exptime_30_days_relative", setcmd(b"a", b"x", exptime=2592000) + b"get a\r\n"),
        case("exptime_30_days_plus_1", setcmd(b"a", b"x", exptime=2592001) + b"get a\r\n"),
        case("bytes_negative", b"set a 0 0 -1\r\nget a\r\n"),
        case("bytes_junk", b"set a 0 0 one\r\nx\r\nget a\r\n"),
        case("bytes_2_pow_31", b"set a 0 0 2147483648\r\nget a\r\n"),
        case("bytes_2_pow_31_minus_1", b"set a 0 0 2147483647\r\n", sentinel=False),
        case("bytes_2_pow_32", b"set a 0 0 4294967296\r\n", sentinel=False),
        case("bytes_2_pow_32_then_data", b"set a 0 0 4294967296\r\nx\r\nget a\r\n", sentinel=False),
        case(
            "value_too_large",
            b"set big 0 0 1048577\r\n" + b"z" * 1048577 + b"\r\nget big\r\n",
        ),
        case(
            "value_exactly_item_max",
            b"set big 0 0 1048576\r\n" + b"z" * 1048576 + b"\r\nget big\r\n",
        ),
        case(
            "value_large_fits",
            b"set big 0 0 1000000\r\n" + b"z" * 1000000 + b"\r\nget big\r\n",
        ),
        case(
            "value_too_large_set_unlinks_old_value",
            setcmd(b"big", b"small")
            + b"set big 0 0 2000000\r\n"
            + b"z" * 2000000
            + b"\r\nget big\r\n",
        ),
        case("data_chunk_too_long", b"set a 0 0 1\r\nab\r\nget a\r\n"),
        case("data_chunk_bare_lf_terminator", b"set a 0 0 1\r\nx\nget a\r\n"),
        case("data_chunk_missing_terminator", b"set a 0 0 1\r\nxyz\r\nget a\r\n"),
        case("data_chunk_incomplete", b"set a 0 0 10\r\nabc", sentinel=False),
        case("data_chunk_incomplete_line", b"set a 0 0 10\r\nabc\r\n", sentinel=False),
        case("set_too_few_tokens", b"set a 0 0\r\nget a\r\n"),
        case("set_only_command", b"set\r\n"),
        case("set_too_many_tokens", b"set a 0 0 1 noreply extra\r\nx\r\nget a\r\n"),
        case("set_junk_instead_of_noreply", b"set a 0 0 1 junk\r\nx\r\nget a\r\n"),
        case("add_too_few_tokens", b"add a 0\r\n"),
        case("key_250_bytes", setcmd(K250, b"v") + b"get " + K250 + CRLF),
        case("key_251_bytes_set", setcmd(K251, b"v") + b"get a\r\n"),
        case("key_251_bytes_add", setcmd(K251, b"v", cmd=b"add")),
        case("key_251_bytes_append", setcmd(K251, b"v", cmd=b"append")),
        case("key_with_control_chars", setcmd(b"a\x01b\x7f", b"v") + b"get a\x01b\x7f\r\n"),
        case("key_with_0x1c_0x1f", setcmd(b"\x1c\x1d\x1e\x1f", b"v") + b"get \x1c\x1d\x1e\x1f\r\n"),
        case("key_with_high_bytes", setcmd(b"\x80\xfe\xff", b"v") + b"get \x80\xfe\xff\r\n"),
        case("key_utf8", setcmd("ключ".encode(), b"v") + "get ключ\r\n".encode()),
        case("key_with_nul", setcmd(b"a\x00b", b"v") + b"get a\x00b\r\nget a\r\n"),
        case("key_with_tab", setcmd(b"a\tb", b"v") + b"get a\tb\r\nget a\r\n"),
        case("key_with_cr_inside", setcmd(b"a\rb", b"v") + b"get a\rb\r\n"),
        case(
            "key_250_utf8_bytes",
            setcmd("é".encode() * 125, b"v") + b"get " + "é".encode() * 125 + CRLF,
        ),
    ]


def _noreply_cases() -> list[Case]:
    return [
        case("set_noreply", b"set a 0 0 1 noreply\r\nx\r\nget a\r\n"),
        case("add_noreply_new", b"add a 0 0 1 noreply\r\nx\r\nget a\r\n"),
        case("add_noreply_existing", setcmd(b"a", b"x") + b"add a 0 0 1 noreply\r\ny\r\nget a\r\n"),
        case("replace_noreply_missing", b"replace a 0 0 1 noreply\r\nx\r\nget a\r\n"),
        case(
            "replace_noreply_existing",
            setcmd(b"a", b"x") + b"replace a 0 0 1 noreply\r\ny\r\nget a\r\n",
        ),
        case("append_noreply", setcmd(b"a", b"x") + b"append a 0 0 1 noreply\r\ny\r\nget a\r\n"),
        case("prepend_noreply", setcmd(b"a", b"x") + b"prepend a 0 0 1 noreply\r\ny\r\nget a\r\n"),
        case("append_noreply_missing", b"append a 0 0 1 noreply\r\ny\r\nget a\r\n"),
        steps(
            "cas_noreply",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 0 0 1 {cas:0} noreply\r\ny\r\ncas a 0 0 1 {cas:0} noreply\r\nz\r\ngets a\r\n",
        ),
        case("cas_noreply_missing", b"cas a 0 0 1 1 noreply\r\ny\r\nget a\r\n"),
        case("delete_noreply", setcmd(b"a", b"x") + b"delete a noreply\r\nget a\r\n"),
        case("delete_noreply_missing", b"delete a noreply\r\nget a\r\n"),
        case("incr_noreply", setcmd(b"a", b"5") + b"incr a 3 noreply\r\nget a\r\n"),
        case("decr_noreply", setcmd(b"a", b"5") + b"decr a 3 noreply\r\nget a\r\n"),
        case("incr_noreply_missing", b"incr a 3 noreply\r\nget a\r\n"),
        case("incr_noreply_non_numeric", setcmd(b"a", b"x") + b"incr a 3 noreply\r\nget a\r\n"),
        case("incr_noreply_bad_delta", setcmd(b"a", b"1") + b"incr a z noreply\r\nget a\r\n"),
        case("touch_noreply", setcmd(b"a", b"x") + b"touch a -1 noreply\r\nget a\r\n"),
        case("touch_noreply_missing", b"touch a 10 noreply\r\nget a\r\n"),
        case("flush_all_noreply", setcmd(b"a", b"x") + b"flush_all noreply\r\nget a\r\n"),
        case("flush_all_0_noreply", setcmd(b"a", b"x") + b"flush_all 0 noreply\r\nget a\r\n"),
        case("set_noreply_bad_data_chunk", b"set a 0 0 1 noreply\r\nxy\r\nget a\r\n"),
        case("set_noreply_bad_flags", b"set a x 0 1 noreply\r\ny\r\nget a\r\n"),
        case(
            "set_noreply_too_large",
            b"set a 0 0 2000000 noreply\r\n" + b"z" * 2000000 + b"\r\nget a\r\n",
        ),
        case("set_noreply_key_too_long", b"set " + K251 + b" 0 0 1 noreply\r\nx\r\nget a\r\n"),
        case("noreply_misspelled", b"set a 0 0 1 NOREPLY\r\nx\r\nget a\r\n"),
        case("get_with_noreply_token", setcmd(b"a", b"x") + b"get a noreply\r\n"),
        case(
            "noreply_pipeline",
            b"set a 0 0 1 noreply\r\n1\r\nincr a 9 noreply\r\nappend a 0 0 1 noreply\r\n0\r\n"
            b"prepend a 0 0 1 noreply\r\n7\r\ndecr a 1 noreply\r\nget a\r\n",
        ),
    ]


def _retrieval_cases() -> list[Case]:
    stored = b"".join(setcmd(k, b"val-" + k, i) for i, k in enumerate(HUNDRED_KEYS))
    long_stored = b"".join(setcmd(k, b"v") for k in LONG_GET_KEYS[::2])
    long_get = b"get " + b" ".join(LONG_GET_KEYS) + CRLF
    assert len(long_get) > 2048
    return [
        case("get_miss", b"get nothere\r\n"),
        case("gets_miss", b"gets nothere\r\n"),
        case(
            "get_multi_partial_hits", setcmd(b"a", b"1") + setcmd(b"c", b"3") + b"get a b c d\r\n"
        ),
        case("get_duplicate_keys", setcmd(b"a", b"1") + b"get a a a\r\n"),
        case("gets_multi", setcmd(b"a", b"1") + setcmd(b"b", b"2") + b"gets a b a\r\n"),
        case("get_100_keys", stored + b"get " + b" ".join(HUNDRED_KEYS) + CRLF),
        case("gets_100_keys", stored + b"gets " + b" ".join(HUNDRED_KEYS) + CRLF),
        case("get_line_over_2048_one_write", long_stored + long_get),
        case(
            "get_line_over_2048_split_write",
            [long_stored + long_get[:2100], long_get[2100:]],
            pause=0.05,
        ),
        case(
            "gets_line_over_2048_split_write",
            [long_stored + b"gets" + long_get[3:2100], long_get[2100:]],
            pause=0.05,
        ),
        case("get_no_key", b"get\r\n"),
        case("get_no_key_trailing_space", b"get \r\n"),
        case("gets_no_key", b"gets\r\n"),
        case("get_key_251", b"get " + K251 + b"\r\n"),
        steps("get_key_251_among_others", setcmd(b"a", b"1"), b"get a " + K251 + b" a\r\n"),
        # memcached quirk: a multi-get that fails on a too-long key discards every reply still
        # queued on the connection, here the STORED of the set in the same read batch.
        case("get_key_251_drops_queued_replies", setcmd(b"a", b"1") + b"get a " + K251 + CRLF),
        case("get_trailing_space", setcmd(b"a", b"1") + b"get a \r\n"),
        case(
            "get_double_space_between_keys",
            setcmd(b"a", b"1") + setcmd(b"b", b"2") + b"get a  b\r\n",
        ),
        case("get_many_spaces", setcmd(b"a", b"1") + b"get      a     \r\n"),
        case("get_tab_separated", setcmd(b"a", b"1") + b"get\ta\r\nget a\tb\r\n"),
        case("get_cr_in_key", setcmd(b"a", b"1") + b"get a\r\r\n"),
        case("get_30_keys_tokens_limit", b"get " + b" ".join(b"t%d" % i for i in range(30)) + CRLF),
    ]


def _cas_cases() -> list[Case]:
    return [
        steps(
            "cas_success_flow",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 5 0 1 {cas:0}\r\ny\r\ngets a\r\n",
        ),
        steps(
            "cas_wrong_unique",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 0 0 1 {cas:0+1000}\r\ny\r\ngets a\r\n",
        ),
        steps(
            "cas_after_concurrent_set",
            setcmd(b"a", b"x") + b"gets a\r\n",
            setcmd(b"a", b"z") + b"cas a 0 0 1 {cas:0}\r\ny\r\nget a\r\n",
        ),
        steps(
            "cas_reuse_unique_twice",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 0 0 1 {cas:0}\r\ny\r\ncas a 0 0 1 {cas:0}\r\nz\r\nget a\r\n",
        ),
        steps(
            "cas_after_delete",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"delete a\r\ncas a 0 0 1 {cas:0}\r\ny\r\n",
        ),
        steps(
            "gets_unique_changes_on_append",
            setcmd(b"a", b"x") + b"gets a\r\n",
            setcmd(b"a", b"y", cmd=b"append") + b"gets a\r\n",
        ),
        steps(
            "gets_unique_changes_on_incr",
            setcmd(b"a", b"1") + b"gets a\r\n",
            b"incr a 1\r\ngets a\r\n",
        ),
        steps(
            "gets_unique_stable_on_touch",
            setcmd(b"a", b"1") + b"gets a\r\n",
            b"touch a 100\r\ngets a\r\n",
        ),
        steps(
            "cas_bad_data_chunk",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 0 0 1 {cas:0}\r\nyy\r\ngets a\r\n",
        ),
        case("cas_missing_key", b"cas nothere 0 0 1 1\r\nx\r\n"),
        case("cas_missing_unique", setcmd(b"a", b"x") + b"cas a 0 0 1\r\ny\r\n"),
        case("cas_unique_junk", setcmd(b"a", b"x") + b"cas a 0 0 1 abc\r\ny\r\n"),
        case("cas_unique_negative", setcmd(b"a", b"x") + b"cas a 0 0 1 -1\r\ny\r\n"),
        case(
            "cas_unique_overflow", setcmd(b"a", b"x") + b"cas a 0 0 1 18446744073709551616\r\ny\r\n"
        ),
        case("cas_unique_zero", setcmd(b"a", b"x") + b"cas a 0 0 1 0\r\ny\r\nget a\r\n"),
        case("cas_key_too_long", b"cas " + K251 + b" 0 0 1 1\r\nx\r\n"),
    ]


def _delete_arith_cases() -> list[Case]:
    return [
        case("delete_hit", setcmd(b"a", b"x") + b"delete a\r\nget a\r\n"),
        case("delete_miss", b"delete a\r\n"),
        case("delete_with_zero_time", setcmd(b"a", b"x") + b"delete a 0\r\nget a\r\n"),
        case("delete_with_nonzero_time", setcmd(b"a", b"x") + b"delete a 10\r\nget a\r\n"),
        case(
            "delete_with_zero_time_noreply", setcmd(b"a", b"x") + b"delete a 0 noreply\r\nget a\r\n"
        ),
        case("delete_too_many_tokens", setcmd(b"a", b"x") + b"delete a 0 noreply x\r\nget a\r\n"),
        case("delete_no_key", b"delete\r\n"),
        case("delete_key_251", b"delete " + K251 + CRLF),
        case("incr_basic", setcmd(b"n", b"10") + b"incr n 5\r\nget n\r\n"),
        case("decr_basic", setcmd(b"n", b"10") + b"decr n 3\r\nget n\r\n"),
        case("incr_miss", b"incr n 1\r\n"),
        case("decr_miss", b"decr n 1\r\n"),
        case("incr_non_numeric_value", setcmd(b"n", b"abc") + b"incr n 1\r\n"),
        case("decr_non_numeric_value", setcmd(b"n", b"abc") + b"decr n 1\r\n"),
        case("incr_empty_value", setcmd(b"n", b"") + b"incr n 1\r\n"),
        case("incr_value_with_trailing_space", setcmd(b"n", b"12 ") + b"incr n 1\r\nget n\r\n"),
        case("incr_value_with_leading_space", setcmd(b"n", b" 12") + b"incr n 1\r\nget n\r\n"),
        case("incr_value_leading_zeros", setcmd(b"n", b"0007") + b"incr n 1\r\nget n\r\n"),
        case("incr_value_negative", setcmd(b"n", b"-5") + b"incr n 1\r\n"),
        case(
            "incr_value_too_many_digits",
            setcmd(b"n", b"123456789012345678901234") + b"incr n 1\r\n",
        ),
        case("incr_value_u64_max_plus_1", setcmd(b"n", b"18446744073709551616") + b"incr n 1\r\n"),
        case(
            "incr_wrap_at_u64_max", setcmd(b"n", b"18446744073709551615") + b"incr n 1\r\nget n\r\n"
        ),
        case(
            "incr_wrap_big_delta", setcmd(b"n", b"10") + b"incr n 18446744073709551615\r\nget n\r\n"
        ),
        case("decr_floor_zero", setcmd(b"n", b"5") + b"decr n 100\r\nget n\r\n"),
        case("decr_shrinks_length_pads", setcmd(b"n", b"100") + b"decr n 1\r\nget n\r\n"),
        case(
            "decr_to_zero_pads",
            setcmd(b"n", b"1000") + b"decr n 1000\r\nget n\r\nincr n 5\r\nget n\r\n",
        ),
        case("incr_grows_length", setcmd(b"n", b"99") + b"incr n 1\r\nget n\r\n"),
        case("incr_keeps_flags", setcmd(b"n", b"1", flags=42) + b"incr n 1\r\nget n\r\n"),
        case("incr_delta_non_numeric", setcmd(b"n", b"1") + b"incr n abc\r\n"),
        case("incr_delta_negative", setcmd(b"n", b"1") + b"incr n -1\r\n"),
        case("incr_delta_overflow", setcmd(b"n", b"1") + b"incr n 18446744073709551616\r\n"),
        case("incr_delta_plus_sign", setcmd(b"n", b"1") + b"incr n +2\r\n"),
        case("incr_delta_trailing_junk", setcmd(b"n", b"1") + b"incr n 2x\r\n"),
        case("decr_delta_non_numeric", setcmd(b"n", b"1") + b"decr n abc\r\n"),
        case("incr_missing_delta", setcmd(b"n", b"1") + b"incr n\r\n"),
        case("incr_too_many_tokens", setcmd(b"n", b"1") + b"incr n 1 noreply extra\r\nget n\r\n"),
        case("incr_key_251", b"incr " + K251 + b" 1\r\n"),
        case("incr_on_value_with_crlf_data", setcmd(b"n", b"1\r\n2") + b"incr n 1\r\n"),
    ]


def _touch_cases() -> list[Case]:
    return [
        case("touch_hit", setcmd(b"a", b"x") + b"touch a 100\r\nget a\r\n"),
        case("touch_miss", b"touch a 100\r\n"),
        case("touch_expire_now", setcmd(b"a", b"x") + b"touch a -1\r\nget a\r\n"),
        case("touch_bad_exptime", setcmd(b"a", b"x") + b"touch a soon\r\n"),
        case("touch_missing_exptime", setcmd(b"a", b"x") + b"touch a\r\n"),
        case("touch_key_251", b"touch " + K251 + b" 10\r\n"),
        case("gat_hit", setcmd(b"a", b"x", 3) + b"gat 100 a\r\n"),
        case("gat_miss", b"gat 100 a\r\n"),
        case("gat_multi", setcmd(b"a", b"1") + setcmd(b"c", b"3") + b"gat 100 a b c\r\n"),
        case("gat_expire_now", setcmd(b"a", b"x") + b"gat -1 a\r\nget a\r\n"),
        case("gat_bad_exptime", setcmd(b"a", b"x") + b"gat soon a\r\n"),
        case("gat_no_keys", b"gat 10\r\n"),
        case("gat_no_args", b"gat\r\n"),
        case("gat_key_251", b"gat 10 " + K251 + CRLF),
        case("gats_hit", setcmd(b"a", b"x") + setcmd(b"b", b"y") + b"gats 100 a b\r\ngets a b\r\n"),
        case("gats_miss", b"gats 100 a\r\n"),
        case("gats_no_keys", b"gats 10\r\n"),
    ]


def _flush_cases() -> list[Case]:
    return [
        case("flush_all_then_get", setcmd(b"a", b"x") + b"flush_all\r\nget a\r\n"),
        case(
            "flush_all_then_set_get",
            setcmd(b"a", b"x") + b"flush_all\r\n" + setcmd(b"a", b"y") + b"get a\r\n",
        ),
        case("flush_all_0", setcmd(b"a", b"x") + b"flush_all 0\r\nget a\r\n"),
        case(
            "flush_all_delay_get_immediately",
            setcmd(b"a", b"x") + b"flush_all 10\r\nget a\r\n",
            fresh=True,
        ),
        case(
            "flush_all_delay_noreply",
            setcmd(b"a", b"x") + b"flush_all 10 noreply\r\nget a\r\n",
            fresh=True,
        ),
        case("flush_all_negative", setcmd(b"a", b"x") + b"flush_all -1\r\nget a\r\n"),
        case("flush_all_junk", setcmd(b"a", b"x") + b"flush_all soon\r\nget a\r\n"),
        case("flush_all_too_many_tokens", setcmd(b"a", b"x") + b"flush_all 0 0\r\nget a\r\n"),
        case(
            "flush_all_then_add",
            setcmd(b"a", b"x") + b"flush_all\r\n" + setcmd(b"a", b"y", cmd=b"add") + b"get a\r\n",
        ),
    ]


def _misc_command_cases() -> list[Case]:
    return [
        case("version", b"version\r\n"),
        case("version_with_arg", b"version 1\r\n"),
        case("verbosity_1", b"verbosity 1\r\nverbosity 0\r\n", fresh=True),
        case("verbosity_no_args", b"verbosity\r\n", fresh=True),
        case("verbosity_junk", b"verbosity loud\r\n", fresh=True),
        case("verbosity_noreply", b"verbosity 1 noreply\r\nverbosity 0\r\n", fresh=True),
        case("verbosity_too_many_tokens", b"verbosity 1 2 3\r\n", fresh=True),
        case("quit", b"quit\r\n"),
        case("quit_after_pipeline", setcmd(b"a", b"x") + b"get a\r\nquit\r\n"),
        case("quit_then_more_commands", b"version\r\nquit\r\nget a\r\nversion\r\n"),
        case("quit_with_arg", b"quit now\r\n"),
        case("shutdown_not_enabled", b"shutdown\r\n", fresh=True),
        case("shutdown_graceful_not_enabled", b"shutdown graceful\r\n", fresh=True),
        case("cache_memlimit_100", b"cache_memlimit 100\r\n", fresh=True),
        case("cache_memlimit_junk", b"cache_memlimit lots\r\n", fresh=True),
        case("cache_memlimit_no_args", b"cache_memlimit\r\n", fresh=True),
        case("cache_memlimit_noreply", b"cache_memlimit 100 noreply\r\nversion\r\n", fresh=True),
        case("cache_memlimit_negative", b"cache_memlimit -5\r\n", fresh=True),
        case(
            "cache_memlimit_then_settings",
            b"cache_memlimit 100\r\nstats settings\r\n",
            fresh=True,
        ),
    ]


def _slabs_cases() -> list[Case]:
    """``slabs reassign`` / ``slabs automove``: every reply that does not depend on timing."""
    lines = [
        b"slabs", b"slabs ", b"slabs foo", b"slabs foo bar", b"SLABS reassign 1 2",
        b"slabs reassign", b"slabs reassign 1", b"slabs reassign 1 2", b"slabs reassign 1 1",
        b"slabs reassign 0 0", b"slabs reassign 0 1", b"slabs reassign 1 0",
        b"slabs reassign -1 1", b"slabs reassign 1 -1", b"slabs reassign 64 1",
        b"slabs reassign 1 64", b"slabs reassign 39 1", b"slabs reassign 1 40",
        b"slabs reassign a b", b"slabs reassign 1x 2", b"slabs reassign 1 0x2",
        b"slabs reassign 99999999999 1", b"slabs reassign 4294967297 1",
        b"slabs reassign 1 2 3", b"slabs reassign 1 2 noreply", b"slabs reassign 1 noreply",
        b"slabs reassign 01 +2", b"slabs  reassign  1  2", b"slabs Reassign 1 2",
        b"slabs automove", b"slabs automove noreply", b"slabs automove 3",
        b"slabs automove -1", b"slabs automove x", b"slabs automove 1.0",
        b"slabs automove x noreply", b"slabs automove ratio", b"slabs automove ratio x",
        b"slabs automove ratio .5x", b"slabs automove ratio 1e999",
        b"slabs automove ratio noreply",
    ]
    settings = [
        b"slabs automove 0", b"slabs automove 2", b"slabs automove 1 noreply",
        b"slabs automove 2 x", b"slabs automove 00", b"slabs automove +1",
        b"slabs automove 4294967296", b"slabs automove 4294967298",
        b"slabs automove 0 1 2 3 4 5", b"slabs automove ratio 0.5",
        b"slabs automove ratio 1e0", b"slabs automove ratio inf", b"slabs automove ratio nan",
        b"slabs automove ratio 0x10", b"slabs automove ratio -1", b"slabs automove ratio -0",
        b"slabs automove ratio 0.25 extra", b"slabs automove ratio 0.5 noreply",
        b"slabs automove ratio 1e-400", b"slabs automove ratio 0x1p-2",
    ]
    fill = b"".join(setcmd(b"fill%05d" % i, b"v" * 100) for i in range(12000))
    return [
        *(case("slabs_" + ln.decode().replace(" ", "_"), ln + CRLF) for ln in lines),
        *(
            case(
                "slabs_settings_" + ln.decode().replace(" ", "_"),
                ln + b"\r\nstats settings\r\n",
                fresh=True,
            )
            for ln in settings
        ),
        case(
            "slabs_reassign_disabled",
            b"slabs reassign 1 2\r\nslabs reassign a b\r\nslabs reassign 1 1\r\n"
            b"slabs reassign\r\nslabs automove 2\r\nstats settings\r\n",
            fresh=True,
            server_args=("-o", "no_slab_reassign"),
        ),
        case(
            "slabs_settings_from_options",
            b"stats settings\r\n",
            fresh=True,
            server_args=("-o", "slab_automove=2,slab_automove_window=7,slab_automove_ratio=0.6"),
        ),
        steps(
            "slabs_reassign_a_spare_page",
            fill,
            b"slabs reassign 4 0\r\n",
            fresh=True,
            server_args=("-o", "slab_automove=0"),
        ),
    ]


def _stats_cases() -> list[Case]:
    # incr/decr come before any get of the same key: memcached updates a counter in place only
    # while no pending get response still references the item, otherwise it links a new item
    # and total_items grows by one, depending on when the earlier response was written out.
    ops = (
        setcmd(b"a", b"1")
        + setcmd(b"b", b"hello", 5)
        + b"incr a 1\r\nincr z 1\r\ndecr a 1\r\ndecr z 1\r\ntouch a 10\r\ntouch z 10\r\n"
        + b"get a b c\r\ngets a\r\n"
        + b"delete b\r\ndelete b\r\ncas z 0 0 1 1\r\nx\r\ngat 10 a z\r\n"
        + setcmd(b"a", b"x", cmd=b"add")
        + setcmd(b"q", b"x", cmd=b"replace")
    )
    return [
        case("stats_fresh", b"stats\r\n", fresh=True),
        case("stats_after_ops", ops + b"stats\r\n", fresh=True),
        case(
            "stats_after_errors",
            b"set a 0 0 1\r\nxy\r\nincr\r\nbogus\r\nset a 0 0 2000000\r\n"
            + b"z" * 2000000
            + b"\r\nget "
            + K251
            + b"\r\nstats\r\n",
            fresh=True,
        ),
        # No LRU maintainer either: a flushed item at a list tail is the maintainer's to
        # reclaim too, and a fresh server's maintainer passes every few milliseconds.
        case(
            "stats_after_flush",
            setcmd(b"a", b"1") + b"flush_all\r\nget a\r\nstats\r\n",
            fresh=True,
            server_args=("-o", "no_lru_maintainer"),
        ),
        # No LRU maintainer on either side: with it, whether the expired item is reclaimed at
        # a list tail (`reclaimed`) or found expired by the get (`get_expired`) is a race with
        # the background thread, in memcached as here.
        case(
            "stats_expired_get",
            setcmd(b"a", b"1", exptime=-1) + b"get a\r\nstats\r\n",
            fresh=True,
            server_args=("-o", "no_lru_maintainer"),
        ),
        steps(
            "stats_cas_counters",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"cas a 0 0 1 {cas:0}\r\ny\r\ncas a 0 0 1 {cas:0}\r\nz\r\n"
            b"cas q 0 0 1 1\r\nz\r\nstats\r\n",
            fresh=True,
        ),
        case("stats_reset", ops + b"stats reset\r\nstats\r\n", fresh=True),
        case("stats_reset_noreply_token", b"stats reset noreply\r\n", fresh=True),
        case("stats_settings", b"stats settings\r\n", fresh=True),
        case(
            "stats_settings_custom",
            b"stats settings\r\n",
            fresh=True,
            server_args=("-m", "32", "-c", "100", "-f", "1.5", "-n", "64", "-I", "2m"),
        ),
        case("stats_items_empty", b"stats items\r\n", fresh=True),
        case("stats_items", ops + b"stats items\r\n", fresh=True),
        case("stats_slabs_empty", b"stats slabs\r\n", fresh=True),
        case(
            "stats_slabs",
            ops + setcmd(b"big", b"b" * 5000) + b"get big\r\nstats slabs\r\n",
            fresh=True,
        ),
        case("stats_sizes", b"stats sizes\r\n", fresh=True),
        steps(
            "stats_sizes_enable_disable",
            setcmd(b"a", b"hello") + b"gets a\r\nstats sizes_enable\r\n",
            setcmd(b"b", b"hello") + b"gets b\r\nstats sizes_enable\r\nstats sizes\r\n",
            setcmd(b"a", b"hello12") + b"stats sizes\r\ndelete a\r\nstats sizes\r\n",
            b"stats reset\r\nstats sizes\r\nstats settings\r\n",
            setcmd(b"n", b"5") + b"incr n 5\r\nincr n 99\r\nstats sizes\r\n",
            setcmd(b"n", b"ab", cmd=b"append") + b"stats sizes\r\n",
            b"stats sizes_disable\r\nstats sizes\r\n" + setcmd(b"c", b"z" * 50),
            b"stats sizes_enable x\r\nstats sizes x\r\nstats sizes_disable x\r\n",
            fresh=True,
        ),
        steps(
            "stats_sizes_tracked_from_start",
            setcmd(b"a", b"hello") + setcmd(b"bb", b"x" * 100, flags=1)
            + setcmd(b"c", b"y" * 3000) + setcmd(b"big", b"z" * 600_000)
            + b"gets a\r\nstats sizes\r\n",
            b"delete a\r\ndelete big\r\nstats sizes\r\nstats settings\r\n",
            fresh=True,
            server_args=("-o", "track_sizes"),
        ),
        case(
            "stats_sizes_without_cas",
            setcmd(b"a", b"hello") + b"stats sizes_enable\r\nstats sizes\r\n"
            + setcmd(b"b", b"hello") + b"stats sizes\r\nstats sizes_disable\r\n",
            fresh=True,
            server_args=("-C",),
        ),
        case(
            "stats_sizes_without_cas_tracked_from_start",
            setcmd(b"a", b"hello") + setcmd(b"a", b"hello1") + b"stats sizes\r\n"
            + b"stats sizes_enable\r\n",
            fresh=True,
            server_args=("-C", "-o", "track_sizes"),
        ),
        case("stats_conns", b"stats conns\r\n", fresh=True),
        case("stats_nonsense", b"stats nonsense\r\n", fresh=True),
        case("stats_trailing_space", b"stats \r\n", fresh=True),
        case("stats_items_extra_arg", b"stats items 1\r\n", fresh=True),
        case("stats_uppercase", b"STATS\r\n", fresh=True),
        case("stats_bare_lf", setcmd(b"a", b"1") + b"stats items\n", fresh=True),
    ]


def _framing_cases() -> list[Case]:
    pipeline = b"".join(setcmd(b"p%d" % i, b"v%d" % i) + b"get p%d\r\n" % i for i in range(20))
    return [
        case("unknown_command", b"bogus\r\n"),
        case("unknown_command_with_args", b"bogus a b c\r\n"),
        case("uppercase_get", setcmd(b"a", b"x") + b"GET a\r\n"),
        case("uppercase_set_with_data", b"SET a 0 0 1\r\nx\r\nget a\r\n"),
        case("mixed_case_command", b"Get a\r\nVersion\r\n"),
        case("empty_line_crlf", b"\r\n"),
        case("empty_line_lf", b"\n"),
        case("empty_lines_between_commands", setcmd(b"a", b"x") + b"\r\n\r\nget a\r\n\n"),
        case("spaces_only_line", b"     \r\n"),
        case("bare_lf_set_get", b"set a 0 0 1\nx\r\nget a\n"),
        case("bare_lf_everything", b"set a 0 0 1\nx\r\nincr a 1\ndelete a\ntouch a 1\nversion\n"),
        case("mixed_line_endings", b"set a 0 0 1\r\nx\r\nget a\nget a\r\nget a\n"),
        case("double_space_in_set", b"set  a  0  0  1\r\nx\r\nget a\r\n"),
        case("trailing_spaces_set", b"set a 0 0 1   \r\nx\r\nget a\r\n"),
        case("leading_spaces_command", setcmd(b"a", b"x") + b"   get a\r\n"),
        case("tab_after_command", b"set\ta 0 0 1\r\nx\r\n"),
        case("tab_between_args", b"set a\t0 0 1\r\nx\r\nget a\r\n"),
        case("trailing_tab", setcmd(b"a", b"x") + b"get a\t\r\n"),
        case("cr_only_line_ending", b"get a\r", sentinel=False),
        case("nul_byte_command", b"\x00\r\n"),
        case("nul_inside_command", b"ge\x00t a\r\n"),
        case("pipeline_20_set_get", pipeline),
        case(
            "pipeline_mixed_errors",
            b"set a 0 0 1\r\nx\r\nbogus\r\nget a\r\nset b 0 0 1\r\nxx\r\nget b\r\n"
            b"incr a 1\r\nset c 0 0 z\r\nget a b c\r\nversion\r\ndelete a\r\n",
        ),
        case(
            "pipeline_all_storage_commands",
            setcmd(b"a", b"1")
            + setcmd(b"a", b"2", cmd=b"add")
            + setcmd(b"b", b"3", cmd=b"add")
            + setcmd(b"a", b"4", cmd=b"replace")
            + setcmd(b"c", b"5", cmd=b"replace")
            + setcmd(b"a", b"6", cmd=b"append")
            + setcmd(b"b", b"7", cmd=b"prepend")
            + b"get a b c\r\n",
        ),
        case(
            "pipeline_50_sets",
            b"".join(setcmd(b"s%d" % i, b"x" * i) for i in range(50)) + b"get s49\r\n",
        ),
        case("split_inside_command_name", [b"ge", b"t a\r\n"]),
        case("split_between_line_and_data", [b"set a 0 0 3\r\n", b"abc\r\nget a\r\n"]),
        case("split_inside_data", [b"set a 0 0 6\r\nabc", b"def\r\nget a\r\n"]),
        case("split_between_cr_and_lf", [b"get a\r", b"\nversion\r\n"]),
        case("split_data_between_cr_and_lf", [b"set a 0 0 1\r\nx\r", b"\nget a\r\n"]),
        case(
            "split_one_byte_at_a_time",
            [bytes([b]) for b in setcmd(b"a", b"xy") + b"get a\r\n"],
            pause=0.002,
        ),
        case("long_line_3000_one_write", b"x" * 3000 + b"\r\n"),
        case("long_line_3000_split_write", [b"x" * 3000, b"\r\nversion\r\n"], pause=0.1),
        case("long_set_line_split_write", [b"set " + b"k" * 3000, b" 0 0 1\r\nx\r\n"], pause=0.1),
        case(
            "long_line_leading_spaces_get",
            [b" " * 150 + b"get " + b"a " * 1000, b"\r\n"],
            pause=0.1,
        ),
        case("long_get_line_one_key_too_long", b"get " + b"y" * 3000 + b"\r\n"),
        case("http_request_line", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        case(
            "binary_protocol_noop",
            b"\x80\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xde\xad\xbe\xef" + b"\x00" * 8,
            sentinel=False,
        ),
        case(
            "binary_protocol_get_miss",
            b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x07"
            + b"\x00" * 8
            + b"a",
            sentinel=False,
        ),
        case("binary_magic_after_text", b"version\r\n\x80\x0a\x00\x00\r\n"),
        case("telnet_style_ctrl_c", b"\xff\xf4\xff\xfd\x06"),
    ]


def _boundary_cases() -> list[Case]:
    """Edges that a re-implementation gets wrong easily: number syntax accepted by strtol/strtoul,
    expired items seen by every command, the exact item size limit, stats sub-command arguments."""
    expired = setcmd(b"e", b"5", exptime=-1)
    # The largest value memcached stores under key "big" with default -I 1m is 1 MB minus the item
    # header (48) + key + NUL + CRLF + CAS (8); probe both sides of it.
    near_max = [
        case(
            f"value_size_{n}",
            b"set big 0 0 %d\r\n" % n + b"m" * n + b"\r\nget big\r\n",
        )
        for n in (1048500, 1048514, 1048515, 1048520)
    ]
    return near_max + [
        case("flags_plus_sign", b"set a +5 0 1\r\nx\r\nget a\r\n"),
        case("flags_leading_zeros", b"set a 007 0 1\r\nx\r\nget a\r\n"),
        case("exptime_plus_sign", b"set a 0 +100 1\r\nx\r\nget a\r\n"),
        case("exptime_2_pow_31", b"set a 0 2147483648 1\r\nx\r\nget a\r\n"),
        case("bytes_plus_sign", b"set a 0 0 +1\r\nx\r\nget a\r\n"),
        case("bytes_leading_zeros", b"set a 0 0 01\r\nx\r\nget a\r\n"),
        case("incr_delta_leading_zeros", setcmd(b"n", b"1") + b"incr n 0005\r\n"),
        case("incr_delta_hex", setcmd(b"n", b"1") + b"incr n 0x10\r\n"),
        case("incr_delta_zero", setcmd(b"n", b"41") + b"incr n 0\r\nget n\r\n"),
        case("incr_value_plus_sign", setcmd(b"n", b"+5") + b"incr n 1\r\nget n\r\n"),
        case("incr_value_20_digits", setcmd(b"n", b"00000000000000000001") + b"incr n 1\r\n"),
        case("touch_exptime_plus_sign", setcmd(b"a", b"x") + b"touch a +100\r\nget a\r\n"),
        case("cas_unique_plus_sign", setcmd(b"a", b"x") + b"cas a 0 0 1 +1\r\ny\r\n"),
        case("flush_all_hex", setcmd(b"a", b"x") + b"flush_all 0x10\r\nget a\r\n"),
        case("expired_then_add", expired + setcmd(b"e", b"6", cmd=b"add") + b"get e\r\n"),
        case("expired_then_replace", expired + setcmd(b"e", b"6", cmd=b"replace") + b"get e\r\n"),
        case("expired_then_append", expired + setcmd(b"e", b"6", cmd=b"append") + b"get e\r\n"),
        case("expired_then_prepend", expired + setcmd(b"e", b"6", cmd=b"prepend")),
        case("expired_then_incr", expired + b"incr e 1\r\ndecr e 1\r\n"),
        case("expired_then_touch", expired + b"touch e 100\r\ngat 100 e\r\n"),
        case("expired_then_delete", expired + b"delete e\r\n"),
        case("expired_then_cas", expired + b"cas e 0 0 1 1\r\nx\r\n"),
        steps(
            "cas_after_append_with_old_unique",
            setcmd(b"a", b"x") + b"gets a\r\n",
            setcmd(b"a", b"y", cmd=b"append") + b"cas a 0 0 1 {cas:0}\r\nz\r\nget a\r\n",
        ),
        steps(
            "cas_after_flush_all",
            setcmd(b"a", b"x") + b"gets a\r\n",
            b"flush_all\r\ncas a 0 0 1 {cas:0}\r\nz\r\nget a\r\n",
        ),
        case(
            "append_past_item_size_max",
            b"set big 0 0 1000000\r\n" + b"a" * 1000000 + b"\r\n"
            b"append big 0 0 100000\r\n" + b"b" * 100000 + b"\r\nget nothing\r\n",
        ),
        case(
            "get_three_large_values",
            b"".join(setcmd(b"L%d" % i, bytes([65 + i]) * 500_000) for i in range(3))
            + b"get L0 L1 L2 L0\r\n",
        ),
        case(
            "key_250_everywhere",
            setcmd(K250, b"7")
            + b"incr "
            + K250
            + b" 1\r\ntouch "
            + K250
            + b" 10\r\ngat 10 "
            + K250
            + b"\r\ndelete "
            + K250
            + b"\r\n",
        ),
        case(
            "incr_value_25_digits_leading_zeros",
            setcmd(b"n", b"0" * 24 + b"9") + b"incr n 1\r\nget n\r\n",
        ),
        # Above slab_chunk_max (512 KB) memcached stores a value in chained chunks and refuses
        # incr/decr on it even when the digits would parse.
        case(
            "incr_on_chunked_numeric_value",
            setcmd(b"n", b"0" * 599_999 + b"1") + b"incr n 1\r\ndecr n 1\r\n",
        ),
        case("decr_u64_max", setcmd(b"n", b"18446744073709551615") + b"decr n 1\r\nget n\r\n"),
        case(
            "get_key_251_after_30_keys",
            setcmd(b"t3", b"x")
            + b"get "
            + b" ".join(b"t%d" % i for i in range(30))
            + b" "
            + K251
            + CRLF,
        ),
        case("gat_noreply_token_is_a_key", setcmd(b"noreply", b"x") + b"gat 10 a noreply\r\n"),
        case("version_noreply", b"version noreply\r\n"),
        case("quit_noreply", b"quit noreply\r\n"),
        case("touch_noreply_bad_exptime", setcmd(b"a", b"x") + b"touch a x noreply\r\nget a\r\n"),
        case("data_terminator_lf_cr", b"set a 0 0 1\r\nx\n\rget a\r\n"),
        case("data_terminator_cr_cr_lf", b"set a 0 0 1\r\nx\r\r\nget a\r\n"),
        case("verbosity_noreply_only", b"verbosity noreply\r\n", fresh=True),
        case("verbosity_large", b"verbosity 99\r\n", fresh=True),
        case("cache_memlimit_0", b"cache_memlimit 0\r\n", fresh=True),
        case("cache_memlimit_1", b"cache_memlimit 1\r\n", fresh=True),
        case("cache_memlimit_huge", b"cache_memlimit 99999999999\r\n", fresh=True),
        case("stats_slabs_extra_arg", b"stats slabs 1\r\n", fresh=True),
        case("stats_settings_extra_arg", b"stats settings x\r\n", fresh=True),
        case("stats_sizes_extra_arg", b"stats sizes x\r\n", fresh=True),
        case("stats_reset_extra_arg", b"stats reset x\r\n", fresh=True),
        case("stats_conns_extra_arg", b"stats conns x\r\n", fresh=True),
        case("stats_two_subcommands", b"stats items slabs\r\n", fresh=True),
        case(
            "stats_items_after_expiry_and_delete",
            setcmd(b"a", b"1")
            + setcmd(b"b", b"2", exptime=-1)
            + setcmd(b"c", b"3")
            + b"delete c\r\nget b\r\nstats items\r\nstats\r\n",
            fresh=True,
            server_args=("-o", "no_lru_maintainer"),  # b is expired: see stats_expired_get
        ),
    ]


def build_corpus() -> list[Case]:
    """All cases, in a stable order; names are unique because they are the pytest ids."""
    cases = (
        _storage_cases()
        + _noreply_cases()
        + _retrieval_cases()
        + _cas_cases()
        + _delete_arith_cases()
        + _touch_cases()
        + _flush_cases()
        + _misc_command_cases()
        + _slabs_cases()
        + _stats_cases()
        + _framing_cases()
        + _boundary_cases()
    )
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate case names: {sorted(dupes)}"
    return cases


CASES: list[Case] = build_corpus()


# --------------------------------------------------------------------------------------------
# Sending and reading
# --------------------------------------------------------------------------------------------


def start_reference(*args: str) -> ServerProc:
    """Real memcached, retried: ``procs`` picks its port by binding port 0 and releasing it, so
    another test starting a server at the same moment can take the port first; memcached then
    exits and ``wait_listening`` gives up. A retry gets a new port."""
    for attempt in range(3):
        try:
            return start_memcached(*args, timeout=5.0)
        except OSError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def flush(srv: ServerProc) -> None:
    """Forget the previous case's items (on its own connection, so no case sees it)."""
    with srv.connect() as s:
        s.sendall(b"flush_all\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                break
            reply += chunk


_VERSION_LINE = re.compile(rb"^VERSION [^\r\n]*\r\n", re.MULTILINE)
_VALUE_HEADER = re.compile(rb"^VALUE (\S+) (\d+) (\d+)(?: (\d+))?$")
_CAS_TEMPLATE = re.compile(rb"\{cas:(\d+)([+-]\d+)?\}")


def _expected_versions(request: bytes) -> int:
    """Upper bound of VERSION lines the request itself asks for (the sentinel adds one)."""
    return sum(1 for line in request.split(b"\n") if line.rstrip(b"\r").strip(b" ") == b"version")


def read_reply(sock: socket.socket, want_versions: int | None, quiet: float) -> tuple[bytes, bool]:
    """Read until ``want_versions`` VERSION lines ended the reply, a quiet period, or EOF."""
    buf = bytearray()
    deadline = time.monotonic() + MAX_WAIT
    while True:
        if (
            want_versions is not None
            and buf.endswith(CRLF)
            and buf[buf.rfind(b"\n", 0, len(buf) - 1) + 1 :].startswith(b"VERSION ")
            and len(_VERSION_LINE.findall(bytes(buf))) >= want_versions
        ):
            return bytes(buf), False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), False
        # a reply cut mid-line is still arriving (a stalled server): wait as for a sentinel
        wait = quiet if not buf or buf.endswith(CRLF) else max(quiet, QUIET_WITH_SENTINEL)
        sock.settimeout(min(wait, remaining))
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return bytes(buf), False
        except (ConnectionResetError, BrokenPipeError):
            # memcached closes with unread input still queued, which the kernel turns into RST;
            # that is the same observable event as a FIN for a client.
            return bytes(buf), True
        if not data:
            return bytes(buf), True
        buf += data


def _substitute_cas(chunk: bytes, seen: list[bytes]) -> bytes:
    def repl(m: re.Match[bytes]) -> bytes:
        idx = int(m.group(1))
        if idx >= len(seen):
            return b"<nocas>"
        return b"%d" % (int(seen[idx]) + int(m.group(2) or b"0"))

    return _CAS_TEMPLATE.sub(repl, chunk)


def cas_values(reply: bytes) -> list[bytes]:
    """CAS uniques of VALUE lines, in order of appearance (data blocks are skipped)."""
    found: list[bytes] = []
    for kind, payload in _walk(reply):
        if kind == "value":
            m = _VALUE_HEADER.match(payload.rstrip(b"\r\n"))
            if m and m.group(4) is not None and m.group(4) not in found:
                found.append(m.group(4))
    return found


def run_case(sock: socket.socket, c: Case) -> list[bytes]:
    """Replay ``c`` on ``sock``; one raw reply per step, ``<EOF>`` appended when it closed."""
    replies: list[bytes] = []
    seen_cas: list[bytes] = []
    for st in c.steps:
        chunks = [_substitute_cas(ch, seen_cas) for ch in st.chunks]
        if st.sentinel:
            chunks[-1] = chunks[-1] + SENTINEL
        closed = False
        for i, ch in enumerate(chunks):
            if i and st.pause:
                time.sleep(st.pause)
            try:
                sock.sendall(ch)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        want = _expected_versions(b"".join(st.chunks)) + 1 if st.sentinel else None
        quiet = QUIET_WITH_SENTINEL if st.sentinel else QUIET_NO_SENTINEL
        data, eof = read_reply(sock, want, quiet)
        eof = eof or closed
        replies.append(data + EOF_MARK if eof else data)
        for v in cas_values(data):
            if v not in seen_cas:
                seen_cas.append(v)
        if eof:
            break
    return replies


# --------------------------------------------------------------------------------------------
# Normalisation: only what must differ between two correct servers
# --------------------------------------------------------------------------------------------

# `stats`: names and order are compared exactly; values only for these counters, which follow
# from the requests alone. Everything else is process identity (pid, version, libevent), time
# (uptime, time, rusage_*), connection bookkeeping of the harness itself (probe connections,
# buffer pools), per-read() byte counters (bytes_read counts a pipelined `stats` together with
# whatever else the same read() returned), or background-thread activity (LRU maintainer/crawler).
GENERAL_STATS_COMPARED = frozenset(
    b"""pointer_size max_connections rejected_connections cmd_get cmd_set cmd_flush cmd_touch
    cmd_meta get_hits get_misses get_expired get_flushed delete_misses delete_hits incr_misses
    incr_hits decr_misses decr_hits cas_misses cas_hits cas_badval touch_hits touch_misses
    store_too_large store_no_memory auth_cmds auth_errors limit_maxbytes accepting_conns
    listen_disabled_num threads bytes curr_items total_items expired_unfetched evicted_unfetched
    evicted_active evictions reclaimed malloc_fails""".split()
)
# A block is `stats` (and not `stats settings`, which shares e.g. "evictions") if it has these.
GENERAL_STATS_MARKERS = frozenset({b"pid", b"uptime", b"cmd_get", b"curr_items"})
SETTINGS_MARKERS = frozenset({b"maxbytes", b"item_size_max", b"growth_factor"})
# `stats settings`: every value follows from the command line except the port we had to give each
# server and `oldest` (seconds since the last flush_all, i.e. wall-clock time).
SETTINGS_VOLATILE = frozenset({b"tcpport", b"oldest"})
# `stats items`: these describe the segmented LRU (hot/warm/cold sub-queues moved by a background
# maintainer thread) or elapsed time; their values depend on thread timing even between two
# memcached processes. Names are still compared (test_differential_lru compares the values after
# workloads that settle).
ITEMS_VOLATILE = frozenset(
    b"""number_hot number_warm number_cold age_hot age_warm age evicted_time moves_to_cold
    moves_to_warm moves_within_lru hits_to_hot hits_to_warm hits_to_cold hits_to_temp
    lrutail_reflocked crawler_reclaimed crawler_items_checked""".split()
)
CONN_FIELDS = frozenset({b"addr", b"listen_addr", b"state", b"secs_since_last_cmd"})
_CONN_NAME = re.compile(rb"^(\d+):(\w+)$")
_ITEMS_NAME = re.compile(rb"^items:(\d+):(\w+)$")
_PORT_SUFFIX = re.compile(rb":\d+$")


def _walk(reply: bytes) -> Iterable[tuple[str, bytes]]:
    """Split a reply into ("line"|"value"|"data"|"tail", bytes) pieces.

    VALUE data blocks are consumed by their declared length, so a data block that happens to
    look like a protocol line is never normalised.
    """
    pos = 0
    n = len(reply)
    while pos < n:
        nl = reply.find(b"\n", pos)
        if nl == -1:
            yield "tail", reply[pos:]
            return
        line = reply[pos : nl + 1]
        pos = nl + 1
        m = _VALUE_HEADER.match(line.rstrip(b"\r\n"))
        if m:
            yield "value", line
            size = int(m.group(3)) + 2
            yield "data", reply[pos : pos + size]
            pos += size
        else:
            yield "line", line


def _stat_block_kind(names: list[bytes]) -> str:
    s = set(names)
    if s & GENERAL_STATS_MARKERS:
        return "general"
    if s & SETTINGS_MARKERS:
        return "settings"
    return "other"


def _normalise_stat_block(lines: list[bytes], conn_ids: dict[bytes, int]) -> list[bytes]:
    parsed: list[tuple[bytes, bytes, bytes]] = []
    for line in lines:
        body = line.rstrip(b"\r\n")
        ending = line[len(body) :]
        _, name, value = (body.split(b" ", 2) + [b""])[:3]
        parsed.append((name, value, ending))
    kind = _stat_block_kind([p[0] for p in parsed])
    out: list[bytes] = []
    for name, value, ending in parsed:
        if name in (b"version", b"libevent"):
            value = b"<*>"
        elif kind == "general":
            if name not in GENERAL_STATS_COMPARED:
                value = b"<*>"
        elif kind == "settings":
            if name in SETTINGS_VOLATILE:
                value = b"<*>"
        elif (m := _ITEMS_NAME.match(name)) and m.group(2) in ITEMS_VOLATILE:
            value = b"<*>"
        elif (m := _CONN_NAME.match(name)) and m.group(2) in CONN_FIELDS:
            # `stats conns`: fds, client/listener ports and idle seconds are per-process facts.
            conn = conn_ids.setdefault(m.group(1), len(conn_ids))
            name = b"<conn%d>:%s" % (conn, m.group(2))
            if m.group(2) in (b"addr", b"listen_addr"):
                value = _PORT_SUFFIX.sub(b":<port>", value)
            elif m.group(2) == b"secs_since_last_cmd":
                value = b"<*>"
        out.append(b"STAT " + name + b" " + value + ending)
    return out


def _normalise_reply(reply: bytes, cas_map: dict[bytes, bytes]) -> bytes:
    conn_ids: dict[bytes, int] = {}
    out: list[bytes] = []
    stat_block: list[bytes] = []
    for kind, piece in _walk(reply):
        if kind == "line" and piece.startswith(b"STAT "):
            stat_block.append(piece)
            continue
        if stat_block:
            out.extend(_normalise_stat_block(stat_block, conn_ids))
            stat_block = []
        if kind == "value":
            body = piece.rstrip(b"\r\n")
            m = _VALUE_HEADER.match(body)
            if m and m.group(4) is not None:
                canon = cas_map.setdefault(m.group(4), b"<cas%d>" % (len(cas_map) + 1))
                piece = body[: m.start(4)] + canon + piece[len(body) :]
        elif kind == "line" and piece.startswith(b"VERSION "):
            piece = b"VERSION <v>" + piece[len(piece.rstrip(b"\r\n")) :]
        out.append(piece)
    if stat_block:
        out.extend(_normalise_stat_block(stat_block, conn_ids))
    return b"".join(out)


def normalise(replies: Sequence[bytes]) -> list[bytes]:
    """Normalise one case's step replies: CAS uniques, versions and volatile stats values.

    CAS uniques become ``<cas1>``, ``<cas2>``... in order of first appearance across the whole
    case, so "same unique" and "changed unique" relations survive but the numbers do not.
    """
    cas_map: dict[bytes, bytes] = {}
    return [_normalise_reply(reply, cas_map) for reply in replies]

"""Meta-protocol differential corpus and its normalisation (requests only: memcached answers).

Shares the classic corpus's reading rules (a ``version`` sentinel ends each step) and adds what
meta replies need: CAS values appear as `` c<N>`` return flags and ``cas=<N>`` in ``me`` lines,
and remaining TTLs (`` t<N>``, ``exp=``, ``la=``, `` l<N>``) can tick by a second between two
processes, so they are compared in 10-second buckets. ``{cas:N}`` in a request is replaced by
the N-th distinct CAS value this server returned earlier in the case, so CAS-compare cases run
on both servers with their own values. ``lru_crawler metadump`` lines carry absolute times and
come in an order memcached's LRU maintainer thread decides: times are masked, lines sorted.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

from differential_corpus import (
    QUIET_NO_SENTINEL,
    QUIET_WITH_SENTINEL,
    SENTINEL,
    Case,
    case,
    normalise,
    read_reply,
    steps,
)

__all__ = ["META_CASES", "OPS_CASES", "run_meta_case", "normalise_meta"]

_STATUS = re.compile(rb"^(HD|VA|EN|NF|NS|EX|ME)\b")
_VA = re.compile(rb"^VA (\d+)")
_CAS_FLAG = re.compile(rb"(?<= )c(\d+)(?= |\r?$)")
_CAS_ME = re.compile(rb"(?<= )cas=(\d+)")
_TIME_FLAG = re.compile(rb"(?<= )([tl])(\d+)(?= |\r?$)")
_TIME_ME = re.compile(rb"(?<= )(exp|la)=(-?\d+)")
_DUMP_TIME = re.compile(rb"(?<= )(exp|la)=(\d+)")
_CAS_TEMPLATE = re.compile(rb"\{cas:(\d+)([+-]\d+)?\}")


def _lines(reply: bytes) -> list[tuple[bool, bytes]]:
    """(is_status_line, piece): VA data blocks are skipped by their declared length."""
    out: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(reply):
        nl = reply.find(b"\n", pos)
        if nl < 0:
            out.append((False, reply[pos:]))
            break
        line = reply[pos : nl + 1]
        pos = nl + 1
        out.append((bool(_STATUS.match(line)), line))
        m = _VA.match(line)
        if m:
            size = int(m.group(1)) + 2
            out.append((False, reply[pos : pos + size]))
            pos += size
    return out


def cas_seen(reply: bytes) -> list[bytes]:
    """CAS values a reply reported, in order (return flags, ``me`` lines, gets lines)."""
    found: list[bytes] = []
    for status, line in _lines(reply):
        if status:
            found += _CAS_FLAG.findall(line) + _CAS_ME.findall(line)
        elif line.startswith(b"VALUE "):
            parts = line.split()
            if len(parts) == 5:
                found.append(parts[4])
    return [v for v in found if v != b"0"]


def _bucket(v: int) -> int:
    sign = -1 if v < 0 else 1
    return sign * ((abs(v) + 2) // 10)


def _is_dump(status: bool, line: bytes) -> bool:
    """A line of ``lru_crawler metadump`` output."""
    return not status and line.startswith(b"key=")


def normalise_meta(replies: Sequence[bytes]) -> list[bytes]:
    """Meta normalisation, then the classic corpus's (stats blocks, VALUE CAS, VERSION)."""
    cas_map: dict[bytes, bytes] = {}

    def cas_name(v: bytes) -> bytes:
        return cas_map.setdefault(v, b"<cas%d>" % (len(cas_map) + 1)) if v != b"0" else v

    out: list[bytes] = []
    for reply in replies:
        pieces = []
        lines = _lines(reply)
        # memcached's metadump order follows its segmented LRU, which a background thread
        # reshuffles: the dumped lines are a set. Their CAS values are named in key order, so
        # the names do not depend on the order either.
        keyed = iter(sorted(line for status, line in lines if _is_dump(status, line)))
        lines = [(st, next(keyed) if _is_dump(st, line) else line) for st, line in lines]
        for status, line in lines:
            if status:
                line = _CAS_FLAG.sub(lambda m: b"c" + cas_name(m.group(1)), line)
                line = _CAS_ME.sub(lambda m: b"cas=" + cas_name(m.group(1)), line)
                line = _TIME_FLAG.sub(
                    lambda m: m.group(1) + b"~%d" % _bucket(int(m.group(2))), line
                )
                line = _TIME_ME.sub(lambda m: m.group(1) + b"=~%d" % _bucket(int(m.group(2))), line)
            elif line.startswith(b"key="):  # lru_crawler metadump: absolute times
                line = _CAS_ME.sub(lambda m: b"cas=" + cas_name(m.group(1)), line)
                line = _DUMP_TIME.sub(lambda m: m.group(1) + b"=<t>", line)
            pieces.append(line)
        out.append(b"".join(pieces))
    return normalise(out)


def run_meta_case(sock: socket.socket, c: Case) -> list[bytes]:
    """Replay ``c``; like the classic corpus's ``run_case`` but CAS templates see meta CAS."""
    replies: list[bytes] = []
    seen: list[bytes] = []

    def repl(m: re.Match[bytes]) -> bytes:
        idx = int(m.group(1))
        if idx >= len(seen):
            return b"<nocas>"
        return b"%d" % (int(seen[idx]) + int(m.group(2) or b"0"))

    for st in c.steps:
        data = b"".join(_CAS_TEMPLATE.sub(repl, ch) for ch in st.chunks)
        if st.sentinel:
            data += SENTINEL
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            replies.append(b"<EOF>")
            break
        want = data.count(b"version\r\n") if st.sentinel else None
        quiet = QUIET_WITH_SENTINEL if st.sentinel else QUIET_NO_SENTINEL
        reply, eof = read_reply(sock, want, quiet)
        replies.append(reply + b"<EOF>" if eof else reply)
        for v in cas_seen(reply):
            if v not in seen:
                seen.append(v)
        if eof:
            break
    return replies


def ms(key: bytes, value: bytes, flags: bytes = b"") -> bytes:
    """A well-formed ``ms`` with its data block."""
    sep = b" " if flags else b""
    return b"ms %s %d%s%s\r\n%s\r\n" % (key, len(value), sep, flags, value)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

K250 = b"k" * 250
K251 = b"k" * 251
B64_FOO = b"Zm9v"  # "foo"
B64_BIN = b"AAECAwQFBgcICQ=="  # bytes 0..9
LONG_OPAQUE = b"O" + b"9" * 32  # 33 bytes: one over memcached's limit


def _mg_cases() -> list[Case]:
    return [
        case("mg_miss", b"mg a\r\nmg a v\r\n"),
        case("mg_miss_echoes_opaque_and_key", b"mg a v O123 k t\r\n"),
        case("mg_hit_no_flags", ms(b"a", b"hi") + b"mg a\r\n"),
        case("mg_hit_value", ms(b"a", b"hello") + b"mg a v\r\n"),
        case("mg_all_return_flags", ms(b"a", b"hi", b"F7 T100") + b"mg a s v f t c k O9 h l\r\n"),
        case("mg_flags_order_is_kept", ms(b"a", b"hi") + b"mg a k c v s O1 f\r\n"),
        case("mg_zero_length_value", ms(b"a", b"") + b"mg a v s\r\n"),
        case("mg_value_with_crlf_inside", ms(b"a", b"x\r\ny") + b"mg a v\r\n"),
        case("mg_quiet_miss_suppressed", b"mg a v q\r\nmg b q k O5\r\nmn\r\n"),
        case("mg_quiet_hit_shown", ms(b"a", b"hi") + b"mg a v q\r\nmn\r\n"),
        case("mg_hit_before_after_fetch", ms(b"a", b"hi") + b"mg a h\r\nmg a h\r\nmg a h\r\n"),
        case("mg_no_bump_keeps_unfetched", ms(b"a", b"hi") + b"mg a u h\r\nmg a h\r\nme a\r\n"),
        case("mg_last_access", ms(b"a", b"hi") + b"mg a l\r\n"),
        case("mg_ttl_never", ms(b"a", b"hi") + b"mg a t\r\n"),
        case("mg_ttl_relative", ms(b"a", b"hi", b"T1000") + b"mg a t\r\n"),
        case("mg_touch", ms(b"a", b"hi") + b"mg a T100 t\r\nmg a t\r\n"),
        case("mg_ttl_shown_in_flag_order", ms(b"a", b"hi", b"T1000") + b"mg a t T100 t\r\n"),
        case("mg_touch_negative_expires", ms(b"a", b"hi") + b"mg a T-1\r\nmg a v\r\n"),
        case("mg_touch_then_expired_ttl", ms(b"a", b"hi") + b"mg a T-1 t\r\n"),
        case("mg_vivify_on_miss", b"mg a N30 v c t s f\r\nmg a N30 v t\r\nmg a v\r\n"),
        case("mg_vivify_hit_does_nothing", ms(b"a", b"hi") + b"mg a N30 v t\r\n"),
        case("mg_vivify_then_set_clears_token", b"mg a N30\r\n" + ms(b"a", b"v") + b"mg a v\r\n"),
        case(
            "mg_recache_win_once",
            ms(b"a", b"hi", b"T100") + b"mg a R200 v\r\nmg a R200 v\r\nmg a R50 v\r\n",
        ),
        case("mg_recache_never_expires", ms(b"a", b"hi") + b"mg a R200 v\r\n"),
        case("mg_recache_lower_ttl", ms(b"a", b"hi", b"T300") + b"mg a R200 v\r\n"),
        case("mg_base64_key_miss", b"mg " + B64_FOO + b" b k v\r\n"),
        case(
            "mg_base64_key_hit_plain_set",
            ms(b"foo", b"x") + b"mg " + B64_FOO + b" b k v\r\n",
        ),
        case(
            "mg_base64_binary_key",
            ms(B64_BIN, b"bin", b"b") + b"mg " + B64_BIN + b" b k v\r\nme " + B64_BIN + b" b\r\n",
        ),
        case("mg_base64_bad", b"mg Zm9 b\r\nmg Zm9v= b\r\nmg Zg b\r\nmg Zm9v_ b k\r\n"),
        case("mg_only", b"mg\r\n"),
        case("mg_key_250", b"mg " + K250 + b" v\r\n"),
        case("mg_key_251", b"mg " + K251 + b" v\r\n"),
        case("mg_duplicate_flag", b"mg a v v\r\nmg a la l\r\n"),
        case("mg_invalid_flag", b"mg a x\r\nmg a E5\r\nmg a S\r\nmg a \x80\r\n"),
        case("mg_bad_tokens", b"mg a N\r\nmg a Tx\r\nmg a R\r\nmg a T99x\r\n"),
        case("mg_later_error_wins", b"mg a Nabc v v\r\nmg a Tx Nx\r\n"),
        case("mg_ignored_flags", b"mg a P L\r\n" + ms(b"a", b"hi") + b"mg a P L v\r\n"),
        case("mg_opaque_too_long_miss", b"mg a " + LONG_OPAQUE + b"\r\n"),
        case(
            "mg_opaque_too_long_hit",
            ms(b"a", b"hi") + b"mg a " + LONG_OPAQUE + b" T5\r\nmg a t\r\n",
        ),
        case("mg_opaque_max", b"mg a O" + b"1" * 31 + b" k\r\n"),
        case("mg_too_many_flags", b"mg a " + b" ".join(b"O%d" % i for i in range(18)) + b"\r\n"),
        case("mg_17_flags_ok", b"mg a " + b" ".join(b"O%d" % i for i in range(17)) + b"\r\n"),
        case("mg_multi_char_flags", ms(b"a", b"hi") + b"mg a vx kfoo sss\r\n"),
        case("mg_flushed", ms(b"a", b"hi") + b"flush_all\r\nmg a v\r\n"),
        case("mg_expired_via_set", b"set a 0 -1 1\r\nx\r\nmg a v\r\n"),
        case("mg_after_classic_set", b"set a 5 0 2\r\nhi\r\nmg a f v s\r\n"),
        case("mg_large_value", ms(b"a", b"z" * 600000) + b"mg a s\r\n"),
        case("mg_bare_lf", ms(b"a", b"hi") + b"mg a v\n"),
    ]


def _ms_cases() -> list[Case]:
    return [
        case("ms_basic", ms(b"a", b"hi") + b"get a\r\n"),
        case("ms_flags_and_ttl", ms(b"a", b"hi", b"F42 T100") + b"gets a\r\nmg a f t\r\n"),
        case("ms_return_flags", ms(b"a", b"hi", b"c k O77 b") + ms(b"a", b"hi", b"k c O1")),
        case("ms_quiet", ms(b"a", b"hi", b"q") + ms(b"a", b"hi", b"q ME") + b"mn\r\n"),
        case("ms_add_mode", ms(b"a", b"1", b"ME") + ms(b"a", b"2", b"ME c k") + b"mg a v\r\n"),
        case("ms_set_mode_explicit", ms(b"a", b"1", b"MS") + b"mg a v\r\n"),
        case("ms_replace_mode", ms(b"a", b"1", b"MR") + ms(b"b", b"0") + ms(b"b", b"2", b"MR")),
        case(
            "ms_append_prepend",
            ms(b"a", b"mid", b"F3 T100")
            + ms(b"a", b">", b"MA F9")
            + ms(b"a", b"<", b"MP")
            + b"mg a v f t\r\n",
        ),
        case("ms_append_missing", ms(b"a", b"x", b"MA") + ms(b"a", b"x", b"MP")),
        case("ms_lowercase_mode", ms(b"a", b"x", b"Ms")),
        case("ms_bad_mode", ms(b"a", b"x", b"MZ") + ms(b"a", b"x", b"MSS") + b"mg a\r\n"),
        case("ms_cas_match", ms(b"a", b"1", b"c") + b"ms a 1 C{cas:0} c\r\n2\r\nmg a v c\r\n"),
        case("ms_cas_mismatch", ms(b"a", b"1", b"c") + b"ms a 1 C{cas:0+1} c\r\n2\r\nmg a v\r\n"),
        case("ms_cas_zero", ms(b"a", b"1") + ms(b"a", b"2", b"C0") + b"mg a v\r\n"),
        case("ms_cas_missing", ms(b"a", b"1", b"C5 c")),
        case("ms_cas_replace_mode", ms(b"a", b"1", b"c") + b"ms a 1 MR C{cas:0}\r\n2\r\n"),
        case(
            "ms_cas_append",
            ms(b"a", b"1", b"c")
            + b"ms a 1 MA C{cas:0}\r\n2\r\n"
            + b"ms a 1 MA C{cas:0}\r\n3\r\nmg a v\r\n",
        ),
        case("ms_cas_add_ignored", ms(b"a", b"1") + ms(b"a", b"2", b"ME C1")),
        case(
            "ms_invalidate_older_cas",
            ms(b"a", b"1", b"c T100") + b"ms a 1 I C{cas:0-1} T5\r\n2\r\nmg a v c t\r\nmg a v\r\n",
        ),
        case(
            "ms_invalidate_newer_cas",
            ms(b"a", b"1", b"c") + b"ms a 1 I C{cas:0+5}\r\n2\r\nmg a v\r\n",
        ),
        case("ms_invalidate_without_cas", ms(b"a", b"1") + ms(b"a", b"2", b"I") + b"mg a v\r\n"),
        case(
            "ms_invalidate_then_fresh_set",
            ms(b"a", b"1", b"c") + b"ms a 1 I C{cas:0-1}\r\n2\r\n" + ms(b"a", b"3") + b"mg a v\r\n",
        ),
        case("ms_only", b"ms\r\n"),
        case("ms_no_length", b"ms a\r\nmg a\r\n"),
        case("ms_bad_length", b"ms a x\r\nhi\r\n"),
        case("ms_negative_length", b"ms a -1\r\nhi\r\n"),
        case("ms_length_int_max", b"ms a 2147483646\r\nmg a\r\n"),
        case("ms_key_251", b"ms " + K251 + b" 2\r\nhi\r\n"),
        case("ms_key_250", ms(K250, b"hi") + b"mg " + K250 + b" s\r\n"),
        case(
            "ms_too_many_flags",
            b"ms a 2 " + b" ".join(b"O%d" % i for i in range(17)) + b"\r\nhi\r\n",
        ),
        case("ms_invalid_flag_swallows", ms(b"a", b"get a", b"Z") + b"mg a\r\n"),
        case("ms_duplicate_flag_swallows", ms(b"a", b"hi", b"T1 T2") + b"mg a\r\n"),
        case(
            "ms_bad_flags_value",
            ms(b"a", b"hi", b"F-1")
            + ms(b"a", b"hi", b"Fx")
            + ms(b"a", b"hi", b"F4294967296")
            + b"mg a f\r\n",
        ),
        case("ms_bad_ttl", ms(b"a", b"hi", b"Tx") + ms(b"a", b"hi", b"T")),
        case("ms_bad_cas_token", ms(b"a", b"hi", b"Cx")),
        case("ms_negative_ttl", ms(b"a", b"hi", b"T-1") + b"mg a v\r\n"),
        case("ms_opaque_too_long", ms(b"a", b"hi", LONG_OPAQUE) + b"mg a\r\n"),
        case("ms_opaque_and_bad_mode", ms(b"a", b"hi", LONG_OPAQUE + b" MX")),
        case("ms_bad_data_chunk", b"ms a 2\r\nhix\r\nmg a\r\n"),
        case("ms_bad_data_chunk_quiet", b"ms a 2 q\r\nhix\r\n"),
        case("ms_bad_base64_key", ms(b"Zm9", b"hi", b"b") + b"mg a\r\n"),
        case("ms_base64_key", ms(B64_FOO, b"hi", b"b k c") + b"get foo\r\nmg foo k v\r\n"),
        case("ms_too_large", b"ms a 2000000\r\n" + b"z" * 2000000 + b"\r\nmg a\r\n"),
        case(
            "ms_too_large_drops_old",
            ms(b"a", b"old") + b"ms a 1048577\r\n" + b"z" * 1048577 + b"\r\nmg a v\r\n",
        ),
        case("ms_item_max_fits", b"ms a 1048000\r\n" + b"z" * 1048000 + b"\r\nmg a s\r\n"),
        case(
            "ms_append_past_limit",
            b"ms a 600000\r\n"
            + b"z" * 600000
            + b"\r\n"
            + b"ms a 600000 MA\r\n"
            + b"z" * 600000
            + b"\r\nmg a s\r\n",
        ),
        case("ms_split_writes", [b"ms a 5 T", b"0 F1\r\nhel", b"lo\r", b"\nmg a v f\r\n"]),
        case("ms_chunked_data", [b"ms a 10\r\n", b"0123456789", b"\r\n", b"mg a v\r\n"]),
    ]


def _md_ma_me_cases() -> list[Case]:
    return [
        case("md_hit_miss", ms(b"a", b"hi") + b"md a\r\nmd a\r\nmg a\r\n"),
        case("md_quiet", ms(b"a", b"hi") + b"md a q\r\nmd a q\r\nmn\r\n"),
        case("md_echo", ms(b"a", b"hi") + b"md a O5 k\r\nmd a k O6\r\n"),
        case("md_cas", ms(b"a", b"hi", b"c") + b"md a C{cas:0+1}\r\nmd a C{cas:0}\r\nmg a\r\n"),
        case("md_cas_zero", ms(b"a", b"hi") + b"md a C0\r\nmg a\r\n"),
        case(
            "md_invalidate",
            ms(b"a", b"hi", b"T100")
            + b"md a I T30\r\nmg a v c t\r\nmg a v c t\r\nmd a I\r\nmg a v\r\n",
        ),
        case("md_invalidate_miss", b"md a I\r\n"),
        case("md_ttl_without_invalidate", ms(b"a", b"hi") + b"md a T30\r\nmg a\r\n"),
        case("md_base64", ms(b"foo", b"hi") + b"md " + B64_FOO + b" b k\r\nmd Zm9 b\r\n"),
        case(
            "md_errors",
            b"md\r\nmd " + K251 + b"\r\nmd a x\r\nmd a q q\r\n" + b"md a " + LONG_OPAQUE + b"\r\n",
        ),
        case("md_too_many_flags", b"md a " + b" ".join(b"O%d" % i for i in range(18)) + b"\r\n"),
        case("ma_miss", b"ma a\r\nma a q\r\nma a O1 k\r\nmn\r\n"),
        case("ma_basic", ms(b"a", b"5") + b"ma a\r\nma a v\r\nma a D10 v\r\nmg a v\r\n"),
        case("ma_decr", ms(b"a", b"5") + b"ma a MD v\r\nma a M- D10 v\r\nma a MD v\r\n"),
        case(
            "ma_modes",
            ms(b"a", b"5")
            + b"ma a MI v\r\nma a M+ v\r\nma a Mi v\r\n"
            + b"ma a MX\r\nma a MII\r\n",
        ),
        case("ma_vivify", b"ma a N0 J10 v\r\nma a N0 J10 v\r\nma b N100 t v\r\nma c N0 q\r\n"),
        case("ma_vivify_default_initial", b"ma a N0 v\r\n"),
        case(
            "ma_return_flags",
            ms(b"a", b"1", b"T100") + b"ma a v t c k O1\r\nma a T500 t\r\nma a t\r\n",
        ),
        case("ma_ttl_order", ms(b"a", b"1", b"T100") + b"ma a t T500 t\r\n"),
        case("ma_quiet_hit", ms(b"a", b"1") + b"ma a q\r\nma a q v\r\nmn\r\nmg a v\r\n"),
        case(
            "ma_cas",
            ms(b"a", b"1", b"c") + b"ma a C{cas:0+1}\r\nma a C{cas:0} c v\r\n" + b"ma a C0 v\r\n",
        ),
        case("ma_wrap", ms(b"a", b"18446744073709551615") + b"ma a v\r\nma a MD v\r\n"),
        # Steps, not one pipeline: memcached changes a value in place only while no queued
        # reply still references the item, which depends on when its replies were written.
        steps(
            "ma_grows_value",
            ms(b"a", b"9", b"T100") + b"ma a v t c\r\n",
            b"mg a v t\r\n",
            b"ma a T500 t\r\n",
            b"mg a t\r\n",
        ),
        case("ma_pads_shorter", ms(b"a", b"10") + b"ma a MD v\r\nmg a v\r\nget a\r\n"),
        case("ma_non_numeric", ms(b"a", b"abc") + ms(b"b", b"") + b"ma a\r\nma b\r\n"),
        case(
            "ma_errors",
            b"ma\r\nma "
            + K251
            + b"\r\nma a Dx\r\nma a Jx\r\nma a D-1\r\n"
            + b"ma a t t\r\nma a "
            + LONG_OPAQUE
            + b"\r\n",
        ),
        case("ma_opaque_too_long_hit", ms(b"a", b"1") + b"ma a " + LONG_OPAQUE + b"\r\nmg a v\r\n"),
        case("ma_base64", ms(b"foo", b"1") + b"ma " + B64_FOO + b" b k v\r\n"),
        case("me_miss_hit", b"me a\r\n" + ms(b"a", b"hi") + b"me a\r\nmg a v\r\nme a\r\n"),
        case("me_ttl", ms(b"a", b"hi", b"T100 F5") + b"me a\r\n"),
        case("me_errors", b"me\r\nme " + K251 + b"\r\nme Zm9 b\r\n"),
        case("me_base64", ms(b"foo", b"hi") + b"me " + B64_FOO + b" b\r\nme Zm9v bx\r\n"),
        case("me_large", ms(b"a", b"z" * 600000) + b"me a\r\n"),
        case("mn_variants", b"mn\r\nmn x y\r\n"),
        case("meta_unknown", b"mx\r\nmgg a\r\nm\r\nMG a\r\n"),
    ]


def _stats_cases() -> list[Case]:
    return [
        steps(
            "meta_stats_counters",
            ms(b"a", b"1")
            + b"mg a v\r\nmg a T10\r\nmg b\r\nmg b T10\r\nmd a\r\nmd a\r\n"
            + b"ma c\r\nma c MD\r\nme a\r\nme c\r\nmg c N0\r\n"
            + ms(b"d", b"1", b"C5")
            + ms(b"d", b"z" * 2000000),
            b"stats\r\n",
            fresh=True,
        ),
        steps(
            "meta_stats_slabs_items",
            ms(b"a", b"1")
            + b"mg a v\r\nmg a T10\r\nma n N0\r\nma n\r\nma n MD\r\n"
            + ms(b"a", b"2", b"C1")
            + b"md a\r\n",
            b"stats slabs\r\nstats items\r\n",
            fresh=True,
        ),
    ]


def _ops_cases() -> list[Case]:
    """lru_crawler and stats detail. Crawl requests themselves are left out: both servers also
    crawl on their own schedule, so OK/BUSY depends on timing."""
    detail = (
        b"stats detail on\r\nset a:1 0 0 1\r\nx\r\nset b:2 0 0 1\r\nx\r\nset nocolon 0 0 1\r\nx\r\n"
        b"get a:1 a:2 b:9 nocolon\r\ngets a:1\r\ndelete a:1\r\ndelete zz:1\r\nmg b:2 v\r\n"
        b"incr a:5 1\r\ntouch b:2 10\r\ngat 10 b:2\r\nset big:1 0 0 2000000\r\n"
    )
    return [
        case(
            "lru_crawler_syntax",
            b"lru_crawler\r\nlru_crawler foo\r\nlru_crawler crawl\r\nlru_crawler crawl 1 2\r\n"
            b"lru_crawler crawl 0\r\nlru_crawler crawl 64\r\nlru_crawler crawl x\r\n"
            b"lru_crawler crawl 1,70\r\nlru_crawler metadump 70\r\nlru_crawler metadump x\r\n"
            b"lru_crawler sleep x\r\nlru_crawler sleep 1000001\r\nlru_crawler tocrawl -1\r\n"
            b"lru_crawler enable extra\r\n",
        ),
        case(
            "lru_crawler_settings",
            b"lru_crawler sleep 250\r\nlru_crawler tocrawl 77\r\nlru_crawler enable\r\n"
            b"stats settings\r\n",
            fresh=True,
        ),
        # (disable/enable is left to test_ops.py: memcached stops and starts its crawler thread
        # asynchronously, so what it answers right after a disable races that thread)
        case(
            "lru_crawler_starts_disabled",
            b"lru_crawler crawl 1\r\nlru_crawler enable\r\n",
            fresh=True,
            server_args=("-o", "no_lru_crawler"),
        ),
        steps(
            "metadump",
            b"set k:1 5 0 1\r\nx\r\nset k/2 0 100 2\r\nxy\r\nmg k:1 v\r\n"
            + ms(b"big", b"z" * 2000),
            b"lru_crawler metadump all\r\n",
            b"lru_crawler metadump 1\r\n",
            b"lru_crawler metadump 2,3\r\n",
            b"lru_crawler metadump hash\r\n",
            # memcached leaves input that followed a metadump unread until more arrives, so a
            # sentinel would stall it: these steps are read until the server is quiet.
            sentinel=False,
        ),
        case("metadump_pipelined", b"set a 0 0 1\r\nx\r\nlru_crawler metadump all\r\n"),
        case(
            "metadump_disabled",
            b"lru_crawler metadump all\r\nstats cachedump 1 1\r\n",
            fresh=True,
            server_args=("-X",),
        ),
        steps(
            "stats_detail",
            b"stats detail dump\r\nstats detail\r\nstats detail foo\r\n",
            detail + b"z" * 2000000 + b"\r\nstats detail dump\r\n",
            b"stats detail off\r\nget a:1\r\nstats detail dump\r\nstats settings\r\n",
            b"stats reset\r\nstats detail dump\r\n",
            fresh=True,
        ),
        steps(
            "stats_detail_order_and_delimiter",
            b"set a:b:c 0 0 1\r\nx\r\nstats detail on\r\nset a:b:c 0 0 1\r\nx\r\n"
            b"set a%20b:c 0 0 1\r\nx\r\nset :x 0 0 1\r\nx\r\nset zz: 0 0 1\r\nx\r\n"
            b"set 1:x 0 0 1\r\nx\r\nset 2:x 0 0 1\r\nx\r\nset ab:x 0 0 1\r\nx\r\n"
            b"set abc:x 0 0 1\r\nx\r\nset a:x 0 0 z\r\n",
            b"stats detail dump\r\n",
            fresh=True,
        ),
        steps(
            "stats_detail_custom_delimiter",
            b"set a:1 0 0 1\r\nx\r\nset a/1 0 0 1\r\nx\r\nget a/2\r\n",
            b"stats detail dump\r\nstats settings\r\n",
            fresh=True,
            server_args=("-D", "/"),
        ),
    ]


OPS_CASES: list[Case] = _ops_cases()
META_CASES: list[Case] = _mg_cases() + _ms_cases() + _md_ma_me_cases() + _stats_cases()
_names = [c.name for c in META_CASES]
assert len(_names) == len(set(_names)), "duplicate meta case names"

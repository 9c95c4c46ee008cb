"""Response parsing on exact bytes, and that the engine never counts a bad value as a hit."""

from __future__ import annotations

import pytest

from memcache_server.load.engine import Engine
from memcache_server.load.protocol import ErrorReply, ProtocolError, parse_get, parse_set
from memcache_server.load.stats import Interval
from memcache_server.load.values import make_value


def test_parse_get_hit_miss_incomplete() -> None:
    buf = b"VALUE k 0 3\r\nabc\r\nEND\r\nEND\r\n"
    assert parse_get(buf, 0) == (len(b"VALUE k 0 3\r\nabc\r\nEND\r\n"), [(b"k", b"0", b"abc")])
    assert parse_get(buf, 23) == (len(buf), [])
    for cut in range(1, 23):
        assert parse_get(buf[:cut], 0) is None


def test_parse_get_errors() -> None:
    with pytest.raises(ErrorReply) as e:
        parse_get(b"SERVER_ERROR out of memory\r\n", 0)
    assert e.value.kind == "server_error"
    with pytest.raises(ProtocolError):
        parse_get(b"VALUE k 0 3\r\nabcd\r\nEND\r\n", 0)  # length mismatch
    with pytest.raises(ProtocolError):
        parse_get(b"STORED\r\n", 0)
    with pytest.raises(ProtocolError):
        parse_get(b"VALUE k 0\r\n", 0)


def test_parse_set() -> None:
    assert parse_set(b"STORED\r\n", 0) == 8
    assert parse_set(b"STOR", 0) is None
    with pytest.raises(ErrorReply) as e:
        parse_set(b"NOT_STORED\r\n", 0)
    assert e.value.kind == "not_stored"
    with pytest.raises(ProtocolError):
        parse_set(b"VALUE x\r\n", 0)


def test_check_get_classifies() -> None:
    good = make_value(b"a", 1, 50)
    st = Interval()
    Engine._check_get((b"a",), [(b"a", b"0", good)], st)
    Engine._check_get((b"a",), [], st)
    Engine._check_get((b"a",), [(b"a", b"0", make_value(b"b", 1, 50))], st)
    Engine._check_get((b"a",), [(b"a", b"0", good[:20] + make_value(b"a", 2, 50)[20:])], st)
    Engine._check_get((b"a",), [(b"zzz", b"0", good)], st)
    Engine._check_get((b"a",), [(b"a", b"5", good)], st)
    Engine._check_get(
        (b"a", b"b", b"c"), [(b"a", b"0", good), (b"a", b"0", good), (b"x", b"0", good)], st
    )
    assert st.hits == 2 and st.misses == 2 + 1  # 1 single miss; b and c missing in the multi
    assert st.errors == {
        "value_foreign": 2,
        "value_torn": 1,
        "unexpected": 3,
    }
    assert st.gets == 7 and st.get_keys == 9

"""pymemcache's Client through every verb against a real node (and the same calls on real
memcached, so every expectation here is memcached's behaviour too)."""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator

import pytest
from procs import ServerProc, start_memcached, start_node
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError
from reference import need_memcached

VERSION = b"1.6.18"


@pytest.fixture(params=["node", "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProc]:
    if request.param == "memcached":
        need_memcached()
        srv = start_memcached()
    else:
        srv = start_node()
    yield srv
    # real memcached takes a second to exit on SIGTERM; it holds nothing worth a clean stop
    srv.stop(signal.SIGKILL if request.param == "memcached" else signal.SIGTERM)


@pytest.fixture
def client(server: ServerProc) -> Iterator[Client]:
    c = Client(server.address, connect_timeout=5, timeout=10, no_delay=True, default_noreply=False)
    yield c
    c.close()


def test_set_get_delete(client: Client) -> None:
    assert client.set("k", b"v") is True
    assert client.get("k") == b"v"
    assert client.get("missing") is None
    assert client.get("missing", default=b"d") == b"d"
    assert client.delete("k") is True
    assert client.delete("k") is False
    assert client.get("k") is None


def test_get_many_and_set_many(client: Client) -> None:
    values = {f"key:{i}": b"value-%d" % i for i in range(100)}
    assert client.set_many(values) == []
    keys = list(values) + ["nope1", "nope2"]
    assert client.get_many(keys) == values  # keys come back as they were asked
    assert client.delete_many(list(values)[:50]) is True
    assert len(client.get_many(keys)) == 50


def test_gets_cas(client: Client) -> None:
    assert client.gets("k") == (None, None)
    assert client.cas("k", b"x", b"1") is None  # NOT_FOUND
    client.set("k", b"v1")
    value, unique = client.gets("k")
    assert value == b"v1" and int(unique) > 0
    assert client.cas("k", b"v2", int(unique) + 1000) is False  # EXISTS
    assert client.cas("k", b"v2", unique) is True
    assert client.get("k") == b"v2"
    assert client.cas("k", b"v3", unique) is False  # the unique moved on
    many = client.gets_many(["k", "missing"])
    assert list(many) == ["k"] and many["k"][0] == b"v2"


def test_add_replace(client: Client) -> None:
    assert client.replace("k", b"x") is False
    assert client.add("k", b"a") is True
    assert client.add("k", b"b") is False
    assert client.get("k") == b"a"
    assert client.replace("k", b"c") is True
    assert client.get("k") == b"c"


def test_append_prepend(client: Client) -> None:
    assert client.append("k", b"x") is False
    assert client.prepend("k", b"x") is False
    client.set("k", b"mid", flags=5)
    assert client.append("k", b">>") is True
    assert client.prepend("k", b"<<") is True
    assert client.get("k") == b"<<mid>>"
    # raw_command returns the reply without its end token
    assert client.raw_command(b"get k", b"END\r\n") == b"VALUE k 5 7\r\n<<mid>>\r\n"


def test_incr_decr(client: Client) -> None:
    assert client.incr("n", 1) is None
    assert client.decr("n", 1) is None
    client.set("n", b"10")
    assert client.incr("n", 5) == 15
    assert client.decr("n", 6) == 9
    assert client.get("n") == b"9 "  # memcached pads a shorter number in place
    assert client.decr("n", 100) == 0
    client.set("n", b"18446744073709551615")
    assert client.incr("n", 1) == 0
    client.set("n", b"abc")
    with pytest.raises(MemcacheClientError, match="non-numeric"):
        client.incr("n", 1)
    with pytest.raises(MemcacheClientError, match="invalid numeric delta"):
        client.raw_command(b"incr n -1")


def test_touch_and_gat(client: Client) -> None:
    assert client.touch("k", 100) is False
    client.set("k", b"v", expire=100)
    assert client.touch("k", 0) is True
    assert client.touch("k", -1) is True  # negative: expired at once
    assert client.get("k") is None
    client.set("k", b"v")
    # pymemcache 4 has no gat/gats: send them raw
    # (raw_command strips the end token from the reply)
    assert client.raw_command(b"gat 100 k missing", b"END\r\n") == b"VALUE k 0 1\r\nv\r\n"
    reply = client.raw_command(b"gats 100 k", b"END\r\n")
    assert reply.startswith(b"VALUE k 0 1 ") and reply.endswith(b"\r\nv\r\n")
    assert client.raw_command(b"gat -1 k", b"END\r\n") == b"VALUE k 0 1\r\nv\r\n"
    assert client.get("k") is None


def test_flush_all_version_stats(client: Client) -> None:
    client.set_many({f"f{i}": b"x" for i in range(20)})
    assert client.stats()[b"curr_items"] == 20
    assert client.flush_all() is True
    assert client.get_many([f"f{i}" for i in range(20)]) == {}
    assert client.version() == VERSION
    stats = client.stats()
    assert stats[b"version"] == VERSION
    assert stats[b"cmd_flush"] == 1
    assert stats[b"limit_maxbytes"] == 64 * 1024 * 1024
    settings = client.stats("settings")
    assert settings[b"maxconns"] == 1024
    assert settings[b"item_size_max"] == 1024 * 1024
    items = client.stats("slabs")
    assert b"active_slabs" in items


def test_noreply_variants(server: ServerProc) -> None:
    c = Client(server.address, connect_timeout=5, timeout=10, default_noreply=True)
    try:
        assert c.set("k", b"1") is True
        assert c.add("k", b"2") is True  # noreply: the client cannot know it was NOT_STORED
        assert c.replace("k", b"3") is True
        assert c.append("k", b"4") is True
        assert c.prepend("k", b"0") is True
        assert c.incr("k", 1, noreply=True) is None
        assert c.decr("k", 1, noreply=True) is None
        assert c.touch("k", 100) is True
        assert c.delete("nope") is True
        assert c.set_many({"a": b"1", "b": b"2"}) == []
        assert c.flush_all(noreply=True) is True
        assert c.set("after", b"x") is True
        # every noreply command above was consumed silently: the stream is still in step
        assert c.get("after") == b"x"
        assert c.get("k") is None
        assert c.version() == VERSION
    finally:
        c.close()


def test_binary_values(client: Client) -> None:
    rng = random.Random(7)
    values = {
        "all": bytes(range(256)) * 4,
        "crlf": b"\r\n" * 100 + b"END\r\n",
        "nul": b"\x00" * 1000,
        "rand": rng.randbytes(50_000),
        "empty": b"",
    }
    for k, v in values.items():
        assert client.set(k, v, flags=0xFFFFFFFF) is True
    assert client.get_many(list(values)) == values


def test_large_values(client: Client) -> None:
    rng = random.Random(9)
    big = rng.randbytes(900 * 1024)
    assert client.set("big", big) is True
    assert client.get("big") == big
    assert client.append("big", b"tail") is True
    assert client.get("big") == big + b"tail"
    huge = b"h" * (1024 * 1024 + 1)
    with pytest.raises(MemcacheServerError, match="object too large"):
        client.set("huge", huge)
    assert client.get("big") == big + b"tail"  # the stream stayed in step
    almost = b"a" * (1024 * 1024 - 48 - 8 - 1 - 6 - 2)  # item size exactly -I
    assert client.set("almost", almost) is True
    assert client.get("almost") == almost


def test_quit(server: ServerProc) -> None:
    c = Client(server.address, connect_timeout=5, timeout=5, default_noreply=False)
    c.set("k", b"v")
    c.quit()
    assert c.get("k") == b"v"  # pymemcache reconnects after quit
    c.close()


def test_node_and_memcached_agree_on_a_script() -> None:
    """The same client calls on both servers give the same results (cas uniques aside)."""
    need_memcached()
    results = []
    for start in (start_node, start_memcached):
        srv = start()
        c = Client(srv.address, connect_timeout=5, timeout=10, default_noreply=False)
        try:
            out = []
            rng = random.Random(3)
            keys = [f"s{i}" for i in range(30)]
            for _ in range(600):
                k = rng.choice(keys)
                op = rng.choice(
                    [
                        "set",
                        "add",
                        "replace",
                        "append",
                        "prepend",
                        "get",
                        "delete",
                        "incr",
                        "decr",
                        "touch",
                        "gets_cas",
                    ]
                )
                v = str(rng.randint(0, 999)).encode()
                if op == "gets_cas":
                    value, unique = c.gets(k)
                    out.append(("gets", value))
                    if unique is not None:
                        out.append(("cas", c.cas(k, v + b"c", unique)))
                elif op in ("incr", "decr"):
                    try:
                        out.append((op, getattr(c, op)(k, rng.randint(0, 50))))
                    except MemcacheClientError as exc:
                        out.append((op, str(exc)))
                elif op == "get":
                    out.append((op, c.get(k)))
                elif op == "delete":
                    out.append((op, c.delete(k)))
                elif op == "touch":
                    out.append((op, c.touch(k, rng.choice([0, 100]))))
                else:
                    out.append((op, getattr(c, op)(k, v)))
            out.append(("all", c.get_many(keys)))
            results.append(out)
        finally:
            c.close()
            srv.stop(signal.SIGKILL if start is start_memcached else signal.SIGTERM)
    assert results[0] == results[1]

"""memcached's response budget under read_buf_mem_limit: the arithmetic its thread setup and
process_get_command do, checked against what memcached 1.6.18 was measured to take (the live
comparison is ``tests/integration/test_differential_read_buf.py``)."""

from __future__ import annotations

from memcache_server.commands.respbudget import BUFFER, get_keys_budget, keys_allowed

MB = 1024 * 1024


def test_buffers_per_thread_follow_memcacheds_thread_setup() -> None:
    assert get_keys_budget(0, 4) == 0  # no limit
    assert get_keys_budget(MB, 1) == 64
    assert get_keys_budget(MB, 4) == 16
    assert get_keys_budget(MB, 48) == 1  # a share under one buffer still gets one
    assert get_keys_budget(3 * MB, 2) == 96


def test_keys_allowed_leave_one_buffer_to_a_line_that_fits_it() -> None:
    short = [b"get"] + [b"k"] * 10
    assert keys_allowed(0, short) == -1
    assert keys_allowed(64, short) == 819  # memcached: 819 keys answered, 820 refused
    assert keys_allowed(16, short) == 195  # with -t 4: 195 answered, 196 refused
    assert keys_allowed(1, short) == 0
    long = [b"get"] + [b"x" * 99] * (BUFFER // 100 + 1)
    assert keys_allowed(64, long) == 832  # its own buffer: 832 answered, 833 refused

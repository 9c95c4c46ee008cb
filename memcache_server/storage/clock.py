"""Server time in whole seconds, as memcached keeps it, and exptime conversion.

memcached reads the clock once a second (``current_time``) rather than per request; we do the
same: a ``Clock`` holds ``now`` (unix seconds) that a timer thread refreshes, and tests drive a
``ManualClock``. Nothing here locks: a 64-bit word write is atomic.

A node's clock lives in its shared segment (``Clock.in_area``): the supervisor's ticker writes
``now`` and every worker process reads it, and ``debugtime`` in one worker moves ``offset``
for all. It is a ctypes structure rather than ``segment.Word`` attributes because ``now`` is
read on every request: measured on CPython 3.11, a ctypes field read costs 26 ns, a slotted
attribute 10 ns and a ``Word`` descriptor 118 ns. A clock built on its own (tests, the
discovery code) owns its memory and behaves the same.
"""

from __future__ import annotations

import ctypes
import time
from typing import TypeVar

__all__ = ["Clock", "ManualClock", "REALTIME_MAXDELTA", "exptime_to_abs", "CLOCK_BYTES"]

REALTIME_MAXDELTA = 60 * 60 * 24 * 30  # 30 days: larger exptimes are absolute unix times

_C = TypeVar("_C", bound="Clock")


class Clock(ctypes.Structure):
    """Wall-clock seconds, refreshed by ``tick()`` (called about every second by the server)."""

    _fields_ = [("now", ctypes.c_int64), ("started", ctypes.c_int64), ("offset", ctypes.c_int64)]
    now: int
    started: int
    offset: int  # debug time shift, seconds

    def __init__(self) -> None:
        super().__init__()
        self._begin()

    @classmethod
    def in_area(cls: type[_C], area: memoryview) -> _C:
        """A clock whose words are ``area`` (a writable view, e.g. carved from the segment),
        started now: every process mapping the area reads the one clock."""
        clock = cls.from_buffer(area)
        clock._begin()
        return clock

    def _begin(self) -> None:
        self.offset = 0
        self.now = int(time.time())
        # memcached sets process_started two seconds in the past so relative times never hit 0.
        self.started = self.now - 2

    def tick(self) -> int:
        self.now = int(time.time()) + self.offset
        return self.now


CLOCK_BYTES = ctypes.sizeof(Clock)


class ManualClock(Clock):
    """A clock that only moves when a test says so."""

    def __init__(self, now: int = 1_700_000_000) -> None:
        super().__init__()
        self.now = now
        self.started = now - 2

    def tick(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


# The latest expiry an item header holds (4 bytes of unix seconds: early 2106); later ones are
# kept as this, which no running clock reaches.
MAX_TIME = 0xFFFFFFFF


def exptime_to_abs(exptime: int, clock: Clock) -> int:
    """memcached's realtime(): 0 never expires; <= 30 days relative; else absolute unix time.

    Negative values expire at once (memcached maps them to an instant in the past). An absolute
    time at or before the process start also counts as already expired.
    """
    if exptime == 0:
        return 0
    if exptime < 0:
        return 1
    if exptime > REALTIME_MAXDELTA:
        if exptime <= clock.started:
            return 1
        return min(exptime, MAX_TIME)
    return exptime + clock.now

"""Server time in whole seconds, as memcached keeps it, and exptime conversion.

memcached reads the clock once a second (``current_time``) rather than per request; we do the
same: a ``Clock`` holds ``now`` (unix seconds) that a timer thread refreshes, and tests drive a
``ManualClock``. Nothing here locks: an int attribute write is atomic.
"""

from __future__ import annotations

import time

__all__ = ["Clock", "ManualClock", "REALTIME_MAXDELTA", "exptime_to_abs"]

REALTIME_MAXDELTA = 60 * 60 * 24 * 30  # 30 days: larger exptimes are absolute unix times


class Clock:
    """Wall-clock seconds, refreshed by ``tick()`` (called about every second by the server)."""

    __slots__ = ("now", "started", "offset")

    def __init__(self) -> None:
        self.offset = 0  # debug time shift, seconds
        self.now = int(time.time())
        # memcached sets process_started two seconds in the past so relative times never hit 0.
        self.started = self.now - 2

    def tick(self) -> int:
        self.now = int(time.time()) + self.offset
        return self.now


class ManualClock(Clock):
    """A clock that only moves when a test says so."""

    __slots__ = ()

    def __init__(self, now: int = 1_700_000_000) -> None:
        super().__init__()
        self.now = now
        self.started = now - 2

    def tick(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


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
        return exptime
    return exptime + clock.now

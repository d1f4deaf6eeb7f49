"""MicroPython's ticks arithmetic, so the same poll-driven code runs on the board and on CPython.

On the ESP32 `time.ticks_ms()` wraps at 2**30; times must only be compared through
ticks_diff. The firmware never reads a clock itself: every poll gets `now_ms` from its caller
(the main loop on the board, the virtual clock in the simulator).

Monotonic turns successive ticks into a non-wrapping millisecond count since boot, for the
few places that need one (TxGate's duty-cycle ledger, deadlines kept across long sleeps).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


TICKS_PERIOD = 1 << 30  # for the simulator (the firmware uses the constants below)
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def ticks_add(t, delta):
    """t + delta on the ticks circle (delta may be negative, |delta| < 2**29)."""
    return (t + delta) & _MASK


def ticks_diff(a, b):
    """Signed a - b on the ticks circle, as MicroPython's time.ticks_diff(a, b)."""
    return ((a - b + _HALF) & _MASK) - _HALF


class Monotonic:
    """Milliseconds since the first update(), from wrapping ticks. It must be updated at least
    once per 2**29 ms (6 days), which every poll loop does."""

    def __init__(self, now_ms):
        self._last = now_ms
        self.ms = 0

    def update(self, now_ms):
        d = ticks_diff(now_ms, self._last)
        if d > 0:
            self.ms += d
            self._last = now_ms
        return self.ms

    def to_ticks(self, mono_ms, now_ms):
        """The ticks value of monotonic time mono_ms, given that now_ms is the current tick."""
        d = mono_ms - self.ms
        if d > 0x1FFFFFFF:
            d = 0x1FFFFFFF
        return ticks_add(now_ms, d)

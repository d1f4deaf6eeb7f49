"""PollClock: the tick "now" inside a poll, i.e. the poll's start plus the time it has blocked.

A poll is not instantaneous: drivers wait for their measurements through the injected sleep_ms
(SHT3x 16 ms, VEML7700 one integration time, 105 ms and more while it auto-ranges). The MAC
must time its transmission and its RX windows from when the radio really transmits, not from
the poll's start: RX1 at SF7 is open for ~20 ms, so a 16 ms error already loses the downlink.

PollClock wraps the board's sleep_ms (hand `sleep_ms` to the drivers) and counts what was slept
since start(now_ms); now() is the tick the board's clock shows at that point. On the device
run() also injects time.ticks_ms, so blocking that does not go through sleep_ms (a UART read
waiting for its bytes) is counted too; in the simulator, time only passes in sleep_ms.
"""

from firmware.ticks import ticks_add, ticks_diff


class PollClock:
    def __init__(self, sleep_ms=None, ticks_ms=None):
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._start = 0
        self._slept = 0

    def start(self, now_ms):
        """A poll begins at tick now_ms."""
        self._start = now_ms
        self._slept = 0

    def sleep_ms(self, ms):
        """The sleep_ms given to drivers: sleeps through the board's own and counts it."""
        if ms > 0:
            self._slept += ms
            if self._sleep is not None:
                self._sleep(ms)

    def slept(self):
        """Milliseconds slept through sleep_ms since start()."""
        return self._slept

    def now(self):
        """The current tick: the poll's start plus what it slept (or the real clock, if later)."""
        t = ticks_add(self._start, self._slept)
        if self._ticks is not None:
            r = self._ticks()
            if ticks_diff(r, t) > 0:
                t = r
        return t

"""ReportTimer: when a device's next periodic report is due.

Each gap between reports is interval_s +- the jitter (uniform, drawn anew each time from the
device's random generator, the jitter capped at half the interval), so the mean interval holds
and devices whose schedules happen to line up (a city-wide power cut boots them together) drift
apart instead of colliding on every report. The first report is due at once; the MAC itself
delays the first uplink after a join or a resumed session. interval_s 0 = no periodic reports.
Times are monotonic milliseconds (firmware.ticks.Monotonic).
"""


class ReportTimer:
    def __init__(self, interval_s, jitter_s, rng):
        self.interval_s = interval_s
        self.jitter_s = jitter_s
        self._rng = rng  # rng(n) -> 0..n-1
        self.next = 0

    def jitter_ms(self):
        half = self.interval_s // 2
        return (self.jitter_s if self.jitter_s < half else half) * 1000

    def due(self, mono):
        return self.interval_s > 0 and mono >= self.next

    def schedule(self, mono):
        """The next report: interval_s +- the jitter from mono."""
        j = self.jitter_ms()
        self.next = mono + self.interval_s * 1000 - j + self._rng(2 * j + 1)

    def set_interval(self, interval_s, mono):
        self.interval_s = interval_s
        self.schedule(mono)

    def wake(self):
        """The monotonic ms at which a poll is needed, or None (no periodic reports)."""
        return self.next if self.interval_s else None

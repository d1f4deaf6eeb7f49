"""When a device may transmit: EU868 duty-cycle off-times and KR920 listen-before-talk.

Sans-I/O: the caller passes the time as an integer microsecond count from a monotonic clock
that does not wrap (on the device, accumulate time.ticks_diff into a Python int), and for
KR920 the channel's sensed RSSI. After each frame a sub-band owes silence of
ToA * (divisor - 1) (ETSI EN 300 220's per-transmission off-time), which keeps every sub-band's
duty cycle at or under 1/divisor over any window: the regulation can never be violated by
a caller that asks before it sends.
"""

from protocol.lorawan import airtime


class TxGate:
    def __init__(self, region):
        self.region = region
        self._free_at = {}  # sub-band (lo, hi, divisor) -> earliest start time in us

    def _band(self, freq_hz):
        band = self.region.sub_band(freq_hz)
        if band is None and self.region.sub_bands:
            raise ValueError("%d Hz is outside every %s sub-band" % (freq_hz, self.region.name))
        return band

    def earliest(self, freq_hz, now_us):
        """The earliest time at or after now_us when a frame may start on freq_hz."""
        band = self._band(freq_hz)
        if band is None:
            return now_us
        free = self._free_at.get(band, 0)
        return free if free > now_us else now_us

    def pick(self, channels, now_us):
        """(freq_hz, start_us) of the channel that frees up first; ties keep list order."""
        best = None
        for f in channels:
            t = self.earliest(f, now_us)
            if best is None or t < best[1]:
                best = (f, t)
        if best is None:
            raise ValueError("no channels to pick from")
        return best

    def clear_channel(self, rssi):
        """KR920 listen-before-talk: True when the channel, sensed for lbt_sense_time_us, was
        quieter (rssi, dBm) than the threshold. Regions without LBT always answer True."""
        if not self.region.lbt:
            return True
        return rssi < self.region.lbt_threshold_dbm

    def sent(self, freq_hz, now_us, airtime_us):
        """Record a frame that started at now_us; raises ValueError if the sub-band was not
        free then."""
        band = self._band(freq_hz)
        if band is None:
            return
        free = self._free_at.get(band, 0)
        if now_us < free:
            raise ValueError("duty cycle: %d Hz sub-band is silent until %d us, frame started at %d us"
                             % (freq_hz, free, now_us))
        self._free_at[band] = now_us + airtime_us + airtime.off_time_us(airtime_us, band[2])

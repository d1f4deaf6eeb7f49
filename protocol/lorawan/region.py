"""LoRaWAN regional parameters (RP002-1.0.x) for EU868 and KR920, as plain tables.

Everything is an integer: frequencies in Hz, times in microseconds, powers in dBm, duty cycles
as divisors (100 = 1 %). Max payloads are the no-repeater values with FOpts empty. EU868
DR8..11 (LR-FHSS) and AS/US plans are not covered. Every plan's default channels accept
DR0..DR5 and a CFList of type 0 (frequencies). The packet forwarder's `datr` strings for these
data rates are protocol.gwmp's (datr_string, dr_from_datr); the receive delays, the same in
every plan, are protocol.lorawan.network_side's.
"""

from protocol.lorawan import airtime

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


class RegionError(ValueError):
    """Unknown region, data rate, frequency or parameter for a region."""


class DataRate:
    """One row of a data-rate table: LoRa (sf, bw_hz) or FSK (bitrate). Made when asked for
    (Region.data_rate): a plan keeps its rows as bytes, not as objects on a device's heap."""

    def __init__(self, index, sf, bw_hz, bitrate=0):
        self.index = index
        self.sf = sf  # None for FSK
        self.bw_hz = bw_hz  # None for FSK
        self.bitrate = bitrate  # bits/s, FSK only


class Region:
    """A channel plan. Attributes are the table values; methods answer per-frame questions."""

    max_channels = 16
    rx1_dr_offsets = 6  # RX1DROffset 0..5, in both plans: RX1 DR = max(DR - offset, 0)
    fsk_bitrate = 0  # bits/s of the plan's FSK data rate (its last), 0 when it has none
    tx_power_offsets = (0, -2, -4, -6, -8, -10, -12, -14)  # TXPower 0..7 (0, the default, is
    # max EIRP): MaxEIRP - 2 * index
    sub_bands = ()  # (lo_hz, hi_hz, divisor), inclusive, first match wins
    eirp_caps = ()  # (lo_hz, hi_hz_exclusive, dBm): a lower EIRP limit in part of the band
    lbt = False
    lbt_sense_time_us = 0
    lbt_threshold_dbm = 0

    def __init__(self, name, band, grid, data_rates, max_mac_payload, default_channels,
                 rx2_frequency, max_eirp_dbm):
        """data_rates: (sf, bw_hz) of the LoRa data rates from DR0 on; max_mac_payload: M of
        every DR (an FSK one, given by fsk_bitrate, after them)."""
        self.name = name
        self.band = band  # (lo_hz, hi_hz) inclusive
        self.grid = grid  # (base_hz, step_hz): valid channels are base + k * step
        self._sf = bytes([d[0] for d in data_rates])  # per LoRa DR (bytes: no object per row)
        self._bw = bytes([d[1] // 125000 for d in data_rates])  # 125 kHz units
        self.n_data_rates = len(max_mac_payload)  # DR0 .. DR(n - 1)
        self.max_mac_payload = bytes(max_mac_payload)
        self.default_channels = default_channels
        self.join_channels = default_channels
        # the default RX2 window (RXParamSetupReq may move it): DR0 in both plans
        self.rx2_frequency = rx2_frequency
        self.rx2_dr = 0
        self.max_eirp_dbm = max_eirp_dbm

    def _dr(self, dr):
        if type(dr) is not int or not 0 <= dr < self.n_data_rates:
            raise RegionError("%s has no data rate %r (DR0..DR%d)"
                              % (self.name, dr, self.n_data_rates - 1))
        return dr

    def data_rate(self, dr):
        """The DataRate for index dr (its .sf/.bw_hz, or .bitrate for FSK), a new object."""
        if self._dr(dr) < len(self._sf):
            return DataRate(dr, self._sf[dr], self._bw[dr] * 125000)
        return DataRate(dr, None, None, self.fsk_bitrate)

    def is_lora(self, dr):
        """True when dr is one of the plan's LoRa data rates (not FSK, not past the table)."""
        return type(dr) is int and 0 <= dr < len(self._sf)

    def max_payload(self, dr):
        """N: largest FRMPayload at dr when FOpts is empty (M - FHDR(7) - FPort(1))."""
        return self.max_mac_payload[self._dr(dr)] - 8

    def max_mac_payload_len(self, dr):
        """M: largest MACPayload at dr."""
        return self.max_mac_payload[self._dr(dr)]

    def in_band(self, freq):
        return type(freq) is int and self.band[0] <= freq <= self.band[1]

    def channel_ok(self, freq):
        """True when freq is inside the band and on the channel grid (for NewChannelReq, CFList)."""
        return self.in_band(freq) and (freq - self.grid[0]) % self.grid[1] == 0

    def _freq(self, freq):
        if not self.in_band(freq):
            raise RegionError("%r Hz is outside %s (%d..%d Hz)"
                              % (freq, self.name, self.band[0], self.band[1]))

    def rx1(self, freq, dr, rx1_dr_offset):
        """(frequency, DR) of the RX1 window after an uplink on freq at dr: the same frequency
        in both regions."""
        self._freq(freq)
        self._dr(dr)
        if type(rx1_dr_offset) is not int or not 0 <= rx1_dr_offset < self.rx1_dr_offsets:
            raise RegionError("%s RX1DROffset must be 0..%d, got %r"
                              % (self.name, self.rx1_dr_offsets - 1, rx1_dr_offset))
        return freq, max(dr - rx1_dr_offset, 0)  # RP002, both plans

    def sub_band(self, freq):
        """(lo_hz, hi_hz, divisor) of the duty-cycle sub-band holding freq; None if none applies."""
        if type(freq) is not int:
            raise RegionError("frequency must be an int in Hz, got %r" % (freq,))
        for sb in self.sub_bands:
            if sb[0] <= freq <= sb[1]:
                return sb
        return None

    def max_eirp(self, freq):
        """Highest EIRP (dBm) allowed on freq."""
        self._freq(freq)
        for lo, hi, cap in self.eirp_caps:
            if lo <= freq < hi:
                return min(cap, self.max_eirp_dbm)
        return self.max_eirp_dbm

    def tx_power_eirp(self, tx_power, freq=None):
        """EIRP (dBm) for a LinkADRReq TXPower index, capped by the limit on freq if given."""
        if type(tx_power) is not int or not 0 <= tx_power < len(self.tx_power_offsets):
            raise RegionError("%s TXPower must be 0..%d, got %r"
                              % (self.name, len(self.tx_power_offsets) - 1, tx_power))
        eirp = self.max_eirp_dbm + self.tx_power_offsets[tx_power]
        if freq is not None:
            eirp = min(eirp, self.max_eirp(freq))
        return eirp

    def time_on_air_us(self, dr, payload_len, uplink=True):
        """Time on air (us) of payload_len PHYPayload bytes at dr; uplinks have a CRC, downlinks
        not."""
        if self._dr(dr) < len(self._sf):
            return airtime.time_on_air_us(payload_len, self._sf[dr], self._bw[dr] * 125000,
                                          crc=uplink)
        return airtime.fsk_time_on_air_us(payload_len, self.fsk_bitrate)


# Each plan is built when first asked for (region()), so a device keeps only its own.


def _build(name):
    """The plan called name, one of _NAMES."""
    if name == "KR920":
        r = Region(
            "KR920",
            (920900000, 923300000),
            (920900000, 200000),
            ((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000)),
            (59, 59, 59, 123, 250, 250),
            (922100000, 922300000, 922500000),
            921900000,
            14,
        )
        r.eirp_caps = ((920900000, 922000000, 10),)  # below 922 MHz: 10 dBm EIRP
        r.lbt = True  # no duty cycle; listen before talk before every transmission
        r.lbt_sense_time_us = 6000  # LoRaMac-node value; Korean rule is >= 5 ms
        r.lbt_threshold_dbm = -65  # over the 200 kHz channel
        return r
    r = Region(
        "EU868",
        (863000000, 870000000),
        (0, 100),  # any frequency in 100 Hz steps (the CFList / NewChannelReq resolution)
        ((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000),
         (7, 250000)),
        (59, 59, 59, 123, 250, 250, 250, 250),
        (868100000, 868300000, 868500000),
        869525000,
        16,
    )
    r.fsk_bitrate = 50000  # DR7: FSK 50 kbit/s
    # ETSI EN 300 220 sub-bands (the LoRaMac-node bands); a shared edge goes to the lower band.
    r.sub_bands = (
        (863000000, 865000000, 1000),  # 0.1 %
        (865000000, 868000000, 100),  # 1 %
        (868000000, 868600000, 100),  # 1 %  (the three default channels)
        (868700000, 869200000, 1000),  # 0.1 %
        (869400000, 869650000, 10),  # 10 % (RX2 869.525 MHz)
        (869700000, 870000000, 100),  # 1 %
    )
    return r


_NAMES = const(("EU868", "KR920"))
_built = {}


def region(name):
    """The Region called name ("EU868", "KR920"), built on first use (always the same object)."""
    r = _built.get(name) if isinstance(name, str) else None
    if r is None:
        if name not in _NAMES:
            raise RegionError("unknown region %r (known: %s)" % (name, ", ".join(_NAMES)))
        r = _built[name] = _build(name)
    return r


def __getattr__(name):
    """EU868, KR920 (region(name)) and REGIONS (every plan, built now) for the gateway/tests."""
    if name in _NAMES:
        return region(name)
    if name == "REGIONS":
        plans = {}
        for n in _NAMES:
            plans[n] = region(n)
        return plans
    raise AttributeError(name)

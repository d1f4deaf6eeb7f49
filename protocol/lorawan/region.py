"""LoRaWAN regional parameters (RP002-1.0.x) for EU868 and KR920, as plain tables.

Everything is an integer: frequencies in Hz, times in microseconds, powers in dBm, duty cycles
as divisors (100 = 1 %). Max payloads are the no-repeater values with FOpts empty. EU868
DR8..11 (LR-FHSS) and AS/US plans are not covered.
"""

from protocol.lorawan import airtime


class RegionError(ValueError):
    """Unknown region, data rate, frequency or parameter for a region."""


class DataRate:
    """One row of a data-rate table: LoRa (sf, bw_hz) or FSK (bitrate)."""

    def __init__(self, index, sf, bw_hz, bitrate=0):
        self.index = index
        self.sf = sf  # None for FSK
        self.bw_hz = bw_hz  # None for FSK
        self.bitrate = bitrate  # bits/s, FSK only
        self.modulation = "LORA" if sf else "FSK"

    def __repr__(self):
        if self.sf:
            return "DataRate(DR%d SF%d BW%d)" % (self.index, self.sf, self.bw_hz // 1000)
        return "DataRate(DR%d FSK %d bps)" % (self.index, self.bitrate)


def _lora(sfs_bws):
    return tuple(DataRate(i, sf, bw) for i, (sf, bw) in enumerate(sfs_bws))


_TX_POWER_OFFSETS = (0, -2, -4, -6, -8, -10, -12, -14)  # TXPower 0..7: MaxEIRP - 2*index


def _rx1_table(n):
    # RP002 tables for both regions: row = uplink DR, column = RX1DROffset 0..5 (bytes: compact).
    return tuple(bytes([max(dr - off, 0) for off in range(6)]) for dr in range(n))


class Region:
    """A channel plan. Attributes are the table values; methods answer per-frame questions."""

    receive_delay1_us = 1000000
    receive_delay2_us = 2000000
    join_accept_delay1_us = 5000000
    join_accept_delay2_us = 6000000
    max_channels = 16
    cflist_type = 0  # CFList = 5 extra channel frequencies (3 bytes each, 100 Hz units) + type
    tx_power_offsets = _TX_POWER_OFFSETS
    default_tx_power = 0  # TXPower index; 0 = max EIRP
    sub_bands = ()  # (lo_hz, hi_hz, divisor), inclusive, first match wins
    eirp_caps = ()  # (lo_hz, hi_hz_exclusive, dBm): a lower EIRP limit in part of the band
    lbt = False
    lbt_sense_time_us = 0
    lbt_threshold_dbm = 0
    lbt_bandwidth_hz = 0

    def __init__(self, name, band, grid, data_rates, max_mac_payload, rx1_dr_table,
                 default_channels, rx2, max_eirp_dbm):
        self.name = name
        self.band = band  # (lo_hz, hi_hz) inclusive
        self.grid = grid  # (base_hz, step_hz): valid channels are base + k * step
        self.data_rates = data_rates
        self.max_mac_payload = bytes(max_mac_payload)  # M per DR
        self.max_app_payload = bytes([m - 8 for m in max_mac_payload])  # N = M - FHDR(7) - FPort(1)
        self.rx1_dr_table = rx1_dr_table
        self.default_channels = default_channels
        self.join_channels = default_channels
        self.default_channel_drs = (0, 5)  # default channels accept DR0..DR5
        self.rx2_frequency, self.rx2_dr = rx2
        self.max_eirp_dbm = max_eirp_dbm
        self._by_datr = None  # datr -> DR, built on the first dr_from_datr (a device never asks)

    def __repr__(self):
        return "Region(%s)" % self.name

    @staticmethod
    def _datr(d):
        if d.sf:
            return "SF%dBW%d" % (d.sf, d.bw_hz // 1000)
        return d.bitrate

    def data_rate(self, dr):
        """The DataRate for index dr (its .sf/.bw_hz, or .bitrate for FSK)."""
        if type(dr) is not int or not 0 <= dr < len(self.data_rates):
            raise RegionError("%s has no data rate %r (DR0..DR%d)"
                              % (self.name, dr, len(self.data_rates) - 1))
        return self.data_rates[dr]

    def max_payload(self, dr):
        """N: largest FRMPayload at dr when FOpts is empty."""
        return self.max_app_payload[self.data_rate(dr).index]

    def max_mac_payload_len(self, dr):
        """M: largest MACPayload at dr."""
        return self.max_mac_payload[self.data_rate(dr).index]

    def in_band(self, freq):
        return type(freq) is int and self.band[0] <= freq <= self.band[1]

    def channel_ok(self, freq):
        """True when freq is inside the band and on the channel grid (for NewChannelReq, CFList)."""
        return self.in_band(freq) and (freq - self.grid[0]) % self.grid[1] == 0

    def _freq(self, freq):
        if not self.in_band(freq):
            raise RegionError("%r Hz is outside %s (%d..%d Hz)"
                              % (freq, self.name, self.band[0], self.band[1]))

    def rx1(self, uplink_freq, uplink_dr, rx1_dr_offset):
        """(frequency, DR) of the RX1 window: same frequency as the uplink in both regions."""
        self._freq(uplink_freq)
        self.data_rate(uplink_dr)
        if type(rx1_dr_offset) is not int or not 0 <= rx1_dr_offset < len(self.rx1_dr_table[0]):
            raise RegionError("%s RX1DROffset must be 0..%d, got %r"
                              % (self.name, len(self.rx1_dr_table[0]) - 1, rx1_dr_offset))
        return uplink_freq, self.rx1_dr_table[uplink_dr][rx1_dr_offset]

    def rx2(self):
        """Default (frequency, DR) of the RX2 window (RXParamSetupReq may change it)."""
        return self.rx2_frequency, self.rx2_dr

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

    def datr_string(self, dr):
        """Packet-forwarder `datr` for dr: "SF7BW125" for LoRa, the bit rate (int) for FSK."""
        return self._datr(self.data_rate(dr))

    def dr_from_datr(self, datr):
        """Data-rate index for a packet-forwarder `datr` ("SF12BW125", or 50000 for FSK)."""
        if self._by_datr is None:
            self._by_datr = {self._datr(d): d.index for d in self.data_rates}
        try:
            return self._by_datr[datr]
        except (KeyError, TypeError):
            raise RegionError("%s has no data rate for datr %r" % (self.name, datr))

    def time_on_air_us(self, dr, phy_len, uplink=True):
        """Time on air (us) of phy_len PHYPayload bytes at dr; uplinks have a CRC, downlinks not."""
        d = self.data_rate(dr)
        if d.sf:
            return airtime.time_on_air_us(phy_len, d.sf, d.bw_hz, crc=uplink)
        return airtime.fsk_time_on_air_us(phy_len, d.bitrate)


# Each plan is built when first asked for (region()), so a device keeps only its own.


def _eu868():
    r = Region(
        "EU868",
        band=(863000000, 870000000),
        grid=(0, 100),  # any frequency in 100 Hz steps (the CFList / NewChannelReq resolution)
        data_rates=_lora(((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000),
                          (7, 125000), (7, 250000))) + (DataRate(7, None, None, 50000),),
        max_mac_payload=(59, 59, 59, 123, 250, 250, 250, 250),
        rx1_dr_table=_rx1_table(8),
        default_channels=(868100000, 868300000, 868500000),
        rx2=(869525000, 0),
        max_eirp_dbm=16,
    )
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


def _kr920():
    r = Region(
        "KR920",
        band=(920900000, 923300000),
        grid=(920900000, 200000),
        data_rates=_lora(((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000),
                          (7, 125000))),
        max_mac_payload=(59, 59, 59, 123, 250, 250),
        rx1_dr_table=_rx1_table(6),
        default_channels=(922100000, 922300000, 922500000),
        rx2=(921900000, 0),
        max_eirp_dbm=14,
    )
    r.eirp_caps = ((920900000, 922000000, 10),)  # below 922 MHz: 10 dBm EIRP
    r.lbt = True  # no duty cycle; listen before talk before every transmission
    r.lbt_sense_time_us = 6000  # LoRaMac-node value; Korean rule is >= 5 ms
    r.lbt_threshold_dbm = -65
    r.lbt_bandwidth_hz = 200000
    return r


NAMES = ("EU868", "KR920")
_BUILD = (_eu868, _kr920)
_built = {}


def region(name):
    """The Region called name ("EU868", "KR920"), built on first use (always the same object)."""
    r = _built.get(name) if isinstance(name, str) else None
    if r is None:
        if name not in NAMES:
            raise RegionError("unknown region %r (known: %s)" % (name, ", ".join(NAMES)))
        r = _built[name] = _BUILD[NAMES.index(name)]()
    return r


def __getattr__(name):
    """EU868, KR920 (region(name)) and REGIONS (every plan, built now) for the gateway/tests."""
    if name in NAMES:
        return region(name)
    if name == "REGIONS":
        return {n: region(n) for n in NAMES}
    raise AttributeError(name)

"""Regional parameters: tables against RP002-1.0.x / LoRaMac-node values, errors, VM parity."""

import contextlib
import io

import pytest

import sim.mpvm
from protocol.lorawan import network_side
from protocol.lorawan.region import EU868, KR920, REGIONS, RegionError, region

# RP002-1.0.x tables, typed in from the specification (not derived from the module).
EU868_DRS = [(12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000),
             (7, 250000)]
KR920_DRS = [(12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000)]
EU868_M = [59, 59, 59, 123, 250, 250, 250, 250]
EU868_N = [51, 51, 51, 115, 242, 242, 242, 242]
KR920_M = [59, 59, 59, 123, 250, 250]
KR920_N = [51, 51, 51, 115, 242, 242]
# RX1 DR by (uplink DR row, RX1DROffset column 0..5), EU868 table; KR920 uses the first 6 rows
RX1_TABLE = [
    [0, 0, 0, 0, 0, 0],
    [1, 0, 0, 0, 0, 0],
    [2, 1, 0, 0, 0, 0],
    [3, 2, 1, 0, 0, 0],
    [4, 3, 2, 1, 0, 0],
    [5, 4, 3, 2, 1, 0],
    [6, 5, 4, 3, 2, 1],
    [7, 6, 5, 4, 3, 2],
]


def test_registry():
    assert REGIONS == {"EU868": EU868, "KR920": KR920}
    assert region("EU868") is EU868 and region("KR920") is KR920
    for bad in ("US915", "eu868", "", None, ["EU868"]):
        with pytest.raises(RegionError):
            region(bad)
    assert issubclass(RegionError, ValueError)


def test_data_rate_tables():
    for reg, drs in ((EU868, EU868_DRS), (KR920, KR920_DRS)):
        for i, (sf, bw) in enumerate(drs):
            d = reg.data_rate(i)
            assert (d.index, d.sf, d.bw_hz, d.bitrate) == (i, sf, bw, 0)
    fsk = EU868.data_rate(7)
    assert (fsk.index, fsk.bitrate, fsk.sf, fsk.bw_hz) == (7, 50000, None, None)
    for reg, top in ((EU868, 7), (KR920, 5)):
        assert reg.n_data_rates == top + 1
        for bad in (-1, top + 1, 15, "1", 1.0, None):
            with pytest.raises(RegionError):
                reg.data_rate(bad)
            assert not reg.is_lora(bad)
    assert [EU868.is_lora(dr) for dr in range(8)] == [True] * 7 + [False]  # DR7 is FSK
    assert all(KR920.is_lora(dr) for dr in range(6))


def test_max_payloads():
    assert [EU868.max_payload(dr) for dr in range(8)] == EU868_N
    assert [EU868.max_mac_payload_len(dr) for dr in range(8)] == EU868_M
    assert [KR920.max_payload(dr) for dr in range(6)] == KR920_N
    assert [KR920.max_mac_payload_len(dr) for dr in range(6)] == KR920_M
    with pytest.raises(RegionError):
        KR920.max_payload(6)


def test_rx1_table():
    for reg, rows in ((EU868, 8), (KR920, 6)):
        for dr in range(rows):
            for off in range(6):
                freq = reg.default_channels[dr % 3]
                assert reg.rx1(freq, dr, off) == (freq, RX1_TABLE[dr][off])
        with pytest.raises(RegionError):
            reg.rx1(reg.default_channels[0], 0, 6)
        with pytest.raises(RegionError):
            reg.rx1(reg.default_channels[0], 0, -1)
        with pytest.raises(RegionError):
            reg.rx1(reg.default_channels[0], rows, 0)
        with pytest.raises(RegionError):
            reg.rx1(433175000, 0, 0)
        with pytest.raises(RegionError):
            reg.rx1(float(reg.default_channels[0]), 0, 0)


def test_channels_windows_and_timing():
    assert EU868.default_channels == (868100000, 868300000, 868500000)
    assert KR920.default_channels == (922100000, 922300000, 922500000)
    for reg in (EU868, KR920):
        assert reg.join_channels == reg.default_channels
        assert reg.max_channels == 16
        assert all(reg.channel_ok(f) for f in reg.default_channels)
    assert (network_side.RECEIVE_DELAY1_US, network_side.RECEIVE_DELAY2_US) == (1000000, 2000000)
    assert (network_side.JOIN_ACCEPT_DELAY1_US, network_side.JOIN_ACCEPT_DELAY2_US) == (5000000, 6000000)
    assert (EU868.rx2_frequency, EU868.rx2_dr) == (869525000, 0)
    assert (KR920.rx2_frequency, KR920.rx2_dr) == (921900000, 0)
    # KR920 grid: 920.9 .. 923.3 MHz every 200 kHz
    grid = [f for f in range(920000000, 924000001, 100000) if KR920.channel_ok(f)]
    assert grid == list(range(920900000, 923300001, 200000)) and len(grid) == 13
    assert all(EU868.channel_ok(f) for f in (867100000, 863000000, 870000000))
    assert not EU868.channel_ok(862900000) and not EU868.channel_ok(867100050)
    assert not EU868.channel_ok(868.1e6)


def test_power():
    assert EU868.max_eirp_dbm == 16 and KR920.max_eirp_dbm == 14
    assert [EU868.tx_power_eirp(i) for i in range(8)] == [16, 14, 12, 10, 8, 6, 4, 2]
    assert [KR920.tx_power_eirp(i) for i in range(8)] == [14, 12, 10, 8, 6, 4, 2, 0]
    for reg in (EU868, KR920):
        for bad in (-1, 8, 15, None):
            with pytest.raises(RegionError):
                reg.tx_power_eirp(bad)
    # KR920: 10 dBm below 922 MHz, 14 dBm from 922.1 MHz
    freqs = (920900000, 921900000, 922100000, 923300000)
    assert [KR920.max_eirp(f) for f in freqs] == [10, 10, 14, 14]
    assert KR920.tx_power_eirp(0, 921100000) == 10 and KR920.tx_power_eirp(3, 921100000) == 8
    assert KR920.tx_power_eirp(0, 922100000) == 14
    assert EU868.max_eirp(868100000) == 16
    with pytest.raises(RegionError):
        KR920.max_eirp(868100000)


def test_duty_cycle_and_lbt():
    # ETSI EN 300 220 / LoRaMac-node EU868 bands; divisor 1000 = 0.1 %, 100 = 1 %, 10 = 10 %
    cases = {
        863100000: 1000, 864900000: 1000, 865200000: 100, 867900000: 100,
        868100000: 100, 868300000: 100, 868500000: 100, 868800000: 1000,
        869525000: 10, 869850000: 100,
    }
    for f, div in cases.items():
        lo, hi, got = EU868.sub_band(f)
        assert got == div and lo <= f <= hi, f
    for f in (862000000, 868650000, 869300000, 869675000, 870100000):
        assert EU868.sub_band(f) is None, f
    assert EU868.sub_band(868100000) == EU868.sub_band(868500000) != EU868.sub_band(867900000)
    assert not EU868.lbt
    assert all(KR920.sub_band(f) is None for f in KR920.default_channels)
    assert KR920.lbt and KR920.lbt_sense_time_us == 6000
    assert KR920.lbt_threshold_dbm == -65
    with pytest.raises(RegionError):
        EU868.sub_band("868.1")


def test_region_time_on_air():
    assert EU868.time_on_air_us(5, 33) == 71936  # SF7BW125, the worked example
    assert EU868.time_on_air_us(0, 37) == 1974272  # SF12BW125
    assert KR920.time_on_air_us(5, 33) == 71936
    assert EU868.time_on_air_us(6, 14) == 23168  # SF7BW250 (TTN calculator)
    assert EU868.time_on_air_us(7, 20) == 4960  # FSK: 31 bytes at 50 kbit/s
    assert EU868.time_on_air_us(5, 33, uplink=False) < EU868.time_on_air_us(5, 40)
    with pytest.raises(RegionError):
        KR920.time_on_air_us(7, 20)


VM_SCRIPT = """
from protocol import gwmp
from protocol.lorawan.region import REGIONS, region, RegionError
out = []
for name in sorted(REGIONS):
    r = region(name)
    for dr in range(r.n_data_rates):
        d = r.data_rate(dr)
        out.append('%s/%d:%r:%r:%d:%d:%s:%d:%d' % (
            name, dr, d.sf, d.bw_hz, d.bitrate, r.max_payload(dr), gwmp.datr_string(r, dr),
            gwmp.dr_from_datr(r, gwmp.datr_string(r, dr)), r.time_on_air_us(dr, 33)))
        for off in range(6):
            out.append('%d,%d' % r.rx1(r.default_channels[0], dr, off))
    out.append('%d,%d' % (r.rx2_frequency, r.rx2_dr))
    for f in (863100000, 868100000, 869525000, 921100000, 922100000):
        out.append(repr(r.sub_band(f)))
        if r.in_band(f):
            out.append('%d:%d' % (r.max_eirp(f), r.tx_power_eirp(1, f)))
    out.append(str(r.channel_ok(920900000)))
try:
    region('XX')
except RegionError:
    out.append('RegionError')
print(' '.join(out))
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_region_on_micropython_matches_cpython():
    vm = sim.mpvm.run(VM_SCRIPT).strip()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(VM_SCRIPT, {})
    assert vm == buf.getvalue().strip()
    assert "EU868/7:None:None:50000:242:50000:7:" in vm and vm.endswith("RegionError")

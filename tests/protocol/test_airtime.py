"""Time on air: AN1200.13 worked example, published calculator values, float model, VM parity."""

import contextlib
import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim.mpvm
from protocol.lorawan import airtime
from protocol.lorawan.airtime import (
    fsk_time_on_air_us,
    off_time_us,
    payload_symbols,
    symbol_time_ns,
    time_on_air_us,
)


def ref_toa_us(pl, sf, bw, cr=1, preamble=8, crc=True, explicit_header=True, de=None):
    """AN1200.13 in floats, written out independently of the module under test."""
    tsym = (2.0 ** sf) / bw  # seconds
    if de is None:
        de = 1 if tsym >= 0.016 else 0
    ih = 0 if explicit_header else 1
    crc_bit = 1 if crc else 0
    t_pre = (preamble + 4.25) * tsym
    blocks = math.ceil((8.0 * pl - 4 * sf + 28 + 16 * crc_bit - 20 * ih) / (4.0 * (sf - 2 * de)))
    n_pay = 8 + max(blocks * (cr + 4), 0)
    return (t_pre + n_pay * tsym) * 1e6


# --- the worked example from the project reference (docs/wire-format.md) -----------

def test_worked_example_sf7_pl20():
    assert symbol_time_ns(7, 125000) == 1024000  # 1.024 ms
    assert payload_symbols(20, 7, 125000) == 43
    toa = time_on_air_us(20, 7, 125000)
    assert toa == 56576  # 56.576 ms
    assert toa - 43 * 1024 == 12544  # Tpre = 12.25 symbols = 12.544 ms
    # a 20-byte application payload is a 33-byte PHYPayload
    assert time_on_air_us(33, 7, 125000) == 71936
    # under 1 %: 71.936 ms on air, then 99 times that silent -> one frame every 7.19 s
    assert off_time_us(71936, 100) == 7121664
    assert 71936 + off_time_us(71936, 100) == 7193600


# --- values published by independent calculators ---------------------------------------------
# (PHYPayload bytes, SF, BW Hz, CR, LDRO (None = auto), expected ms as published)
PUBLISHED = [
    # The Things Network airtime calculator (avbentem/airtime-calculator, src/lora/Airtime.test.ts)
    (14, 7, 125000, 1, None, "46.336"), (15, 7, 125000, 1, None, "46.336"),
    (16, 7, 125000, 1, None, "51.456"), (25, 7, 125000, 1, None, "61.696"),
    (14, 7, 250000, 1, None, "23.168"), (16, 7, 250000, 1, None, "25.728"),
    (25, 7, 250000, 1, None, "30.848"),
    (14, 7, 125000, 4, None, "61.696"), (16, 7, 125000, 4, None, "69.888"),
    (25, 7, 125000, 4, None, "86.272"),
    (14, 7, 250000, 4, None, "30.848"), (16, 7, 250000, 4, None, "34.944"),
    (25, 7, 250000, 4, None, "43.136"),
    (14, 8, 125000, 1, None, "82.432"), (15, 8, 125000, 1, None, "92.672"),
    (25, 8, 125000, 1, None, "113.152"),
    (14, 11, 125000, 1, None, "659.456"), (16, 11, 125000, 1, None, "659.456"),
    (25, 11, 125000, 1, None, "823.296"),
    # TTN forum "Spreadsheet for LoRa airtime calculation" (Google sheet
    # 1eL1nHxMidIcIdDE_l-DoY3kmE2e8b0YpOBW64WnYxj8): 24 B application + 13 B header, CR 4/5
    (37, 6, 125000, 1, None, "46.208"), (37, 7, 125000, 1, None, "82.176"),
    (37, 8, 125000, 1, None, "143.872"), (37, 9, 125000, 1, None, "267.264"),
    (37, 10, 125000, 1, None, "493.568"), (37, 11, 125000, 1, None, "1069.056"),
    (37, 12, 125000, 1, None, "1974.272"),
    # the original sheet of that thread (1voGAtQAjC1qBmaVuP1ApNKs1ekgUjavHuVQIXyYSvNc), LDRO off
    (13, 9, 125000, 1, False, "164.864"),
    # rfwireless-world.com LoRaWAN airtime calculator, examples 1 and 2 (10 bytes)
    (10, 7, 125000, 1, False, "41.216"), (10, 11, 125000, 1, True, "577.536"),
]


@pytest.mark.parametrize("pl,sf,bw,cr,ldro,ms", PUBLISHED)
def test_published_airtimes(pl, sf, bw, cr, ldro, ms):
    whole, frac = ms.split(".")
    expected_us = int(whole) * 1000 + int(frac.ljust(3, "0"))
    assert time_on_air_us(pl, sf, bw, cr=cr, low_dr_optimize=ldro) == expected_us


def test_low_dr_optimize_auto_matches_loramac_node():
    # LoRaMac-node sx1276.c: on for (125 kHz and SF11/SF12) or (250 kHz and SF12)
    for bw in (125000, 250000, 500000):
        for sf in range(6, 13):
            expected = (bw == 125000 and sf >= 11) or (bw == 250000 and sf == 12)
            assert airtime.low_dr_optimize_needed(sf, bw) == expected, (sf, bw)


def test_downlink_without_crc_is_not_longer():
    for sf in range(7, 13):
        for pl in (0, 13, 33, 64, 255):
            assert time_on_air_us(pl, sf, 125000, crc=False) <= time_on_air_us(pl, sf, 125000)


def test_fsk_50kbps():
    # (preamble 5 + sync 3 + length 1 + payload + CRC 2) bytes * 8 / 50 kbit/s
    for pl in (0, 1, 20, 33, 255):
        assert fsk_time_on_air_us(pl) == round((5 + 3 + 1 + pl + 2) * 8 / 50000 * 1e6)
    assert fsk_time_on_air_us(20) == 4960
    assert fsk_time_on_air_us(20, crc=False) == 4640
    assert fsk_time_on_air_us(1, bitrate=3) == math.ceil(12 * 8 / 3 * 1e6)  # rounds up


def test_off_time():
    assert off_time_us(1000, 1) == 0
    assert off_time_us(1000, 10) == 9000
    assert off_time_us(0, 1000) == 0
    for bad in ((-1, 100), (1.5, 100), (10, 0), (10, 1.0), (10, None)):
        with pytest.raises(ValueError):
            off_time_us(*bad)


@pytest.mark.parametrize("kwargs", [
    dict(payload_len=-1), dict(payload_len=256), dict(payload_len=1.0), dict(sf=5), dict(sf=13),
    dict(sf="7"), dict(bw_hz=0), dict(bw_hz=125.0), dict(cr=0), dict(cr=5), dict(preamble=-1),
])
def test_bad_parameters_raise_airtime_error(kwargs):
    args = dict(payload_len=20, sf=7, bw_hz=125000)
    args.update(kwargs)
    with pytest.raises(ValueError):
        time_on_air_us(**args)


SF = st.integers(6, 12)
BW = st.sampled_from([125000, 250000, 500000]) | st.integers(7800, 1000000)
PL = st.integers(0, 255)


@given(PL, SF, BW, st.integers(1, 4), st.integers(0, 70), st.booleans(), st.booleans(),
       st.sampled_from([None, True, False]))
def test_integer_matches_float_reference(pl, sf, bw, cr, pre, crc, eh, ldro):
    got = time_on_air_us(pl, sf, bw, cr, pre, crc, eh, ldro)
    de = None if ldro is None else int(ldro)
    ref = ref_toa_us(pl, sf, bw, cr, pre, crc, eh, de)
    assert isinstance(got, int)
    assert abs(got - ref) <= 1
    assert got >= ref - 1e-6 * ref  # rounded up, never down
    if bw in (125000, 250000, 500000):
        assert abs(got - ref) < 1e-6 * max(ref, 1.0)  # exact for the LoRaWAN bandwidths


@given(PL, PL, SF, BW, st.integers(1, 4), st.booleans())
def test_monotone_in_payload_length(a, b, sf, bw, cr, crc):
    lo, hi = min(a, b), max(a, b)
    assert time_on_air_us(lo, sf, bw, cr, crc=crc) <= time_on_air_us(hi, sf, bw, cr, crc=crc)


@given(PL, SF, SF, BW, st.integers(1, 4))
def test_monotone_in_spreading_factor(pl, a, b, bw, cr):
    lo, hi = min(a, b), max(a, b)
    assert time_on_air_us(pl, lo, bw, cr) <= time_on_air_us(pl, hi, bw, cr)


VM_SCRIPT = """
from protocol.lorawan import airtime as a
out = []
for sf in range(6, 13):
    for bw in (125000, 250000, 500000, 62500, 41700):
        for pl in (0, 13, 20, 33, 51, 115, 222, 255):
            out.append(a.time_on_air_us(pl, sf, bw))
            out.append(a.time_on_air_us(pl, sf, bw, 4, 8, False, True, None))
        out.append(a.symbol_time_ns(sf, bw))
for pl in (0, 20, 255):
    out.append(a.fsk_time_on_air_us(pl))
out.append(a.off_time_us(71936, 100))
try:
    a.time_on_air_us(20, 13, 125000)
except ValueError:
    out.append('ValueError')
print(' '.join([str(x) for x in out]))
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_airtime_on_micropython_matches_cpython():
    vm = sim.mpvm.run(VM_SCRIPT).strip()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(VM_SCRIPT, {})
    assert vm == buf.getvalue().strip()
    values = vm.split()
    assert len(values) == 7 * 5 * 17 + 5 and values[-1] == "ValueError"
    assert "56576" in values and "1974272" in values

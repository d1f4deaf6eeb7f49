"""Duty cycle and listen-before-talk: a device that asks the gate before sending never breaks the rules."""

from hypothesis import given, settings, strategies as st
import pytest

import sim.mpvm
from protocol.lorawan import airtime, region
from protocol.lorawan.txgate import TxGate

EU = region.region("EU868")
KR = region.region("KR920")


def test_one_percent_band_waits_99_times_the_airtime():
    g = TxGate(EU)
    toa = airtime.time_on_air_us(33, 7, 125000)  # 71 936 us, the reference's example
    assert g.earliest(868100000, 0) == 0
    g.sent(868100000, 0, toa)
    # 868.1 and 868.3 share the 1 % sub-band: at most one frame every 100 * ToA = 7.19 s
    assert g.earliest(868300000, 1000) == 100 * toa
    with pytest.raises(ValueError):
        g.sent(868300000, 100 * toa - 1, toa)
    # the 10 % sub-band (869.525 MHz) is independent
    assert g.earliest(869525000, 1000) == 1000


def test_pick_prefers_a_free_sub_band():
    g = TxGate(EU)
    g.sent(868100000, 0, 50000)
    freq, start = g.pick([868100000, 868300000, 869525000], 60000)
    assert (freq, start) == (869525000, 60000)


def test_outside_band_is_refused():
    with pytest.raises(ValueError):
        TxGate(EU).earliest(915000000, 0)


def test_kr920_has_no_duty_cycle_but_listens():
    g = TxGate(KR)
    g.sent(922100000, 0, 1000000)
    assert g.earliest(922100000, 1000000) == 1000000
    assert g.clear_channel(-80) is True
    assert g.clear_channel(-65) is False  # at the -65 dBm threshold the channel counts as busy
    assert TxGate(EU).clear_channel(-20) is True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([868100000, 868300000, 868500000, 869525000, 867100000]),
                          st.integers(0, 5000000), st.sampled_from([7, 9, 12]), st.integers(1, 60)),
                min_size=1, max_size=40))
def test_duty_cycle_never_exceeded(frames):
    """Send greedily whenever the gate allows; over any window the airtime per sub-band stays
    within its duty cycle (plus the one frame that may straddle the window's start)."""
    g = TxGate(EU)
    now = 0
    log = []
    for freq, wait, sf, length in frames:
        now += wait
        start = g.earliest(freq, now)
        toa = airtime.time_on_air_us(length + 13, sf, 125000)
        g.sent(freq, start, toa)
        log.append((EU.sub_band(freq), start, toa))
        now = start + toa
    for band in set(b for b, _, _ in log):
        sends = [(s, t) for b, s, t in log if b == band]
        divisor = band[2]
        for i, (s0, _) in enumerate(sends):
            for j in range(i, len(sends)):
                window = sends[j][0] + sends[j][1] - s0
                on_air = sum(t for _, t in sends[i:j + 1])
                last = sends[j][1]
                assert (on_air - last) * divisor <= window, (band, sends)


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_same_answers_on_micropython():
    script = """
from protocol.lorawan import region, airtime
from protocol.lorawan.txgate import TxGate
g = TxGate(region.region("EU868"))
toa = airtime.time_on_air_us(33, 7, 125000)
g.sent(868100000, 0, toa)
print(g.earliest(868300000, 1000), g.pick([868100000, 869525000], 5)[0])
"""
    g = TxGate(EU)
    toa = airtime.time_on_air_us(33, 7, 125000)
    g.sent(868100000, 0, toa)
    want = "%d %d" % (g.earliest(868300000, 1000), g.pick([868100000, 869525000], 5)[0])
    assert sim.mpvm.run(script).strip() == want

import math

import pytest
from hypothesis import given, settings, strategies as st

from protocol.lorawan import airtime
from sim.radio import (GOURSAUD_SIR_DB, Medium, RadioError, lorasim_der, noise_floor_dbm,
                       path_loss_db, range_m, sensitivity_dbm)

F0 = 868100000
BW = 125000


def dist_for_rssi(rssi, tx_power=14.0):
    return 40.0 * 10.0 ** ((tx_power - rssi - 127.41) / 20.8)


def gw_medium(model="lorasim", **kw):
    m = Medium(model=model, **kw)
    m.add_receiver("gw", 0.0, 0.0)
    return m


def outcome(ds):
    return {d.tx_id: d.reason for d in ds}


# -- path loss, sensitivity, noise -----------------------------------------------------------

def test_path_loss_values():
    assert path_loss_db(40) == pytest.approx(127.41)
    assert path_loss_db(400) == pytest.approx(127.41 + 20.8)
    assert path_loss_db(0.2) == path_loss_db(1)


def test_noise_floor_and_snr():
    assert noise_floor_dbm(125000) == pytest.approx(-174 + 10 * math.log10(125000) + 6)
    m = gw_medium()
    m.transmit("n", 40.0, 0.0, 0, F0, 7, BW, payload_len=20)
    (d,) = m.deliveries(10 ** 6)
    assert d.rssi == pytest.approx(14 - 127.41)
    assert d.snr == pytest.approx(d.rssi - noise_floor_dbm(BW))
    assert d.airtime_us == airtime.time_on_air_us(20, 7, BW) == 56576
    assert d.end_us == d.airtime_us and d.ok


@pytest.mark.parametrize("sf,sens", [(7, -126.5), (12, -133.25)])
def test_sensitivity_cutoff(sf, sens):
    assert sensitivity_dbm(sf, BW) == sens
    edge = 40.0 * 10 ** ((14 - sens - 127.41) / 20.8)
    assert range_m(sf, BW) == pytest.approx(edge)
    m = gw_medium()
    m.transmit("in", edge * 0.999, 0.0, 0, F0, sf, BW, payload_len=20)
    m.transmit("out", -edge * 1.001, 0.0, 0, F0 + 200000, sf, BW, payload_len=20)
    ds = m.deliveries(10 ** 7)
    assert [d.tx_id for d in ds] == ["in"] and ds[0].ok
    assert ds[0].rssi >= sens


def test_below_sensitivity_does_not_interfere_lorasim():
    m = gw_medium()
    m.transmit("a", dist_for_rssi(-110), 0, 0, F0, 7, BW, payload_len=20)
    m.transmit("weak", -range_m(7, BW) * 1.5, 0, 1000, F0, 7, BW, payload_len=20)
    assert outcome(m.deliveries(10 ** 6)) == {"a": "ok"}


# -- collisions (LoRaSim) --------------------------------------------------------------------

def two_frames(rssi_a, rssi_b, start_b=1000, sf_b=7, f_b=F0, model="lorasim"):
    m = gw_medium(model)
    m.transmit("a", dist_for_rssi(rssi_a), 0, 0, F0, 7, BW, payload_len=20)
    m.transmit("b", -dist_for_rssi(rssi_b), 0, start_b, f_b, sf_b, BW, payload_len=20)
    return outcome(m.deliveries(10 ** 7))


def test_same_sf_3db_both_lost():
    assert two_frames(-100, -103) == {"a": "collision", "b": "collision"}
    assert two_frames(-103, -100) == {"a": "collision", "b": "collision"}


def test_same_sf_10db_stronger_survives():
    assert two_frames(-90, -100) == {"a": "ok", "b": "collision"}
    assert two_frames(-100, -90) == {"a": "collision", "b": "ok"}


def test_capture_threshold_exactly_6db():
    assert two_frames(-94, -100) == {"a": "ok", "b": "collision"}


def test_different_sf_both_survive():
    assert two_frames(-100, -100, sf_b=9) == {"a": "ok", "b": "ok"}


def test_different_channel_both_survive():
    assert two_frames(-100, -100, f_b=F0 + 200000) == {"a": "ok", "b": "ok"}


def test_non_overlapping_both_survive():
    toa = airtime.time_on_air_us(20, 7, BW)
    assert two_frames(-100, -100, start_b=toa) == {"a": "ok", "b": "ok"}
    # a 1 us overlap only touches b's early preamble: still harmless (critical-section rule)
    assert two_frames(-100, -100, start_b=toa - 1) == {"a": "ok", "b": "ok"}


def test_critical_section_edges():
    toa = airtime.time_on_air_us(20, 7, BW)
    tsym = 1024  # SF7 / 125 kHz
    cs = 3 * tsym  # critical section starts after the first 8 - 5 preamble symbols
    # interferer (a) ends exactly when the newcomer's critical section starts: nobody hurt
    assert two_frames(-100, -100, start_b=toa - cs) == {"a": "ok", "b": "ok"}
    # ... even when the newcomer is much weaker
    assert two_frames(-80, -100, start_b=toa - cs) == {"a": "ok", "b": "ok"}
    # one microsecond later: the overlap reaches the critical section -> power rule
    assert two_frames(-100, -100, start_b=toa - cs - 1) == {"a": "collision", "b": "collision"}
    assert two_frames(-80, -100, start_b=toa - cs - 1) == {"a": "ok", "b": "collision"}
    # SF12: symbol 32.768 ms
    m = gw_medium()
    toa12 = airtime.time_on_air_us(20, 12, BW)
    m.transmit("a", 50, 0, 0, F0, 12, BW, payload_len=20)
    m.transmit("b", -50, 0, toa12 - 3 * 32768, F0, 12, BW, payload_len=20)
    m.transmit("c", 0, 50, 2 * toa12, F0, 12, BW, payload_len=20)
    m.transmit("d", 0, -50, 3 * toa12 - 3 * 32768 - 1, F0, 12, BW, payload_len=20)
    assert outcome(m.deliveries(10 ** 8)) == {"a": "ok", "b": "ok", "c": "collision",
                                               "d": "collision"}


def test_nine_simultaneous_frames_eight_paths():
    m = gw_medium()
    for k in range(9):
        m.transmit(k, 30.0 + k, 0, 0, F0 + 200000 * k, 7, BW, payload_len=20)
    ds = m.deliveries(10 ** 6)
    assert len(ds) == 9
    assert sum(d.ok for d in ds) == 8
    assert outcome(ds)[8] == "no_path"
    # paths free again afterwards
    m.transmit("late", 30.0, 0, 10 ** 6, F0, 7, BW, payload_len=20)
    assert outcome(m.deliveries(2 * 10 ** 6)) == {"late": "ok"}


def test_max_paths_is_per_receiver():
    m = Medium()
    m.add_receiver("gw", 0, 0, max_paths=2)
    m.add_receiver("gw2", 10, 0)
    for k in range(3):
        m.transmit(k, 30.0, 0, 0, F0 + 200000 * k, 7, BW, payload_len=20)
    ds = m.deliveries(10 ** 6)
    assert sum(d.ok for d in ds if d.rx_id == "gw") == 2
    assert sum(d.ok for d in ds if d.rx_id == "gw2") == 3


# -- matrix model ------------------------------------------------------------------------------

def test_matrix_model():
    assert GOURSAUD_SIR_DB[0][5] == -20 and GOURSAUD_SIR_DB[5][5] == 6
    # SF12 interferer 40 dB stronger than the SF7 frame it covers: SIR -40 < -20 -> lost
    assert two_frames(-120, -80, start_b=0, sf_b=12, model="matrix")["a"] == "interference"
    assert two_frames(-120, -80, start_b=0, sf_b=12) == {"a": "ok", "b": "ok"}
    # weak inter-SF interferer: fine
    assert two_frames(-100, -100, sf_b=9, model="matrix") == {"a": "ok", "b": "ok"}
    # same SF: 10 dB -> stronger survives, 3 dB -> both lost
    assert two_frames(-90, -100, model="matrix") == {"a": "ok", "b": "interference"}
    assert two_frames(-100, -103, model="matrix") == {"a": "interference", "b": "interference"}


# -- downlinks, API --------------------------------------------------------------------------

def test_downlink_symmetric():
    m = Medium()
    m.add_receiver("gw", 0, 0)
    m.add_receiver("dev", 100, 0)
    m.transmit("gw", 0, 0, 0, 869525000, 12, BW, phy=b"\x60" + bytes(11), crc=False)
    (d,) = m.deliveries(10 ** 7)
    assert d.rx_id == "dev" and d.ok and d.phy == b"\x60" + bytes(11) and d.payload_len == 12
    assert d.airtime_us == airtime.time_on_air_us(12, 12, BW, crc=False)
    assert d.rssi == pytest.approx(14 - path_loss_db(100))


def test_clock_rules():
    m = gw_medium()
    m.transmit("a", 10, 0, 0, F0, 7, BW, payload_len=20)
    assert m.deliveries(1000) == []
    assert len(m.advance(10 ** 6)) == 1
    with pytest.raises(RadioError):
        m.transmit("a", 10, 0, 999, F0, 7, BW, payload_len=20)
    with pytest.raises(RadioError):
        m.deliveries(5)
    with pytest.raises(RadioError):
        Medium(model="nope")
    with pytest.raises(RadioError):
        m.transmit("a", 10, 0, 10 ** 6, F0, 7, 1000, payload_len=20)


def test_frame_ending_later_not_delivered_early():
    m = gw_medium()
    m.transmit("a", 10, 0, 0, F0, 7, BW, payload_len=20)
    assert m.deliveries(56575) == []
    (d,) = m.deliveries(56576)
    # a frame starting at the settled time does not overlap it
    m.transmit("b", 10, 0, 56576, F0, 7, BW, payload_len=20)
    assert d.ok and m.deliveries(2 * 56576)[0].ok


# -- properties ------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.floats(1.0, 160.0), st.floats(1.0, 160.0))
def test_rssi_decreases_with_distance(d1, d2):
    m = Medium()
    m.add_receiver("r1", d1, 0)
    m.add_receiver("r2", 0, -d2)
    m.transmit("n", 0, 0, 0, F0, 7, BW, payload_len=10)
    r = {d.rx_id: d.rssi for d in m.deliveries(10 ** 6)}
    # distances closer than float resolution of the path-loss formula give the same RSSI
    if d1 < d2 - 1e-6:
        assert r["r1"] > r["r2"]
    elif d1 > d2 + 1e-6:
        assert r["r1"] < r["r2"]


frames = st.lists(st.tuples(st.integers(0, 400000), st.sampled_from([7, 8, 12]),
                            st.integers(0, 2), st.floats(-300, 300), st.floats(-300, 300)),
                  max_size=25)


def run(fr, seed, model="lorasim", sigma=3.57):
    m = Medium(model=model, seed=seed, shadowing_sigma_db=sigma)
    m.add_receiver("gw1", 0, 0, max_paths=3)
    m.add_receiver("gw2", 150, 0)
    for i, (t, sf, ch, x, y) in enumerate(sorted(fr)):
        m.transmit(i, x, y, t, F0 + 200000 * ch, sf, BW, payload_len=20)
    return m, m.deliveries(100000) + m.deliveries(10 ** 7)


@settings(max_examples=60, deadline=None)
@given(frames, st.sampled_from(["lorasim", "matrix"]))
def test_delivered_never_exceeds_transmitted(fr, model):
    m, ds = run(fr, 1, model)
    keys = [(d.rx_id, d.tx_seq) for d in ds]
    assert len(keys) == len(set(keys))
    for rx in ("gw1", "gw2"):
        assert sum(d.ok for d in ds if d.rx_id == rx) <= m.transmitted == len(fr)
    assert all(d.reason in ("ok", "collision", "no_path", "interference") for d in ds)


@settings(max_examples=30, deadline=None)
@given(frames, st.integers(0, 2 ** 32))
def test_deterministic_with_seed(fr, seed):
    def sig(ds):
        return [(d.rx_id, d.tx_seq, d.rssi, d.reason) for d in ds]
    assert sig(run(fr, seed)[1]) == sig(run(fr, seed)[1])


# -- LoRaSim headline, qualitatively ---------------------------------------------------------

def test_lorasim_der_trend():
    der = {n: lorasim_der(n, sim_time_us=3 * 3600 * 10 ** 6, seed=7) for n in (10, 50, 200, 500)}
    assert der[10] > 0.9
    assert der[10] >= der[50] > der[200] > der[500]
    assert der[500] < 0.6

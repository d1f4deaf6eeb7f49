import pytest
from hypothesis import given, settings, strategies as st

from gateway.lorawan.dedup import Deduplicator, RadioMeta, Uplink
from protocol.gwmp import Rxpk

FRAME = bytes.fromhex("40785634120000010001aabbccdd")


def meta(fw, rssi=-100.0, snr=5.0, tmst=1000):
    return RadioMeta(fw, rssi, snr, 868100000, "SF7BW125", tmst)


def test_three_forwarders_one_uplink():
    d = Deduplicator(window_s=0.25)  # binary-exact times below
    d.add(FRAME, meta("A"), 10.0)
    d.add(bytearray(FRAME), meta("B"), 10.0625)
    d.add(FRAME, meta("C"), 10.1875)
    assert d.due(10.24) == []
    [up] = d.due(10.25)
    assert up.phy == FRAME and [m.forwarder for m in up.copies] == ["A", "B", "C"]
    assert d.counters == {"copies": 3, "groups": 1, "merged": 2, "late": 0, "forgotten": 0}
    assert d.due(99.0) == [] and len(d) == 0


def test_late_copy_counted_not_emitted_again():
    d = Deduplicator()
    d.add(FRAME, meta("A"), 0.0)
    assert len(d.due(0.3)) == 1
    d.add(FRAME, meta("B"), 0.4)
    assert d.due(5.0) == []
    assert d.counters["late"] == 1 and d.counters["groups"] == 1


def test_window_boundary_and_configurable_window():
    d = Deduplicator(window_s=1.0)
    d.add(FRAME, meta("A"), 0.0)
    d.add(FRAME, meta("B"), 0.999)  # inside [first, first + window)
    d.add(FRAME, meta("C"), 1.0)  # window closed, not yet released: late
    assert d.next_deadline() == 1.0
    [up] = d.due(1.0)
    assert [m.forwarder for m in up.copies] == ["A", "B"]
    assert d.counters["late"] == 1


def test_release_order_and_independent_groups():
    d = Deduplicator(window_s=0.25)
    other = FRAME[:-1] + b"\x00"
    d.add(FRAME, meta("A"), 0.0)
    d.add(other, meta("A"), 0.125)
    assert [u.phy for u in d.due(0.25)] == [FRAME]
    assert [u.phy for u in d.due(0.375)] == [other]


def test_released_keys_bounded():
    d = Deduplicator(remember_s=10.0, max_remembered=2)
    for i in range(4):
        d.add(bytes([i]) * 12, meta("A"), float(i))
        d.due(i + 0.5)
    assert len(d._released) == 2 and d.counters["forgotten"] == 2
    d.add(bytes([0]) * 12, meta("A"), 4.0)  # forgotten: a new group (fcnt check catches it)
    assert len(d.due(5.0)) == 1
    d.due(100.0)
    assert len(d._released) == 0  # expired by time


def test_best_highest_snr_then_rssi():
    up = Uplink(FRAME, [meta("A", -90, 2.0), meta("B", -110, 7.5), meta("C", -80, 7.5),
                        meta("D", -60, None)])
    assert up.best().forwarder == "C"
    assert Uplink(FRAME, [meta("X", -60, None), meta("Y", -120, -15.0)]).best().forwarder == "Y"
    assert Uplink(FRAME, [meta("P", -90, 1.0), meta("Q", -90, 1.0)]).best().forwarder == "P"


def test_from_rxpk():
    r = Rxpk(123456, 868300000, "SF9BW125", FRAME, -97, lsnr=-3.5)
    m = RadioMeta.from_rxpk(bytes.fromhex("aa555a0000000101"), r)
    assert m == RadioMeta("AA555A0000000101", -97, -3.5, 868300000, "SF9BW125", 123456)
    assert m.as_dict() == {"forwarder": "AA555A0000000101", "rssi": -97, "snr": -3.5,
                           "freq": 868300000, "datr": "SF9BW125", "tmst": 123456}


def test_bad_args():
    with pytest.raises(ValueError):
        Deduplicator(window_s=0)
    with pytest.raises(ValueError):
        Deduplicator(max_remembered=-1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_interleaving_emits_each_frame_once(data):
    n = data.draw(st.integers(1, 6))
    frames = [bytes([k]) * 14 for k in range(n)]
    events = []  # (time, frame index, forwarder)
    for k in range(n):
        t0 = data.draw(st.floats(0, 2.0))
        for c in range(data.draw(st.integers(1, 4))):
            dt = 0.0 if c == 0 else data.draw(st.floats(0, 0.5))
            events.append((t0 + dt, k, c))
    events.sort(key=lambda e: (e[0], e[2]))  # time order; the first copy of a frame is first
    due_at = set(data.draw(st.lists(st.integers(0, len(events)), max_size=len(events))))
    d = Deduplicator(window_s=0.2)
    out = []
    for i, (t, k, c) in enumerate(events):
        if i in due_at:
            out += d.due(t)
        d.add(frames[k], meta(str(c)), t)
    out += d.due(1e9)
    assert sorted(u.phy for u in out) == sorted(frames)
    assert d.counters["groups"] == n
    assert sum(len(u.copies) for u in out) + d.counters["late"] == len(events)
    for u in out:  # only copies inside the window were kept
        assert u.copies[0].forwarder == "0"

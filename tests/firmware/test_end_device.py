"""The class-A MAC (firmware/lorawan/device.py) against a scripted radio, with CPython playing the
network server through protocol.lorawan.session on the `cryptography` backend."""

import pytest
from hypothesis import given, settings, strategies as st

from firmware import config
from firmware.lorawan.device import EndDevice
from protocol.lorawan import frame, mac, network_side, region as _region
from sim.fakes import esp32
from tests.firmware.scripted_network import CFG, NetworkServer, ScriptedRadio, run


@pytest.fixture(autouse=True)
def fresh_flash(monkeypatch):
    monkeypatch.setattr(esp32, "FLASH", esp32.Flash())
    yield
    esp32.power_cut()


def device(radio, rng=lambda n: 0, **overrides):
    cfg = dict(CFG)
    cfg.update(overrides)
    # a set wall clock: DeviceTimeReq only after joins and once a day (tests below ask more)
    return EndDevice(radio, config.merge(cfg), esp32.NVS("lorawan"), rng=rng,
                     time_known=lambda: True)


def setup(region="EU868", rng=lambda n: 0, **overrides):
    ns = NetworkServer(region)
    radio = ScriptedRadio(region, on_uplink=ns.on_uplink)
    if region != "EU868":
        overrides["region"] = region
    return ns, radio, device(radio, rng, **overrides)


def joined(offset=0, **overrides):
    ns, radio, dev = setup(**overrides)
    t = run(dev, radio, 20000, offset=offset)
    assert dev.joined
    return ns, radio, dev, t


def test_join_accept_in_rx1():
    ns, radio, dev = setup()
    run(dev, radio, 20000)
    assert dev.joined and dev.dev_addr == ns.dev_addr and ns.nonces == [0]
    jr = radio.sent[0]
    assert network_side.decode(jr.phy).dev_nonce == 0
    # one window, opened 5 s after the end of the join-request, on its frequency and DR
    assert len(radio.windows) == 1
    opened, freq, sf, bw, _ = radio.windows[0]
    assert opened == pytest.approx(jr.end + 5000, abs=6) and freq == jr.freq and sf == jr.sf


def test_join_accept_in_rx2():
    ns, radio, dev = setup()
    ns.join_window = 2
    run(dev, radio, 20000)
    assert dev.joined
    (o1, f1, _, _, _), (o2, f2, sf2, _, _) = radio.windows
    jr = radio.sent[0]
    assert o2 == pytest.approx(jr.end + 6000, abs=6)
    assert (f2, sf2) == (869525000, 12)  # RX2: 869.525 MHz, DR0


def test_no_answer_backs_off_exponentially_with_fresh_devnonces():
    ns, radio, dev = setup(rng=lambda n: n // 2, join_backoff_min_s=10, join_backoff_max_s=40)
    ns.join_window = None
    run(dev, radio, 200000)
    assert not dev.joined
    starts = [tx.t for tx in radio.sent]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # each failed attempt costs RX2 (6 s + window) and then the back-off: 10, 20, 40, 40 s ...
    backoff = [g - 6000 for g in gaps]
    assert backoff[:4] == [pytest.approx(b, abs=400) for b in (10000, 20000, 40000, 40000)]
    assert ns.nonces == sorted(set(ns.nonces)) and len(ns.nonces) >= 5
    ns.join_window = 1
    run(dev, radio, 300000, 200000)
    assert dev.joined and dev.joins == 1


def test_confirmed_uplink_acked_and_downlink_delivered():
    ns, radio, dev, t = joined()
    got, results = [], []
    dev.on_downlink = lambda port, data: got.append((port, data))
    dev.on_result = lambda tag, ok: results.append((tag, ok))
    ns.downlink = (50, b"\x01\x07\x32\x00\x00", True)  # a confirmed downlink
    assert dev.send(11, b"\x01\x02\x03", confirmed=True, tag="alarm")
    t = run(dev, radio, t + 3000, t)
    up = ns.uplinks[-1]
    assert up.frame.confirmed and up.frame.fport == 11 and up.payload == b"\x01\x02\x03"
    assert results == [("alarm", True)] and got == [(50, b"\x01\x07\x32\x00\x00")]
    assert dev.downlinks == 1 and dev.retransmissions == 0
    # the confirmed downlink is acknowledged by the next uplink (an empty one if nothing is queued)
    run(dev, radio, t + 10000, t)
    assert ns.uplinks[-1].frame.ack and ns.uplinks[-1].frame.fport is None


def test_confirmed_uplink_retried_with_same_fcnt_then_failed():
    ns, radio, dev, t = joined(confirmed_retries=3, rejoin_after_failures=0)
    ns.ack_confirmed = False
    results = []
    dev.on_result = lambda tag, ok: results.append((tag, ok))
    dev.send(11, b"\x01", confirmed=True, tag=7)
    run(dev, radio, t + 60000, t)
    ups = ns.uplinks
    assert len(ups) == 3 and len({u.fcnt for u in ups}) == 1
    assert results == [(7, False)] and dev.failed == 1 and dev.retransmissions == 2
    # each retry waits at least ACK_TIMEOUT (1 s) after the RX2 window of the previous try
    for a, b in zip(ups, ups[1:]):
        assert b.airtime_t - a.airtime_t >= 2000 + 1000
    # the next uplink gets a new counter
    ns.ack_confirmed = True
    dev.send(10, b"\x02")
    run(dev, radio, t + 90000, t + 60000)
    assert ns.uplinks[-1].fcnt == ups[0].fcnt + 1


def test_rejoin_after_failed_confirmed_uplinks():
    ns, radio, dev, t = joined(confirmed_retries=1, rejoin_after_failures=2, join_jitter_s=0)
    ns.ack_confirmed = False
    for i in range(2):
        dev.send(11, b"\x01", confirmed=True)
    run(dev, radio, t + 60000, t)
    assert dev.failed == 2 and dev.joins == 2 and ns.nonces == [0, 1]


def test_mac_commands_answered_in_fopts():
    ns, radio, dev, t = joined()
    ns.fopts = mac.encode_commands([
        {"name": "LinkCheckAns", "margin": 12, "gw_cnt": 3},
        {"name": "DevStatusReq"},
        {"name": "RXTimingSetupReq", "delay": 2},
        {"name": "DutyCycleReq", "max_duty_cycle": 0},
    ], False)
    dev.send(10, b"\x01")
    t = run(dev, radio, t + 3000, t)
    assert dev.link_check == (12, 3)
    assert dev.downlinks == 1
    # the answers go in the next uplink, an empty one when the application has nothing queued
    t = run(dev, radio, t + 10000, t)
    cmds = mac.decode_commands(ns.uplinks[-1].frame.fopts, True)
    names = [c["name"] for c in cmds]
    assert names == ["RXTimingSetupAns", "DevStatusAns", "DutyCycleAns"]
    assert ns.uplinks[-1].frame.fport is None
    # RXTimingSetupAns is repeated until a downlink comes, without empty uplinks of its own
    n = len(ns.uplinks)
    t = run(dev, radio, t + 60000, t)
    assert len(ns.uplinks) == n
    dev.send(10, b"\x02")
    t = run(dev, radio, t + 10000, t)
    assert mac.decode_commands(ns.uplinks[-1].frame.fopts, True) == [{"cid": 8, "name": "RXTimingSetupAns"}]
    assert [c for c in cmds if c["name"] == "DevStatusAns"][0]["margin"] == 7  # last SNR
    # RX1 now opens 2 s after the uplink
    up = radio.sent[-1]
    assert radio.windows[-2][0] == pytest.approx(up.end + 2000, abs=6)


def test_malformed_mac_commands_and_foreign_frames_are_ignored():
    ns, radio, dev, t = joined()
    ns.fopts = b"\x02\x05\x01\xee\x01"  # LinkCheckAns, then an unknown CID
    dev.send(10, b"\x01")
    t = run(dev, radio, t + 10000, t)
    assert dev.link_check == (5, 1) and dev.downlinks == 1
    # a frame for another DevAddr and one with a broken MIC: not for us, no crash
    before = dev.bad_frames
    ns.dev_addr ^= 1
    dev.send(10, b"\x02", confirmed=True)
    ns.downlink = (50, b"\x01", False)
    run(dev, radio, t + 3000, t)
    assert dev.downlinks == 1 and dev.bad_frames == before


def test_link_adr_req_applied_and_bad_mask_refused():
    ns, radio, dev, t = joined()
    ns.fopts = mac.encode_commands([{"name": "LinkADRReq", "data_rate": 3, "tx_power": 2,
                                     "ch_mask": 0b010, "ch_mask_cntl": 0, "nb_trans": 1}], False)
    dev.send(10, b"\x01")
    t = run(dev, radio, t + 3000, t)
    assert dev.dr == 3 and dev.tx_power_dbm == 12
    t = run(dev, radio, t + 20000, t)  # the answer rides the next (empty) uplink
    ans = mac.decode_commands(ns.uplinks[-1].frame.fopts, True)[0]
    assert ans["channel_mask_ack"] and ans["data_rate_ack"] and ans["power_ack"]
    assert radio.sent[-1].freq == 868300000 and radio.sent[-1].sf == 9
    assert radio.sent[-1].power == 12
    ns.fopts = mac.encode_commands([{"name": "LinkADRReq", "data_rate": 5, "tx_power": 0,
                                     "ch_mask": 0b1000_0000, "ch_mask_cntl": 0, "nb_trans": 1}], False)
    dev.send(10, b"\x03")
    t = run(dev, radio, t + 60000, t)
    ans = mac.decode_commands(ns.uplinks[-1].frame.fopts, True)[0]
    assert not ans["channel_mask_ack"] and dev.dr == 3  # refused as a whole
    assert radio.sent[-1].freq == 868300000


def test_ticks_wrap_during_join_and_exchange():
    offset = (1 << 30) - 7000  # the device's ticks wrap 7 s after boot, mid-join
    ns, radio, dev, t = joined(offset=offset)
    dev.send(10, b"\x01", confirmed=True)
    run(dev, radio, t + 10000, t, offset=offset)
    assert dev.acked == 1


def test_queue_bounded_and_oversized_payload_refused():
    ns, radio, dev = setup(uplink_queue=2)
    assert dev.send(10, b"a") and dev.send(10, b"b") and not dev.send(10, b"c")
    assert dev.dropped == 1
    with pytest.raises(ValueError):
        dev.send(10, bytes(243))
    with pytest.raises(ValueError):
        dev.send(0, b"x")


def test_kr920_listen_before_talk_waits_for_a_clear_channel():
    busy_until = 30000
    ns = NetworkServer("KR920")
    radio = ScriptedRadio("KR920", on_uplink=ns.on_uplink,
                          rssi=lambda freq, t: -40 if t < busy_until else -100)
    dev = device(radio, rng=lambda n: n // 2, region="KR920")
    run(dev, radio, 60000)
    assert dev.joined and dev.lbt_busy > 10
    assert radio.sent[0].t >= busy_until
    for tx in radio.sent:  # every frame was preceded by a clear sensing on its channel
        sensed = [s for s in radio.sensed if s[0] == tx.t and s[1] == tx.freq]
        assert sensed and tx.freq in (922100000, 922300000, 922500000) and tx.power <= 14


# -- persistence across power cuts -----------------------------------------------------------

def test_session_resumes_after_power_cut_with_fcnt_ahead():
    ns, radio, dev, t = joined(fcnt_step=16)
    for i in range(5):
        dev.send(10, bytes([i]))
        t = run(dev, radio, t + 3000, t)
    last = ns.uplinks[-1].fcnt
    esp32.power_cut()
    radio = ScriptedRadio(on_uplink=ns.on_uplink)
    dev = device(radio, fcnt_step=16)
    assert dev.joined  # resumed from NVS: no join storm after a city-wide outage
    dev.send(10, b"\xff")
    run(dev, radio, 5000)
    assert ns.nonces == [0] and ns.uplinks[-1].fcnt == 16 > last


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, 25000), st.booleans()), min_size=1, max_size=5),
       keep=st.booleans())
def test_fcnt_and_devnonce_never_repeat_across_random_power_cuts(cuts, keep):
    """Power is cut at arbitrary instants (mid-TX, mid-window, mid-reservation); the server
    (scripted_network) fails the test on any reused FCnt within a session that is not the
    retransmission of the identical frame, and DevNonces must only grow."""
    esp32.FLASH = esp32.Flash()
    ns = NetworkServer()
    for cut_at, confirmed in cuts + [(30000, False)]:
        radio = ScriptedRadio(on_uplink=ns.on_uplink)
        dev = device(radio, fcnt_step=8, devnonce_step=4, keep_session=keep)
        t = 0
        while t < cut_at:
            if dev.queued() < 2:
                dev.send(10, b"\x01", confirmed=confirmed)
            t = run(dev, radio, min(t + 1500, cut_at), t)
        esp32.power_cut()
    assert ns.nonces == sorted(set(ns.nonces)), "a DevNonce was reused"
    assert ns.nonces and ns.uplinks  # the last boot ran 30 s: it joined (or resumed) and sent
    for sess in ns.sessions:
        fcnts = [o.fcnt for o in ns.uplinks if o.session is sess]
        assert fcnts == sorted(fcnts)


# -- regulation -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(dr=st.integers(0, 5), events=st.lists(
    st.tuples(st.integers(0, 30000), st.integers(1, 51), st.booleans()), min_size=1, max_size=40),
    acks=st.booleans(), seed=st.integers(0, 2**16))
def test_duty_cycle_never_exceeded_over_any_window(dr, events, acks, seed):
    """Whatever the application asks, every EU868 sub-band stays within 1 %: after each frame
    the sub-band is silent for 99 x its time on air, hence no window holds more than 1 % (plus
    the one frame that opens it)."""
    esp32.FLASH = esp32.Flash()
    import random
    rnd = random.Random(seed)
    ns = NetworkServer()
    ns.ack_confirmed = acks
    radio = ScriptedRadio(on_uplink=ns.on_uplink)
    dev = device(radio, rng=lambda n: rnd.randrange(n) if n > 0 else 0, data_rate=dr,
                 uplink_queue=8, confirmed_retries=3)
    t = 0
    for gap, size, confirmed in events:
        dev.send(10, bytes(size), confirmed=confirmed)
        t = run(dev, radio, t + gap + 1, t)
    run(dev, radio, t + 600000, t)
    reg = _region.EU868
    by_band = {}
    for tx in radio.sent:
        by_band.setdefault(reg.sub_band(tx.freq), []).append(tx)
    assert radio.sent
    for band, txs in by_band.items():
        for a, b in zip(txs, txs[1:]):
            assert b.t * 1000 >= a.t * 1000 + a.airtime_ms * 1000 * band[2] - 1, "off-time violated"
        for i, a in enumerate(txs):  # any window of an hour starting at a frame
            on_air = sum(x.airtime_ms for x in txs[i:] if x.t < a.t + 3600000)
            assert on_air <= 3600000 / band[2] + max(x.airtime_ms for x in txs)


def test_default_jitter_differs_between_devices_and_stays_in_range():
    from firmware.lorawan.device import device_rng

    a, b = device_rng("0004a30b001c0530"), device_rng("0004a30b001c0531")
    xs, ys = [a(10000) for _ in range(200)], [b(10000) for _ in range(200)]
    assert xs != ys and all(0 <= x < 10000 for x in xs + ys)
    assert len(set(xs)) > 150  # spread, not stuck
    assert device_rng("0004a30b001c0530")(10000) == xs[0]  # reproducible on CPython


def test_eu868_does_not_sense_the_channel():
    ns, radio, dev, t = joined()
    assert radio.sent and radio.sensed == []  # no LBT in EU868: no RSSI reads (VM pipe trips)


def test_session_of_another_region_is_not_resumed():
    ns, radio, dev, t = joined()
    esp32.power_cut()
    ns2 = NetworkServer("KR920")
    radio = ScriptedRadio("KR920", on_uplink=ns2.on_uplink)
    dev = device(radio, region="KR920")
    assert not dev.joined
    run(dev, radio, 20000)
    assert dev.joined and ns2.nonces == [16]  # a cold boot resumes DevNonce at its reservation
    assert radio.sent[0].freq in (922100000, 922300000, 922500000)


# -- network time (DeviceTimeReq / DeviceTimeAns) -------------------------------------------

UTC_AT_0 = 1795845600000  # the network's UNIX ms at test time 0


def time_requests_per_hour(dev, radio, ns, t, hours, per_hour=1):
    """Send an uplink every 1/per_hour h for `hours`; -> t at the end."""
    step = 3600000 // per_hour
    for _ in range(hours * per_hour):
        dev.send(10, b"\x01")
        t = run(dev, radio, t + step, t, cap=True)
    return t


def test_device_time_asked_after_the_join_and_advanced_by_the_time_since_the_uplink():
    ns, radio, dev, t = joined()
    ns.utc_ms = lambda ms: UTC_AT_0 + ms
    got = []
    dev.on_time = lambda unix_ms: got.append((radio.now, unix_ms))
    dev.send(10, b"\x01")
    t = run(dev, radio, t + 5000, t)
    up = radio.sent[-1]
    assert ns.time_requests == [up.end]  # the first uplink of the session asked (in FOpts)
    assert ns.uplinks[-1].frame.fport == 10
    (at, unix_ms), = got
    assert at - up.end >= 1000  # applied when RX1 delivered it, over a second later ...
    assert -5 <= unix_ms - (UTC_AT_0 + at) <= 5  # ... as the UTC of that moment
    assert dev.device_time == (network_side.device_time_ans(UTC_AT_0 + up.end)["seconds"],
                               network_side.device_time_ans(UTC_AT_0 + up.end)["fractional"])


def test_device_time_once_a_day_while_the_clock_is_known():
    ns, radio, dev, t = joined()
    ns.utc_ms = lambda ms: UTC_AT_0 + ms
    dev.on_time = lambda unix_ms: None
    time_requests_per_hour(dev, radio, ns, t, 53)
    asked = ns.time_requests
    assert len(asked) == 3, asked  # after the join, then a day and two days later
    assert all(24 * 3600000 <= b - a <= 25 * 3600000 + 10000 for a, b in zip(asked, asked[1:]))


def test_device_time_asked_again_while_the_clock_is_unknown_and_no_answer_comes():
    ns, radio, dev, t = joined()
    known = [False]
    dev.time_known = lambda: known[0]
    t = time_requests_per_hour(dev, radio, ns, t, 2, per_hour=12)  # an uplink every 5 min
    asked = ns.time_requests
    assert 10 <= len(asked) <= 13, asked  # every other uplink: not more than one per 10 min
    assert all(b - a >= 599000 for a, b in zip(asked, asked[1:]))
    known[0] = True  # set by other means: no more requests (until a day has passed)
    n = len(asked)
    time_requests_per_hour(dev, radio, ns, t, 5, per_hour=12)
    assert len(ns.time_requests) == n


def test_an_unrequested_device_time_answer_does_not_set_the_clock():
    ns, radio, dev, t = joined()
    got = []
    dev.on_time = got.append
    dev.send(10, b"\x01")
    t = run(dev, radio, t + 5000, t)  # asked; the network did not answer
    ns.fopts = mac.encode_commands([network_side.device_time_ans(UTC_AT_0)], False)
    dev.send(10, b"\x02")
    run(dev, radio, t + 5000, t)  # this uplink did not ask
    assert dev.downlinks == 1 and dev.device_time is not None and got == []

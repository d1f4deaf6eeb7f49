"""Class-A downlinks: window choice, txpk, ACK frames, TX_ACK matching and the RX2 retry, over
real UDP on 127.0.0.1 with the ForwarderServer in this process."""

import asyncio

import pytest
from hypothesis import given, strategies as st

from gateway.lorawan import downlink as dl
from gateway.lorawan.dedup import RadioMeta
from gateway.lorawan.forwarders import ForwarderServer
from protocol import gwmp, payload
from protocol.lorawan import frame
from protocol.lorawan.region import EU868, KR920
from protocol.lorawan.session import build_data_frame, open_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys, open_join_accept
from tests.gateway.test_forwarders import (FREQ, GW_A, GW_B, JOIN_EUI, KEY, NET_ID, POLE,
                                           FakeForwarder, env, rxpk, run)

__all__ = ["env"]  # the fixture, re-used


# ---- pure decisions ------------------------------------------------------------------------

def test_choose_window():
    assert dl.choose_window(0.2, 1_000_000, 2_000_000, 0.2) == "rx1"
    assert dl.choose_window(0.85, 1_000_000, 2_000_000, 0.2) == "rx2"
    assert dl.choose_window(1.9, 1_000_000, 2_000_000, 0.2) is None
    assert dl.choose_window(4.0, 5_000_000, 6_000_000, 0.5) == "rx1"  # joins: 5 s / 6 s
    assert dl.choose_window(4.6, 5_000_000, 6_000_000, 0.5) == "rx2"


@given(st.floats(0, 10), st.floats(0, 1))
def test_choose_window_never_picks_a_past_window(elapsed, margin):
    w = dl.choose_window(elapsed, 1_000_000, 2_000_000, margin)
    deadline = {"rx1": 1.0, "rx2": 2.0, None: float("inf")}[w]
    assert elapsed + margin < deadline or w is None
    if w == "rx2":
        assert elapsed + margin >= 1.0


@given(st.integers(0, 0xFFFFFFFF), st.sampled_from(["SF7BW125", "SF9BW125", "SF12BW125"]))
def test_class_a_txpk_windows(tmst, datr):
    copy = RadioMeta("AA", -90, 5.0, 868_500_000, datr, tmst)
    rx1 = dl.class_a_txpk(EU868, copy, b"x", "rx1", 1_000_000, 2_000_000)
    assert (rx1.tmst, rx1.freq_hz, rx1.datr, rx1.ipol) == ((tmst + 1_000_000) % 2**32, 868_500_000,
                                                          datr, True)
    rx2 = dl.class_a_txpk(EU868, copy, b"x", "rx2", 1_000_000, 2_000_000)
    assert (rx2.tmst, rx2.freq_hz, rx2.datr) == ((tmst + 2_000_000) % 2**32, 869_525_000, "SF12BW125")
    kr = dl.class_a_txpk(KR920, RadioMeta("AA", -90, 5.0, 922_100_000, datr, tmst), b"x", "rx2",
                         1_000_000, 2_000_000)
    assert (kr.freq_hz, kr.datr) == (921_900_000, "SF12BW125")
    with pytest.raises(ValueError):
        dl.class_a_txpk(EU868, copy, b"x", "rx3", 1, 2)


def test_tracker_matches_token_and_forwarder_and_expires():
    t = dl.DownlinkTracker(expiry_s=10, max_pending=2)
    copy = RadioMeta("AA", -90, 5.0, FREQ, "SF7BW125", 0)
    p1 = dl.Pending(t.next_token(), "AA", copy, b"", "rx1", 1, 2, "ack", 0.0)
    assert t.add(p1) == []
    p2 = dl.Pending(t.next_token(), "BB", copy, b"", "rx1", 1, 2, "ack", 5.0)
    t.add(p2)
    assert p1.token != p2.token
    assert t.take(p2.token, "AA") is None  # right token, wrong forwarder
    p3 = dl.Pending(t.next_token(), "AA", copy, b"", "rx1", 1, 2, "ack", 6.0)
    assert t.add(p3) == [p1]  # bounded: oldest evicted
    assert t.expire(15.5) == [p2] and len(t) == 1
    assert t.take(p3.token, "AA") is p3 and len(t) == 0


# ---- over UDP --------------------------------------------------------------------------------

async def joined(srv, a, b=None):
    """Join through a (b hears it too when given); TX_ACK ok; returns the device's keys."""
    await a.pull()
    req = build_join_request(JOIN_EUI, POLE, 1, KEY)
    await a.push([rxpk(req, 100, 9.0)])
    resp = await a.recv()
    assert isinstance(resp, gwmp.PullResp)
    a.send(gwmp.TxAck(resp.token, GW_A).encode())
    ja = open_join_accept(resp.txpk.data, KEY)
    nwk, app = derive_session_keys(KEY, ja.join_nonce, ja.net_id, 1)
    return ja.dev_addr, nwk, app


def confirmed(keys, fcnt):
    port, body = payload.encode_uplink("pole", "report", {"dim_level": fcnt})
    return build_data_frame(frame.CONFIRMED_UP, keys[0], fcnt, port, body, keys[1], keys[2])


def test_join_accept_retried_in_rx2_after_too_late(env):
    reg, store = env

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: None, dedup_window_s=0.1)
        port = await srv.start()
        a = FakeForwarder(GW_A, port)
        try:
            await a.pull()
            req = build_join_request(JOIN_EUI, POLE, 1, KEY)
            await a.push([rxpk(req, 0xFFFFFFFF - 10, 9.0)])
            rx1 = await a.recv()
            assert isinstance(rx1, gwmp.PullResp)
            assert (rx1.txpk.tmst, rx1.txpk.freq_hz) == ((0xFFFFFFFF - 10 + 5_000_000) % 2**32, FREQ)
            a.send(gwmp.TxAck(rx1.token, GW_A, "TOO_LATE").encode())
            rx2 = await a.recv()
            assert isinstance(rx2, gwmp.PullResp) and rx2.token != rx1.token
            tx = rx2.txpk
            assert (tx.tmst, tx.freq_hz, tx.datr, tx.ipol) == ((0xFFFFFFFF - 10 + 6_000_000) % 2**32,
                                                               869_525_000, "SF12BW125", True)
            assert tx.data == rx1.txpk.data and open_join_accept(tx.data, KEY).mic_ok
            a.send(gwmp.TxAck(rx2.token, GW_A).encode())
            a.send(gwmp.TxAck(rx2.token, GW_A).encode())  # a duplicate matches nothing
            await asyncio.sleep(0.1)
            c = srv.counters
            assert (c["tx-ack-TOO_LATE"], c["rx2-retry"], c["downlink-rx2"], c["downlinks"]) == (1, 1, 1, 2)
            assert c["tx-ack-unmatched"] == 1 and "downlink-rx1" not in c and "downlink-failed" not in c
            assert len(srv.downlinks) == 0
        finally:
            await srv.stop()
            a.close()

    run(main())


def test_confirmed_uplink_ack_refusals_and_direct_rx2(env):
    reg, store = env

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: None, dedup_window_s=0.1)
        port = await srv.start()
        a, b = FakeForwarder(GW_A, port), FakeForwarder(GW_B, port)
        try:
            keys = await joined(srv, a)
            await b.pull()
            # RX1 refused with a non-retryable error: final, no RX2 attempt
            await a.push([rxpk(confirmed(keys, 0), 1_000, 9.0)])
            r1 = await a.recv()
            ack = open_data_frame(r1.txpk.data, keys[1], keys[2])
            assert ack.mic_ok and ack.frame.ack and ack.fcnt == 0 and r1.txpk.tmst == 1_001_000
            a.send(gwmp.TxAck(r1.token, GW_A, "TX_FREQ").encode())
            await a.nothing(0.2)
            # RX1 refused (collision), RX2 refused too: failed
            await a.push([rxpk(confirmed(keys, 1), 2_000, 9.0)])
            r2 = await a.recv()
            a.send(gwmp.TxAck(r2.token, GW_B, "COLLISION_PACKET").encode())  # wrong EUI: unmatched
            a.send(gwmp.TxAck(r2.token, GW_A, "COLLISION_PACKET").encode())
            r3 = await a.recv()
            assert r3.txpk.freq_hz == 869_525_000 and r3.txpk.tmst == 2_000 + 2_000_000
            assert open_data_frame(r3.txpk.data, keys[1], keys[2]).fcnt == 1
            a.send(gwmp.TxAck(r3.token, GW_A, "TOO_LATE").encode())
            await a.nothing(0.2)
            c = srv.counters
            assert (c["downlink-failed"], c["rx2-retry"], c["tx-ack-unmatched"]) == (2, 1, 1)
            assert c["tx-ack-TX_FREQ"] == 1 and c["acks"] == 2
            # no time left for RX1 (margin 0.99 s after a 50 ms window): straight to RX2, via
            # the best forwarder that has a downstream path
            srv.rx1_margin_s = 0.99
            up = confirmed(keys, 2)
            await a.push([rxpk(up, 3_000, 1.0)])
            await b.push([rxpk(up, 4_000, 8.0)])
            r4 = await b.recv()
            assert (r4.txpk.freq_hz, r4.txpk.datr, r4.txpk.tmst) == (869_525_000, "SF12BW125",
                                                                     4_000 + 2_000_000)
            b.send(gwmp.TxAck(r4.token, GW_B).encode())
            await a.nothing(0.2)
            assert (c["rx2-direct"], c["downlink-rx2"]) == (1, 1)
            assert store.get_by_dev_addr(keys[0]).fcnt_down == 3  # every ACK a new FCntDown
        finally:
            await srv.stop()
            a.close()
            b.close()

    run(main())


def test_payload_error_is_passed_on_and_acked(env):
    reg, store = env
    got = []

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, got.append, dedup_window_s=0.1)
        port = await srv.start()
        a = FakeForwarder(GW_A, port)
        try:
            keys = await joined(srv, a)
            up = build_data_frame(frame.CONFIRMED_UP, keys[0], 0, 99, b"\xAA", keys[1], keys[2])
            await a.push([rxpk(up, 5_000, 9.0)])
            r = await a.recv()
            assert open_data_frame(r.txpk.data, keys[1], keys[2]).frame.ack
            assert len(got) == 1 and got[0].reason == "payload-error" and got[0].payload_hex == "aa"
            assert srv.counters["uplink-payload-error"] == 1
        finally:
            await srv.stop()
            a.close()

    run(main())


def test_forwarder_with_stale_keepalive_is_used_only_as_last_resort(env):
    reg, store = env

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: None, dedup_window_s=0.1)
        port = await srv.start()
        a, b = FakeForwarder(GW_A, port), FakeForwarder(GW_B, port)
        try:
            keys = await joined(srv, a)
            await b.pull()
            srv.forwarders[GW_B.hex().upper()].last_seen -= 61  # B's keep-alives stopped
            up = confirmed(keys, 0)
            await a.push([rxpk(up, 1_000, 1.0)])
            await b.push([rxpk(up, 2_000, 9.0)])  # B heard it best, but is stale
            r = await a.recv()
            assert isinstance(r, gwmp.PullResp) and r.txpk.tmst == 1_000 + 1_000_000
            await b.nothing(0.1)
            srv.forwarders.pop(GW_A.hex().upper())  # only the stale path is left
            await a.push([rxpk(confirmed(keys, 1), 3_000, 1.0)])
            await b.push([rxpk(confirmed(keys, 1), 4_000, 9.0)])
            r = await b.recv()
            assert isinstance(r, gwmp.PullResp) and r.txpk.tmst == 4_000 + 1_000_000
            assert srv.counters["stale-downlink-path"] == 1
        finally:
            await srv.stop()
            a.close()
            b.close()

    run(main())


def test_repeated_confirmed_uplink_is_acked_again_but_not_queued_again(env):
    reg, store = env
    got = []

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, got.append, dedup_window_s=0.1)
        port = await srv.start()
        a, b = FakeForwarder(GW_A, port), FakeForwarder(GW_B, port)
        try:
            keys = await joined(srv, a)
            await b.pull()
            up = confirmed(keys, 0)
            await a.push([rxpk(up, 1_000, 5.0)])
            r1 = await a.recv()  # its ACK is lost on air: the device repeats the frame
            assert open_data_frame(r1.txpk.data, keys[1], keys[2]).fcnt == 0
            await b.push([rxpk(up, 1_100, 1.0)])  # a late copy of the same transmission: ignored
            await b.nothing(0.1)
            srv._confirmed[up].first_seen -= 2.5  # the repetition comes after RX2
            await b.push([rxpk(up, 3_000_000, 4.0)])
            r2 = await b.recv()
            ack = open_data_frame(r2.txpk.data, keys[1], keys[2])
            assert ack.mic_ok and ack.frame.ack and ack.fcnt == 1 and r2.txpk.tmst == 4_000_000
            await a.push([rxpk(up, 3_000_100, 4.0)])  # its other copy: no third ACK
            await a.nothing(0.1)
            # once the device moved on, the old frame is a replay: no ACK
            await a.push([rxpk(confirmed(keys, 1), 5_000_000, 5.0)])
            r3 = await a.recv()
            assert open_data_frame(r3.txpk.data, keys[1], keys[2]).fcnt == 2
            srv._confirmed[up].first_seen -= 2.5
            await a.push([rxpk(up, 7_000_000, 5.0)])
            await a.nothing(0.2)
            assert srv.counters["retransmission-acked"] == 1 and srv.counters["acks"] == 3
            assert [r.fcnt for r in got] == [0, 1]  # the reading was queued once
        finally:
            await srv.stop()
            a.close()
            b.close()

    run(main())


def test_mac_answers_pure():
    copies = [RadioMeta("A", -100, -3.0, FREQ, "SF9BW125", 0), RadioMeta("B", -90, 4.25, FREQ, "SF9BW125", 0),
              RadioMeta("B", -90, None, FREQ, "SF9BW125", 0)]
    t = 1795845600.5  # 2026-11-28T06:00:00.5Z
    got = dl.mac_answers([{"name": "LinkCheckReq"}, {"name": "DevStatusAns"}, {"name": "DeviceTimeReq"}],
                         copies, t, EU868)
    gps = 1795845600 - 315964800 + 18
    assert got == [{"name": "LinkCheckAns", "margin": 17, "gw_cnt": 2},  # 4.25 - (-12.5)
                   {"name": "DeviceTimeAns", "seconds": gps, "fractional": 128}]
    assert dl.mac_answers(None, copies, t, EU868) == []
    low = [RadioMeta("A", -130, -25.0, FREQ, "SF12BW125", 0)]
    assert dl.mac_answers([{"name": "LinkCheckReq"}], low, t, EU868)[0]["margin"] == 0


def test_link_check_and_device_time_requests_are_answered_in_fopts(env):
    reg, store = env

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: None, dedup_window_s=0.1)
        port = await srv.start()
        a, b = FakeForwarder(GW_A, port), FakeForwarder(GW_B, port)
        try:
            keys = await joined(srv, a)
            port_, body = payload.encode_uplink("pole", "report", {})
            up = build_data_frame(frame.UNCONFIRMED_UP, keys[0], 0, port_, body, keys[1], keys[2],
                                  fopts=[{"name": "LinkCheckReq"}, {"name": "DeviceTimeReq"}])
            when = "2026-11-28T06:00:00.25Z"
            await a.push([gwmp.Rxpk(1_000, FREQ, "SF9BW125", up, -95, lsnr=6.0, time=when)])
            await b.push([gwmp.Rxpk(2_000, FREQ, "SF9BW125", up, -99, lsnr=2.0)])
            r = await a.recv()
            o = open_data_frame(r.txpk.data, keys[1], keys[2])
            assert o.mic_ok and not o.frame.ack and o.frame.fport is None
            names = {c["name"]: c for c in o.mac_commands}
            assert names["LinkCheckAns"]["margin"] == 18 and names["LinkCheckAns"]["gw_cnt"] == 2
            assert names["DeviceTimeAns"]["seconds"] == 1795845600 - 315964800 + 18
            assert names["DeviceTimeAns"]["fractional"] == 64
            assert srv.counters["mac-answers"] == 2
        finally:
            await srv.stop()
            a.close()
            b.close()

    run(main())


def test_records_are_stored_before_their_counters_and_acks(env):
    """A counter stored before its record, or an ACK sent before it (the device will not resend
    an acked uplink), would lose the uplink on a crash in between: records first."""
    reg, store = env
    events = []

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: events.append(("record", r.fcnt)),
                              dedup_window_s=0.1)
        send = srv._send

        def traced_send(data, addr):
            msg = gwmp.decode(data)
            if isinstance(msg, gwmp.PullResp):
                events.append(("pull-resp",))
            send(data, addr)

        srv._send = traced_send
        srv.flush_records = lambda: events.append(("flush",))
        accept = store.accept_uplinks

        def traced_accept(pairs):
            events.append(("counters",))
            return accept(pairs)

        store.accept_uplinks = traced_accept
        port = await srv.start()
        a = FakeForwarder(GW_A, port)
        try:
            keys = await joined(srv, a)
            events.clear()
            await a.push([rxpk(confirmed(keys, 0), 5_000, 9.0)])
            r = await a.recv()
            assert open_data_frame(r.txpk.data, keys[1], keys[2]).frame.ack
            # stored record, then its counter, then the ACK: a crash at any point loses nothing
            assert events == [("record", 0), ("flush",), ("counters",), ("pull-resp",)]
            # a flush that raises (a bug: Intake itself holds what the queue refuses) is counted
            # and logged, and the server keeps serving
            srv.flush_records = lambda: 1 / 0
            events.clear()
            await a.push([rxpk(confirmed(keys, 1), 6_000, 9.0)])
            await a.recv()
            assert events == [("record", 1), ("counters",), ("pull-resp",)]
            assert srv.counters["on-records-error"] == 1
        finally:
            await srv.stop()
            a.close()

    run(main())

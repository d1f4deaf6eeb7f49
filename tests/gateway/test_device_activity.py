"""gateway.lorawan.device_activity.DeviceActivity, and the stats.json ``devices`` section it feeds through
the real gateway (subprocess, real UDP forwarders; no broker needed)."""

from __future__ import annotations

import json

from gateway.lorawan.dedup import RadioMeta, Uplink
from gateway.lorawan.device_activity import DeviceActivity
from gateway.lorawan.uplink import Result
from tests.gateway.mosquitto import free_port
from tests.gateway.test_app import (GW_A, GW_B, POLE, Forwarder, Gateway, data_frame, join,
                                    write_setup)

EUI = bytes.fromhex("70B3D57ED0001234")
OTHER = bytes.fromhex("70B3D57ED00000AB")
T = 1_800_000_000.0


def result(fcnt, fport=10, copies=((-97.0, 8.5), (-80.0, 9.5), (-70.0, -2.0)), dev_eui=EUI,
           dev_addr=0x26000001, accepted=True):
    metas = [RadioMeta("AA555A%010X" % i, rssi, snr, 868300000, "SF9BW125", 1000 * i)
             for i, (rssi, snr) in enumerate(copies)]
    return Result(accepted, None if accepted else "payload-error", "data",
                  Uplink(b"\x40", metas, 1.0), dev_eui=dev_eui, dev_addr=dev_addr, fcnt=fcnt,
                  fport=fport)


def test_empty():
    a = DeviceActivity()
    assert a.snapshot() == {} and len(a) == 0


def test_join_then_uplinks_fields():
    a = DeviceActivity()
    a.joined(EUI, 0x26000001, T + 0.12345)
    assert a.snapshot() == {"70B3D57ED0001234": {
        "joins": 1, "last_join": 1_800_000_000.123, "dev_addr": "26000001", "uplinks": 0,
        "uplinks_total": 0, "last_uplink": None, "fcnt": None, "fport": None, "rssi": None,
        "snr": None, "alarms": None}}
    a.uplink(result(0), T + 1)
    a.uplink(result(70_000, fport=None, copies=((-110.0, None),)), T + 2.00049)
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["uplinks"], d["uplinks_total"], d["joins"]) == (2, 2, 1)
    assert d["last_uplink"] == 1_800_000_002.0 and d["last_join"] == 1_800_000_000.123
    assert (d["fcnt"], d["fport"], d["rssi"], d["snr"]) == (70_000, None, -110.0, None)


def test_open_alarms_follow_the_last_alarm_frame():
    from dataclasses import replace

    from protocol import payload
    a = DeviceActivity()

    def alarm(fields):
        port, data = payload.encode_uplink("pole", "alarm", fields)
        recs = payload.senml_records(payload.decode_uplink(port, data))
        return replace(result(7, fport=port), message="alarm", records=recs)

    a.uplink(result(6), T)
    assert a.snapshot()["70B3D57ED0001234"]["alarms"] is None  # no alarm frame yet
    a.uplink(alarm({"alarms/lamp_failure": True, "alarms/day_burner": True}), T + 1)
    assert a.snapshot()["70B3D57ED0001234"]["alarms"] == ["lamp_failure", "day_burner"]
    a.uplink(result(8), T + 2)  # a report does not say: the alarms stay open
    assert a.snapshot()["70B3D57ED0001234"]["alarms"] == ["lamp_failure", "day_burner"]
    a.uplink(alarm({}), T + 3)  # all cleared
    assert a.snapshot()["70B3D57ED0001234"]["alarms"] == []


def test_best_copy_is_uplink_best():
    a = DeviceActivity()
    a.uplink(result(3), T)  # best(): highest SNR first, so not the strongest RSSI
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["rssi"], d["snr"], d["fcnt"], d["fport"]) == (-80.0, 9.5, 3, 10)


def test_join_resets_per_join_uplinks_and_takes_new_dev_addr():
    a = DeviceActivity()
    a.uplink(result(5, dev_addr=0x26000009), T)  # joined before the gateway started
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["joins"], d["last_join"], d["dev_addr"], d["uplinks"]) == (0, None, "26000009", 1)
    a.joined(EUI, 0x2600000A, T + 10)
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["joins"], d["dev_addr"], d["uplinks"], d["uplinks_total"]) == (1, "2600000A", 0, 1)
    assert d["fcnt"] == 5  # the last uplink seen stays visible
    a.uplink(result(0, dev_addr=0x2600000A), T + 11)
    a.joined(EUI, 0x2600000B, T + 20)
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["joins"], d["dev_addr"], d["uplinks"], d["uplinks_total"]) == (2, "2600000B", 0, 2)
    assert d["last_join"] == T + 20 and d["last_uplink"] == T + 11


def test_payload_error_counts_and_devices_are_separate():
    a = DeviceActivity()
    a.uplink(result(7, fport=99, accepted=False), T)
    a.joined(bytearray(OTHER), 0x26000002, T)
    s = a.snapshot()
    assert list(s) == ["70B3D57ED00000AB", "70B3D57ED0001234"]  # sorted, upper-case hex
    assert s["70B3D57ED0001234"]["uplinks"] == 1 and s["70B3D57ED0001234"]["fport"] == 99
    assert s["70B3D57ED00000AB"]["uplinks"] == 0 and s["70B3D57ED00000AB"]["joins"] == 1
    assert len(a) == 2


def test_snapshot_is_plain_json_and_a_copy():
    a = DeviceActivity()
    a.joined(EUI, 0xFFFFFFFF, T)
    a.uplink(result(0xFFFFFFFF, dev_addr=0xFFFFFFFF), T)
    s = a.snapshot()
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    assert s["70B3D57ED0001234"]["dev_addr"] == "FFFFFFFF"
    s["70B3D57ED0001234"]["uplinks"] = 99
    assert a.snapshot()["70B3D57ED0001234"]["uplinks"] == 1


def test_uplink_without_device_or_copies_is_harmless():
    a = DeviceActivity()
    a.uplink(Result(True, kind="data"), T)
    assert a.snapshot() == {}
    a.uplink(result(1, copies=()), T)
    d = a.snapshot()["70B3D57ED0001234"]
    assert (d["uplinks"], d["rssi"], d["snr"]) == (1, None, None)


def test_stats_json_devices_through_the_gateway(tmp_path):
    cfg = write_setup(tmp_path, free_port())  # no broker: the records just wait in the queue
    gw = Gateway(tmp_path, cfg)
    a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
    eui = POLE.hex().upper()
    try:
        s = gw.wait_stats(lambda s: "devices" in s, "stats.json")
        assert s["devices"] == {}
        a.pull()
        keys = join(a, b)
        s = gw.wait_stats(lambda s: eui in s["devices"], "the join in devices")
        d = s["devices"][eui]
        assert (d["joins"], d["dev_addr"], d["uplinks"]) == (1, "%08X" % keys[0], 0)
        assert abs(d["last_join"] - s["time"]) < 5

        up = data_frame(keys, 0, {"dim_level": 40})
        a.push(up, 2_000_000, snr=8.5, rssi=-97)
        b.push(up, 7_000_000, snr=-3.0, rssi=-118)
        s = gw.wait_stats(lambda s: s["devices"][eui]["uplinks"] >= 1, "the uplink in devices")
        d = s["devices"][eui]
        assert (d["joins"], d["dev_addr"], d["uplinks"], d["uplinks_total"]) == (
            1, "%08X" % keys[0], 1, 1)
        assert (d["fcnt"], d["fport"], d["rssi"], d["snr"]) == (0, 10, -97, 8.5)
        assert d["last_uplink"] >= d["last_join"]

        # a forged MIC does not count; an undecodable payload with a good MIC does
        forged = bytearray(data_frame(keys, 1, {"dim_level": 1}))
        forged[-1] ^= 0x55
        a.push(bytes(forged), 3_000_000, snr=5.0)
        a.push(data_frame(keys, 2, fport=99, body=b"\x01"), 4_000_000, snr=5.0)
        s = gw.wait_stats(lambda s: s["uplink"]["bad-mic"] == 1
                          and s["uplink"]["payload-error"] == 1, "the two frames")
        d = s["devices"][eui]
        assert (d["uplinks"], d["uplinks_total"], d["fcnt"], d["fport"]) == (2, 2, 2, 99)

        # a rejoin: a new session, the per-join count restarts
        keys2 = join(a, b, nonce=2)
        s = gw.wait_stats(lambda s: s["devices"][eui]["joins"] == 2, "the rejoin")
        d = s["devices"][eui]
        assert (d["dev_addr"], d["uplinks"], d["uplinks_total"]) == ("%08X" % keys2[0], 0, 2)
    finally:
        a.close()
        b.close()
        if gw.proc.poll() is None:
            assert gw.terminate() == 0
    final = json.loads(gw.stats_path.read_text())  # written at shutdown
    assert final["devices"][eui]["joins"] == 2

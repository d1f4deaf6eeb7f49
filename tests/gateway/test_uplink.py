import pytest

from gateway.lorawan.dedup import RadioMeta, Uplink
from gateway.lorawan.join import handle_join_request
from gateway.lorawan.registry import load_registry
from gateway.lorawan.sessions import SessionStore
from gateway.lorawan.uplink import REASONS, UplinkProcessor
from protocol import payload
from protocol.lorawan import frame
from protocol.lorawan.region import EU868
from protocol.lorawan.session import build_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys, open_join_accept

NET_ID = 0x000013
KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
POLE = bytes.fromhex("70B3D57ED0001234")
METER = bytes.fromhex("70B3D57ED0005678")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")
NOW = 1_700_000_000
UP = frame.UNCONFIRMED_UP


@pytest.fixture
def env(tmp_path):
    (tmp_path / "devices.toml").write_text("".join(f'''
[[device]]
name = "{kind}-1"
site = "harbour"
kind = "{kind}"
dev_eui = "{eui.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY.hex()}"
''' for kind, eui in (("pole", POLE), ("meter", METER))))
    reg = load_registry(tmp_path / "devices.toml")
    store = SessionStore.for_net_id(tmp_path / "sessions.db", NET_ID)
    yield reg, store, UplinkProcessor(reg, store)
    store.close()


def device_join(env, dev_eui=POLE, nonce=1):
    """Join as a device would; returns (dev_addr, nwk_s_key, app_s_key) from the device's view."""
    reg, store, _ = env
    r = handle_join_request(build_join_request(JOIN_EUI, dev_eui, nonce, KEY), reg, store,
                            NET_ID, EU868, float(NOW))
    assert r.accepted
    ja = open_join_accept(r.phy, KEY)
    assert ja.mic_ok
    nwk, app = derive_session_keys(KEY, ja.join_nonce, ja.net_id, nonce)
    return ja.dev_addr, nwk, app


def uplink(phy, n=3):
    return Uplink(phy, [RadioMeta(f"GW{i}", -100.0 + i, 1.0 * i, 868100000, "SF7BW125", 1000 + i)
                        for i in range(n)], 0.0)


def data(keys, fcnt, kind="pole", message="report", fields=None, mtype=UP):
    dev_addr, nwk, app = keys
    port, body = payload.encode_uplink(kind, message, fields or {})
    return build_data_frame(mtype, dev_addr, fcnt, port, body, nwk, app)


def test_accepted_records(env):
    reg, store, p = env
    keys = device_join(env)
    phy = data(keys, 0, fields={"dim_level": 40, "lamp_power": 55.5, "lamp_energy": 1234,
                                "temperature": 21.5, "status/lamp_on": True})
    r = p.process(uplink(phy), NOW)
    assert r.accepted and r.reason is None and r.kind == "data"
    assert (r.dev_eui, r.dev_addr, r.fcnt, r.fport) == (POLE, keys[0], 0, 10)
    assert (r.device_kind, r.message) == ("pole", "report")
    assert [c["forwarder"] for c in r.copies] == ["GW0", "GW1", "GW2"]
    assert r.copies[2] == {"forwarder": "GW2", "rssi": -98.0, "snr": 2.0, "freq": 868100000,
                           "datr": "SF7BW125", "tmst": 1002}
    first = r.records[0]
    assert first["bver"] == payload.SENML_BVER == 26
    assert first["bn"] == "urn:dev:eui64:70b3d57ed0001234:" and first["bt"] == NOW
    assert all("lwm2m" not in rec for rec in r.records)
    assert all("bn" not in rec and "bt" not in rec for rec in r.records[1:])
    by = {rec["n"]: rec for rec in r.records}
    assert by["dim_level"]["u"] == "/100" and by["dim_level"]["v"] == 40
    assert by["lamp_power"] == {"n": "lamp_power", "u": "W", "v": 55.5}
    assert by["lamp_energy"] == {"n": "lamp_energy", "u": "Wh", "v": 1234}
    assert by["temperature"]["u"] == "Cel" and by["temperature"]["v"] == pytest.approx(21.5)
    assert by["status/lamp_on"] == {"n": "status/lamp_on", "vb": True}
    assert store.get_by_dev_addr(keys[0]).fcnt_up == 0
    assert p.counters["accepted"] == 1


def test_meter_records(env):
    _, store, p = env
    keys = device_join(env, METER)
    r = p.process(uplink(data(keys, 5, "meter", "report", {"voltage": 231.2, "import_energy": 99})), NOW)
    assert r.accepted and r.device_kind == "meter"
    by = {rec["n"]: rec for rec in r.records}
    assert by["voltage"]["u"] == "V" and by["voltage"]["v"] == pytest.approx(231.2)
    assert r.records[0]["bn"] == "urn:dev:eui64:70b3d57ed0005678:"


def test_replay_rejected(env):
    _, store, p = env
    keys = device_join(env)
    assert p.process(uplink(data(keys, 3)), NOW).accepted
    r = p.process(uplink(data(keys, 3)), NOW)
    assert not r.accepted and r.reason == "replay" and r.fcnt == 3
    assert p.process(uplink(data(keys, 2)), NOW).reason == "replay"
    assert store.get_by_dev_addr(keys[0]).fcnt_up == 3
    assert p.counters["replay"] == 2


def test_forged_mic_rejected_and_fcnt_kept(env):
    _, store, p = env
    keys = device_join(env)
    assert p.process(uplink(data(keys, 1)), NOW).accepted
    forged = data((keys[0], bytes(16), keys[2]), 9)
    r = p.process(uplink(forged), NOW)
    assert r.reason == "bad-mic" and not r.accepted and r.records == []
    flipped = bytearray(data(keys, 9))
    flipped[-1] ^= 1
    assert p.process(uplink(bytes(flipped)), NOW).reason == "bad-mic"
    assert store.get_by_dev_addr(keys[0]).fcnt_up == 1
    assert p.process(uplink(data(keys, 9)), NOW).accepted  # the real one still goes through
    assert p.counters["bad-mic"] == 2


def test_unknown_dev_addr(env):
    _, _, p = env
    r = p.process(uplink(data((0x26000001, bytes(16), bytes(16)), 0)), NOW)
    assert r.reason == "unknown-dev-addr" and r.dev_addr == 0x26000001 and len(r.copies) == 3


def test_fcnt_past_65535_rebuilt(env):
    _, store, p = env
    keys = device_join(env)
    assert p.process(uplink(data(keys, 65534)), NOW).accepted  # fresh session: taken as is
    r = p.process(uplink(data(keys, 65537)), NOW)  # 16 bits on air: 0x0001
    assert r.accepted and r.fcnt == 65537
    assert store.get_by_dev_addr(keys[0]).fcnt_up == 65537
    r = p.process(uplink(data(keys, 65537 + 20000)), NOW)  # authentic, > MAX_GAP ahead
    assert r.reason == "fcnt-gap" and r.fcnt == 65537 + 20000
    assert store.get_by_dev_addr(keys[0]).fcnt_up == 65537


def test_payload_error_counts_frame(env):
    _, store, p = env
    dev_addr, nwk, app = keys = device_join(env)
    bad = build_data_frame(UP, dev_addr, 4, 10, b"\x07\x00\x00", nwk, app)  # version 7
    r = p.process(uplink(bad), NOW)
    assert not r.accepted and r.reason == "payload-error" and r.payload_hex == "070000"
    assert "version" in r.error and r.fcnt == 4
    assert store.get_by_dev_addr(dev_addr).fcnt_up == 4  # MIC was good: counted as received
    assert p.process(uplink(bad), NOW).reason == "replay"
    port99 = build_data_frame(UP, dev_addr, 5, 99, b"\x01", nwk, app)
    assert p.process(uplink(port99), NOW).reason == "payload-error"
    meter_on_pole = data(keys, 6, "meter", "report")
    r = p.process(uplink(meter_on_pole), NOW)
    assert r.reason == "payload-error" and "device is a pole" in r.error
    assert p.counters["payload-error"] == 3


def test_join_malformed_not_uplink(env):
    _, _, p = env
    r = p.process(uplink(build_join_request(JOIN_EUI, POLE, 9, KEY)), NOW)
    assert (r.accepted, r.reason, r.kind, r.dev_eui) == (False, "join", "join", POLE)
    assert p.process(uplink(b"\x40\x01"), NOW).reason == "malformed"
    assert p.process(uplink(b""), NOW).reason == "malformed"
    keys = device_join(env)
    down = build_data_frame(frame.UNCONFIRMED_DOWN, keys[0], 0, 1, b"x", keys[1], keys[2])
    assert p.process(uplink(down), NOW).reason == "not-uplink"
    assert set(p.counters) == {"accepted", *REASONS}
    assert (p.counters["join"], p.counters["malformed"], p.counters["not-uplink"]) == (1, 2, 1)


def test_mac_only_frame_accepted(env):
    _, store, p = env
    dev_addr, nwk, app = device_join(env)
    phy = build_data_frame(UP, dev_addr, 0, None, b"", nwk, app, fopts=b"\x02")  # LinkCheckReq
    r = p.process(uplink(phy), NOW)
    assert r.accepted and r.records == [] and r.fport is None
    assert r.mac_commands and store.get_by_dev_addr(dev_addr).fcnt_up == 0


def test_bad_time_is_caller_bug(env):
    with pytest.raises(ValueError):
        env[2].process(uplink(b"\x40"), 5.0)

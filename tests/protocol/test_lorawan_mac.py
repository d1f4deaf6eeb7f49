"""LoRaWAN 1.0.x MAC commands: byte layouts hand-assembled from the spec tables, round trips of
every command in both directions, malformed-input fuzzing and the stop-at-unknown-CID rule."""

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lorawan import mac, network_side
from protocol.lorawan.mac import MacCommandError, decode_commands, encode_commands

H = binascii.unhexlify


def cmd(name, cid, **fields):
    d = {"cid": cid, "name": name}
    d.update(fields)
    return d


# (uplink, wire hex, expected dict) -- layouts from LoRaWAN 1.0.4 section 5 and RP002 for 0x09/0x0A
VECTORS = [
    # network -> device
    (False, "021403", cmd("LinkCheckAns", 2, margin=20, gw_cnt=3)),
    (False, "0351070001", cmd("LinkADRReq", 3, data_rate=5, tx_power=1, ch_mask=0x0007, ch_mask_cntl=0, nb_trans=1)),
    (False, "0320FF0061", cmd("LinkADRReq", 3, data_rate=2, tx_power=0, ch_mask=0x00FF, ch_mask_cntl=6, nb_trans=1)),
    (False, "040F", cmd("DutyCycleReq", 4, max_duty_cycle=15)),
    (False, "0512D2AD84", cmd("RXParamSetupReq", 5, rx1_dr_offset=1, rx2_data_rate=2, frequency=869525000)),
    (False, "06", cmd("DevStatusReq", 6)),
    (False, "0703184F8450", cmd("NewChannelReq", 7, ch_index=3, frequency=867100000, max_dr=5, min_dr=0)),
    (False, "0801", cmd("RXTimingSetupReq", 8, delay=1)),
    (False, "093B", cmd("TxParamSetupReq", 9, downlink_dwell_time=True, uplink_dwell_time=True, max_eirp=11)),
    (False, "0A00184F84", cmd("DlChannelReq", 10, ch_index=0, frequency=867100000)),
    (False, "0D78563412C0", cmd("DeviceTimeAns", 13, seconds=0x12345678, fractional=0xC0)),
    # device -> network
    (True, "02", cmd("LinkCheckReq", 2)),
    (True, "0307", cmd("LinkADRAns", 3, power_ack=True, data_rate_ack=True, channel_mask_ack=True)),
    (True, "0306", cmd("LinkADRAns", 3, power_ack=True, data_rate_ack=True, channel_mask_ack=False)),
    (True, "04", cmd("DutyCycleAns", 4)),
    (True, "0505", cmd("RXParamSetupAns", 5, rx1_dr_offset_ack=True, rx2_data_rate_ack=False, channel_ack=True)),
    (True, "06FF3F", cmd("DevStatusAns", 6, battery=255, margin=-1)),
    (True, "06001F", cmd("DevStatusAns", 6, battery=0, margin=31)),
    (True, "06FE20", cmd("DevStatusAns", 6, battery=254, margin=-32)),
    (True, "0702", cmd("NewChannelAns", 7, data_rate_range_ok=True, channel_frequency_ok=False)),
    (True, "08", cmd("RXTimingSetupAns", 8)),
    (True, "09", cmd("TxParamSetupAns", 9)),
    (True, "0A01", cmd("DlChannelAns", 10, uplink_frequency_exists=False, channel_frequency_ok=True)),
    (True, "0D", cmd("DeviceTimeReq", 13)),
]


@pytest.mark.parametrize("uplink, wire, expected", VECTORS, ids=[v[2]["name"] + ("-up" if v[0] else "-down") + v[1] for v in VECTORS])
def test_vectors(uplink, wire, expected):
    assert decode_commands(H(wire), uplink) == [expected]
    assert encode_commands([expected], uplink) == H(wire)
    by_name = {k: v for k, v in expected.items() if k != "cid"}
    assert encode_commands([by_name], uplink) == H(wire)


def test_concatenated_commands():
    down = H("0351070001" "06" "0801" "021403")
    cmds = decode_commands(down, False)
    assert [c["name"] for c in cmds] == ["LinkADRReq", "DevStatusReq", "RXTimingSetupReq", "LinkCheckAns"]
    assert encode_commands(cmds, False) == down


def test_direction_changes_the_meaning_of_a_cid():
    # 0x06 down is DevStatusReq (no payload); up it is DevStatusAns (2 bytes)
    assert [c["name"] for c in decode_commands(H("06" "06"), False)] == ["DevStatusReq", "DevStatusReq"]
    with pytest.raises(MacCommandError, match="DevStatusAns"):
        decode_commands(H("06" "06"), True)
    assert decode_commands(H("060606"), True) == [cmd("DevStatusAns", 6, battery=6, margin=6)]


def test_rfu_bits_are_ignored_on_input():
    assert decode_commands(H("03F8"), True)[0] == cmd("LinkADRAns", 3, power_ack=False, data_rate_ack=False, channel_mask_ack=False)
    assert decode_commands(H("06FFFF"), True)[0]["margin"] == -1  # RFU bits 7:6 of the margin byte
    assert decode_commands(H("08F3"), False)[0]["delay"] == 3


def test_unknown_cid_stops_decoding_with_offset_and_partial_result():
    with pytest.raises(MacCommandError, match=r"CID 0x0B at offset 5") as e:
        decode_commands(H("0351070001" "0B" "06"), False)
    assert e.value.offset == 5
    assert [c["name"] for c in e.value.commands] == ["LinkADRReq"]
    with pytest.raises(MacCommandError, match="CID 0x80 at offset 0"):
        decode_commands(H("80"), True)


def test_truncated_command():
    with pytest.raises(MacCommandError, match=r"LinkADRReq \(CID 0x03\) at offset 2 truncated: needs 4 bytes, 2 left") as e:
        decode_commands(H("06" "06" "035107"), False)
    assert e.value.offset == 2 and len(e.value.commands) == 2


def test_decode_accepts_bytearray_and_memoryview():
    assert decode_commands(bytearray(H("021403")), False) == decode_commands(memoryview(H("021403")), False)


@pytest.mark.parametrize(
    "command, uplink, message",
    [
        ({"name": "LinkADRReq", "data_rate": 16, "tx_power": 0, "ch_mask": 0, "ch_mask_cntl": 0, "nb_trans": 0}, False, "data_rate must be in 0..15"),
        ({"name": "LinkADRReq", "data_rate": 1, "tx_power": 0, "ch_mask": 0x10000, "ch_mask_cntl": 0, "nb_trans": 0}, False, "ch_mask"),
        ({"name": "LinkADRReq", "data_rate": 1}, False, "needs field 'tx_power'"),
        ({"name": "LinkADRReq"}, True, "not sent in the uplink direction"),
        ({"cid": 3, "name": "LinkADRAns"}, False, "CID 0x03 is LinkADRReq in the downlink direction"),
        ({"name": "DevStatusAns", "battery": 1, "margin": 32}, True, "margin must be in -32..31"),
        ({"name": "DevStatusAns", "battery": 1, "margin": -33}, True, "margin"),
        ({"name": "NewChannelReq", "ch_index": 3, "frequency": 868100050, "max_dr": 5, "min_dr": 0}, False, "multiple of 100 Hz"),
        ({"name": "NewChannelReq", "ch_index": 3, "frequency": 1677721600, "max_dr": 5, "min_dr": 0}, False, "multiple of 100 Hz"),
        ({"name": "NewChannelReq", "ch_index": 3, "frequency": "868.1", "max_dr": 5, "min_dr": 0}, False, "must be an integer"),
        ({"name": "Nope"}, False, "unknown MAC command 'Nope'"),
        ({"cid": 0x42}, False, "unknown downlink MAC command CID 66"),
        ({}, False, "needs a 'cid' or a 'name'"),
        ("LinkCheckReq", True, "must be a dict"),
    ],
)
def test_encode_errors(command, uplink, message):
    with pytest.raises(MacCommandError, match=message):
        encode_commands([command], uplink)


def test_command_table_queries():
    assert network_side.command_length(3, False) == 4 and network_side.command_length(3, True) == 1
    assert network_side.command_length(0x0B, True) is None
    names_up = {name for _, name, _ in network_side.commands(True)}
    names_down = {name for _, name, _ in network_side.commands(False)}
    for base in ("LinkCheck", "DutyCycle", "DevStatus", "NewChannel", "RXTimingSetup", "DeviceTime", "LinkADR", "RXParamSetup"):
        assert ({base + "Req", base + "Ans"} & names_up) and ({base + "Req", base + "Ans"} & names_down)


# --- round trips and fuzzing --------------------------------------------------------------------

u = st.integers
b = st.booleans()
freq = u(0, 0xFFFFFF).map(lambda x: x * 100)
FIELDS_DOWN = {
    "LinkCheckAns": dict(margin=u(0, 255), gw_cnt=u(0, 255)),
    "LinkADRReq": dict(data_rate=u(0, 15), tx_power=u(0, 15), ch_mask=u(0, 0xFFFF), ch_mask_cntl=u(0, 7), nb_trans=u(0, 15)),
    "DutyCycleReq": dict(max_duty_cycle=u(0, 15)),
    "RXParamSetupReq": dict(rx1_dr_offset=u(0, 7), rx2_data_rate=u(0, 15), frequency=freq),
    "DevStatusReq": {},
    "NewChannelReq": dict(ch_index=u(0, 255), frequency=freq, max_dr=u(0, 15), min_dr=u(0, 15)),
    "RXTimingSetupReq": dict(delay=u(0, 15)),
    "TxParamSetupReq": dict(downlink_dwell_time=b, uplink_dwell_time=b, max_eirp=u(0, 15)),
    "DlChannelReq": dict(ch_index=u(0, 255), frequency=freq),
    "DeviceTimeAns": dict(seconds=u(0, 0xFFFFFFFF), fractional=u(0, 255)),
}
FIELDS_UP = {
    "LinkCheckReq": {},
    "LinkADRAns": dict(power_ack=b, data_rate_ack=b, channel_mask_ack=b),
    "DutyCycleAns": {},
    "RXParamSetupAns": dict(rx1_dr_offset_ack=b, rx2_data_rate_ack=b, channel_ack=b),
    "DevStatusAns": dict(battery=u(0, 255), margin=u(-32, 31)),
    "NewChannelAns": dict(data_rate_range_ok=b, channel_frequency_ok=b),
    "RXTimingSetupAns": {},
    "TxParamSetupAns": {},
    "DlChannelAns": dict(uplink_frequency_exists=b, channel_frequency_ok=b),
    "DeviceTimeReq": {},
}


def command_strategy(fields):
    return st.one_of(*[st.fixed_dictionaries(dict(name=st.just(name), **f)) for name, f in sorted(fields.items())])


def test_strategies_cover_every_known_command():
    assert set(FIELDS_DOWN) == {n for _, n, _ in network_side.commands(False)}
    assert set(FIELDS_UP) == {n for _, n, _ in network_side.commands(True)}


@settings(max_examples=500)
@given(st.booleans().flatmap(lambda up: st.tuples(st.just(up), st.lists(command_strategy(FIELDS_UP if up else FIELDS_DOWN), max_size=8))))
def test_round_trip_both_directions(case):
    uplink, cmds = case
    wire = encode_commands(cmds, uplink)
    assert len(wire) == sum(1 + network_side.command_length({n: cid for cid, n, _ in network_side.commands(uplink)}[c["name"]], uplink) for c in cmds)
    back = decode_commands(wire, uplink)
    assert [{k: v for k, v in c.items() if k != "cid"} for c in back] == cmds
    assert all(isinstance(c["cid"], int) for c in back)
    assert encode_commands(back, uplink) == wire


@settings(max_examples=2000)
@given(st.binary(max_size=40), st.booleans())
def test_fuzz_decode_only_mac_command_error(data, uplink):
    try:
        cmds = decode_commands(data, uplink)
    except MacCommandError as e:
        assert 0 <= e.offset < len(data)
        assert decode_commands(data[: e.offset], uplink) == e.commands
        return
    # Everything decoded: re-encoding gives the input back except RFU bits, which become 0
    again = encode_commands(cmds, uplink)
    assert len(again) == len(data)
    assert decode_commands(again, uplink) == cmds


# -- DeviceTimeAns <-> UTC ------------------------------------------------------------------

def test_device_time_constants_from_the_calendar():
    import datetime

    utc = datetime.timezone.utc
    epoch_s = datetime.datetime(1980, 1, 6, tzinfo=utc).timestamp()
    leap_s = 18  # TAI - UTC = 37 s since 2017-01-01, GPS = TAI - 19 s
    # GPS time 0 is 1980-01-06T00:00:00Z minus the leap seconds UTC has taken since
    assert mac.device_time_unix_ms({"seconds": 0, "fractional": 0}) == (epoch_s - leap_s) * 1000
    assert network_side.device_time_ans((epoch_s - leap_s) * 1000) == {
        "cid": 0x0D, "name": "DeviceTimeAns", "seconds": 0, "fractional": 0}


def test_device_time_ans_of_a_known_instant():
    # 2026-11-28T06:00:00.500Z
    ans = network_side.device_time_ans(1795845600500)
    assert ans == {"cid": 13, "name": "DeviceTimeAns", "seconds": 1795845600 - 315964800 + 18,
                   "fractional": 128}
    wire = encode_commands([ans], False)
    assert wire == b"\x0d" + (1479880818).to_bytes(4, "little") + b"\x80"
    assert mac.device_time_unix_ms(decode_commands(wire, False)[0]) == 1795845600500
    # the GPS epoch itself, and a float (a gateway's time.time() * 1000) is truncated
    assert network_side.device_time_ans(315964800000 - 18000)["seconds"] == 0
    assert network_side.device_time_ans(1795845600500.9) == ans
    with pytest.raises(MacCommandError, match="GPS epoch"):
        network_side.device_time_ans(0)


@settings(max_examples=500)
@given(st.integers(min_value=315964800000 - 18000, max_value=4102444800000))  # GPS epoch..2100
def test_device_time_round_trip_through_the_wire(unix_ms):
    wire = encode_commands([network_side.device_time_ans(unix_ms)], False)
    (ans,) = decode_commands(wire, False)
    back = mac.device_time_unix_ms(ans)
    assert 0 <= unix_ms - back <= 4  # 1/256 s steps, rounded down on the way in


def test_device_time_on_micropython():
    import sim.mpvm

    if not sim.mpvm.available():
        pytest.skip("node or the MicroPython npm package missing")
    instants = [315964800000 - 18000, 1795845600500, 1795845600999, 4102444800000]
    script = ("from protocol.lorawan import mac, network_side\n"
              "for t in %r:\n"
              "    a = network_side.device_time_ans(t)\n"
              "    w = mac.encode_commands([a], False)\n"
              "    print(a['seconds'], a['fractional'], mac.device_time_unix_ms(mac.decode_commands(w, False)[0]))\n"
              % (instants,))
    got = [tuple(int(x) for x in line.split()) for line in sim.mpvm.run(script).split("\n") if line]
    want = [(network_side.device_time_ans(t)["seconds"], network_side.device_time_ans(t)["fractional"],
             mac.device_time_unix_ms(network_side.device_time_ans(t))) for t in instants]
    assert got == want

"""gateway.chirpstack.events and .readings: ChirpStack v4 integration events, built with
chirpstack-api's own protobuf classes and in the JSON of ChirpStack's documented ``up`` example,
become our records; malformed ones become an EventError with a reason, never anything else."""

import base64
import json

import pytest
from chirpstack_api import integration
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chirpstack.events import (REASONS, AckEvent, EventError, JoinEvent, TxAckEvent,
                                       UpEvent, parse_event)
from gateway.chirpstack.readings import up_item
from protocol import cbor, payload
from protocol.payload.senml import LABELS

NAMES = {v: k for k, v in LABELS.items()}
EUI = "0101010101010101"
APP = "17c82e96-be03-4f38-aef3-f83d48582d97"


def topic(kind, eui=EUI):
    return f"application/{APP}/device/{eui}/event/{kind}"


def documented_up(data=b"\xaa", fport=1, kind_tag=None):
    """The shape of ChirpStack v4's documented ``up`` event (integrations/events), JSON."""
    tags = {"key": "value"}
    if kind_tag:
        tags["streetgrid_kind"] = kind_tag
    return {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2022-07-18T09:34:15.775023242+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
            "applicationId": APP, "applicationName": "Test application",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": "Test device-profile", "deviceName": "Test device",
            "devEui": EUI, "tags": tags},
        "devAddr": "00189440", "dr": 1, "fCnt": 7, "fPort": fport,
        "data": base64.b64encode(data).decode(),
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36,
                    "snr": 10.5, "context": "E3OWOQ==",
                    "metadata": {"region_name": "eu868", "region_common_name": "EU868"}}],
        "txInfo": {"frequency": 867100000,
                   "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11,
                                           "codeRate": "CR_4_5"}}},
    }


def records_of(item):
    return [{NAMES.get(k, k): v for k, v in r.items()} for r in cbor.loads(item)]


def pole_report():
    return payload.encode_uplink("pole", "report", {"dim_level": 40, "lamp_power": 55.5,
                                                    "temperature": 21.5})


def test_the_documented_json_up_event():
    ev = parse_event(topic("up"), json.dumps(documented_up()).encode())
    assert isinstance(ev, UpEvent)
    assert (ev.application_id, ev.dev_eui.hex(), ev.fcnt, ev.fport, ev.dr) == (APP, EUI, 7, 1, 1)
    assert (ev.dev_addr, ev.data, ev.frequency, ev.datr) == (0x00189440, b"\xaa", 867100000,
                                                             "SF11BW125")
    assert ev.deduplication_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert [(r.gateway_id, r.rssi, r.snr) for r in ev.receptions] == [("0016C001F153A14C", -36, 10.5)]
    # fPort 1 is not one of our payloads, and the device has no kind: the bytes are kept
    item, error, *_ = up_item(ev, None, 1_800_000_000)
    assert "kind unknown" in error
    recs = records_of(item)
    assert recs[0]["n"] == "frm_payload" and recs[0]["vs"] == "aa"
    assert recs[0]["bn"] == f"urn:dev:eui64:{EUI}:"
    # ChirpStack's time has nanoseconds and an offset: the record keeps it (to the microsecond)
    assert recs[0]["bt"] == pytest.approx(1658136855.775023, abs=1e-6)
    lora = recs[0]["lora"]
    assert lora["network"] == "chirpstack" and lora["time_source"] == "network"
    assert lora["copies"] == [{"fwd": "0016C001F153A14C", "rssi": -36, "snr": 10.5}]


def test_a_pole_report_decodes_with_our_tables_from_the_kind_tag():
    port, body = pole_report()
    ev = parse_event(topic("up"), json.dumps(documented_up(body, port, "pole")).encode())
    item, error, *_ = up_item(ev, None, 0)
    assert error is None
    recs = {r["n"]: r for r in records_of(item)}
    assert recs["dim_level"]["v"] == 40 and recs["temperature"]["v"] == 21.5
    first = records_of(item)[0]
    assert first["bver"] == payload.SENML_BVER and first["lora"]["fport"] == port
    # the registry's kind wins over the tag: a meter's tables refuse a pole's fPort
    item, error, *_ = up_item(ev, "meter", 0)
    assert "pole payload, device is a meter" in error
    assert records_of(item)[0]["vs"] == body.hex()


def protobuf_up(body, port, eui=EUI, dedup="d-1", fcnt=70000):
    e = integration.UplinkEvent(deduplication_id=dedup, dev_addr="26011f3a", f_cnt=fcnt,
                                f_port=port, data=body, dr=5, confirmed=True)
    e.time.FromJsonString("2026-12-07T10:00:00.5Z")
    e.device_info.dev_eui = eui
    e.device_info.application_id = APP
    e.device_info.tags["streetgrid_kind"] = "pole"
    for i, (rssi, snr) in enumerate([(-90, 7.5), (-101, -3.25)]):
        r = e.rx_info.add()
        r.gateway_id = "aa555a000000000%d" % i
        r.rssi, r.snr = rssi, snr
    e.tx_info.frequency = 868300000
    e.tx_info.modulation.lora.spreading_factor = 7
    e.tx_info.modulation.lora.bandwidth = 125000
    return e.SerializeToString()


def test_a_protobuf_up_event_gives_the_same_records_as_its_json():
    port, body = pole_report()
    raw = protobuf_up(body, port)
    ev = parse_event(topic("up"), raw)
    assert (ev.fcnt, ev.fport, ev.confirmed, ev.dr, ev.datr) == (70000, port, True, 5, "SF7BW125")
    assert [r.gateway_id for r in ev.receptions] == ["AA555A0000000000", "AA555A0000000001"]
    from google.protobuf import json_format
    as_json = json_format.MessageToJson(integration.UplinkEvent.FromString(raw)).encode()
    assert parse_event(topic("up"), as_json) == ev
    item, error, *_ = up_item(ev, None, 0)
    assert error is None and records_of(item)[0]["bt"] == 1796637600.5


def test_join_ack_and_txack_events_in_both_encodings():
    j = integration.JoinEvent(deduplication_id="j-1", dev_addr="01020304")
    j.device_info.dev_eui = EUI
    a = integration.AckEvent(queue_item_id="q-1", acknowledged=True, f_cnt_down=12)
    t = integration.TxAckEvent(queue_item_id="q-1", downlink_id=99, f_cnt_down=12,
                               gateway_id="aa555a0000000001")
    from google.protobuf import json_format
    for msg, kind, want in ((j, "join", JoinEvent(APP, bytes.fromhex(EUI), "j-1", 0x01020304, {})),
                            (a, "ack", AckEvent(APP, bytes.fromhex(EUI), "q-1", True, 12)),
                            (t, "txack", TxAckEvent(APP, bytes.fromhex(EUI), "q-1", 99, 12,
                                                    "AA555A0000000001"))):
        assert parse_event(topic(kind), msg.SerializeToString()) == want
        assert parse_event(topic(kind), json_format.MessageToJson(msg).encode()) == want


@pytest.mark.parametrize("tpc, body, reason", [
    ("application/x/device/0101/event/up", b"{}", "bad-topic"),
    ("streetgrid/a/b/readings", b"{}", "bad-topic"),
    (topic("status"), b"{}", "unknown-type"),
    (topic("up"), b"{not json", "bad-encoding"),
    (topic("up"), b"[1, 2]", "bad-encoding"),
    (topic("up"), b"\xff\xff\xff\xff", "bad-encoding"),
    (topic("up"), json.dumps({"deduplicationId": "x", "data": "***"}).encode(), "bad-field"),
    (topic("up"), json.dumps({"data": ""}).encode(), "bad-field"),
    (topic("up"), json.dumps({"deduplicationId": "x", "fPort": 300}).encode(), "bad-field"),
    (topic("up"), json.dumps({"deduplicationId": "x", "rxInfo": {}}).encode(), "bad-field"),
    (topic("up"), json.dumps({"deduplicationId": "x", "fCnt": "many"}).encode(), "bad-field"),
    (topic("up"), json.dumps({"deduplicationId": "x", "devAddr": "zz"}).encode(), "bad-field"),
    (topic("up"), json.dumps({"deduplicationId": "x",
                              "deviceInfo": {"devEui": "0202020202020202"}}).encode(),
     "topic-mismatch"),
    (topic("ack"), json.dumps({"acknowledged": "yes", "queueItemId": "q"}).encode(), "bad-field"),
])
def test_malformed_events_name_their_reason(tpc, body, reason):
    with pytest.raises(EventError) as exc:
        parse_event(tpc, body)
    assert exc.value.reason == reason and exc.value.reason in REASONS


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)
up_keys = st.sampled_from(["deduplicationId", "time", "deviceInfo", "devAddr", "dr", "fCnt",
                           "fPort", "confirmed", "data", "rxInfo", "txInfo"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(up_keys, json_values, max_size=11),
       st.sampled_from(["up", "join", "ack", "txack"]))
def test_any_json_event_parses_or_is_refused_with_a_reason(fields, kind):
    try:
        ev = parse_event(topic(kind), json.dumps(fields).encode())
    except EventError as exc:
        assert exc.reason in REASONS
        return
    if isinstance(ev, UpEvent):  # whatever parsed also becomes an item
        item, *_ = up_item(ev, "pole", 0)
        assert records_of(item)[0]["bn"] == f"urn:dev:eui64:{EUI}:"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["up", "join", "ack", "txack"]))
def test_any_bytes_parse_or_are_refused_with_a_reason(raw, kind):
    try:
        parse_event(topic(kind), raw)
    except EventError as exc:
        assert exc.reason in REASONS

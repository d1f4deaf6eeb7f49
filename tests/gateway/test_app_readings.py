"""readings: one uplink Result -> one CBOR SenML array with the lora extension; rxpk time parsing."""

import math
from datetime import datetime, timezone

import cbor2
import pytest
from hypothesis import given, strategies as st

from gateway.backhaul import batch
from gateway.lorawan.dedup import Uplink
from gateway.lorawan.forwarders import ForwarderCopy
from gateway.lorawan.readings import ItemError, parse_rxpk_time, uplink_item
from gateway.lorawan.uplink import Result
from protocol import cbor
from protocol.lorawan.region import EU868

EUI = bytes.fromhex("70B3D57ED0001234")
NOW = 1_790_000_000.5


@pytest.mark.parametrize("text,want", [
    ("2026-11-28T06:00:00Z", 1795845600),
    ("2026-11-28T06:00:00.5Z", 1795845600.5),
    ("2026-11-28T06:00:00.123456789Z", 1795845600.123456789),
    ("2026-11-28T06:00:00.250000", 1795845600.25),  # no offset: UTC
    ("2026-11-28 07:30:00+01:30", 1795845600),
    ("2026-11-28T01:00:00-0500", 1795845600),
    ("2016-12-31T23:59:60Z", 1483228800),  # leap second
])
def test_parse_rxpk_time(text, want):
    assert parse_rxpk_time(text) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("text", [None, 5, "", "yesterday", "2026-13-01T00:00:00Z",
                                  "2026-11-28T06:00:00+25:00", "1970-01-01T00:00:10Z",
                                  "2026-11-28T06:00Z", "2026-11-28T06:00:61Z"])
def test_unusable_rxpk_time(text):
    assert parse_rxpk_time(text) is None


@given(st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2100, 1, 1)))
def test_parse_round_trips_isoformat(dt):
    dt = dt.replace(tzinfo=timezone.utc)
    assert parse_rxpk_time(dt.isoformat()) == pytest.approx(dt.timestamp(), abs=1e-6)
    assert parse_rxpk_time(dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == pytest.approx(dt.timestamp(), abs=1e-6)


@given(st.text(max_size=40))
def test_parse_never_raises(text):
    t = parse_rxpk_time(text)
    assert t is None or (math.isfinite(t) and t >= 1 << 28)


def result(records=None, accepted=True, time_a="2026-11-28T06:00:00Z", **kw):
    copies = [ForwarderCopy("AA01", -110, -2.0, 868100000, "SF7BW125", 5, "2020-01-01T00:00:00Z"),
              ForwarderCopy("AA02", -80, 9.5, 868100000, "SF7BW125", 7, time_a),
              ForwarderCopy("AA03", -120, None, 868100000, "SF7BW125", 9, None)]
    base = dict(kind="data", uplink=Uplink(b"phy", copies, 0.0), dev_eui=EUI, dev_addr=0x26000001,
                fcnt=42, fport=10, confirmed=False, device_kind="pole")
    base.update(kw)
    if accepted:
        return Result(True, records=records or [], **base)
    return Result(False, "payload-error", payload_hex="0102", error="bad length", **base)


def decode(item):
    assert cbor2.loads(item) == cbor.loads(item)  # an independent decoder agrees
    n, _ = batch.item_records(item)
    recs = cbor.loads(item)
    assert n == len(recs)
    return recs


def test_report_item_uses_best_copy_time_and_lists_every_copy():
    r = result([{"bver": 26, "bn": "x", "bt": NOW, "n": "dim_level", "v": 40, "u": "/100"},
                {"n": "status/lamp_on", "vb": True}])
    item, fallback = uplink_item(r, EU868, NOW, "forwarder")
    recs = decode(item)
    assert not fallback
    first = recs[0]
    assert first[-1] == 26 and first[-2] == f"urn:dev:eui64:{EUI.hex()}:" and first[-3] == 1795845600
    assert (first[0], first[2], first[1]) == ("dim_level", 40, "/100")
    assert recs[1] == {0: "status/lamp_on", 4: True}
    lora = first["lora"]
    assert lora == {"dev_addr": "26000001", "fcnt": 42, "fport": 10, "confirmed": False,
                    "datr": "SF7BW125", "dr": 5, "freq": 868100000, "time_source": "forwarder",
                    "copies": [{"fwd": "AA01", "rssi": -110, "snr": -2.0, "tmst": 5,
                                "time": "2020-01-01T00:00:00Z"},
                               {"fwd": "AA02", "rssi": -80, "snr": 9.5, "tmst": 7,
                                "time": "2026-11-28T06:00:00Z"},
                               {"fwd": "AA03", "rssi": -120, "tmst": 9}]}


@pytest.mark.parametrize("time_a", [None, "garbage"])
def test_unusable_forwarder_time_falls_back_to_gateway_clock(time_a):
    item, fallback = uplink_item(result([{"n": "a", "v": 1}], time_a=time_a), EU868, NOW)
    first = decode(item)[0]
    assert fallback and first[-3] == NOW and first["lora"]["time_source"] == "gateway"


def test_gateway_time_source_ignores_forwarder_time():
    item, fallback = uplink_item(result([{"n": "a", "v": 1}]), EU868, NOW, "gateway")
    first = decode(item)[0]
    assert not fallback and first[-3] == NOW and first["lora"]["time_source"] == "gateway"


def test_payload_error_and_mac_only_items():
    first = decode(uplink_item(result(accepted=False), EU868, NOW)[0])[0]
    assert (first[0], first[3], first["lora"]["error"]) == ("frm_payload", "0102", "bad length")
    first = decode(uplink_item(result([], fport=None), None, NOW)[0])[0]
    assert (first[0], first[2], first[1]) == ("lora/fcnt", 42, "count")
    assert "fport" not in first["lora"] and "dr" not in first["lora"]
    with pytest.raises(ItemError):
        uplink_item(Result(False, "replay", uplink=Uplink(b"", [], 0.0)), EU868, NOW)


def test_wire_format_documents_every_lora_key():
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "wire-format.md")) as f:
        doc = f.read()
    table = doc.split('`"lora"` is a map with text keys:')[1].split("\n\n")[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    produced = set()
    for r in (result([{"n": "a", "v": 1}]), result(accepted=False)):
        produced |= set(decode(uplink_item(r, EU868, NOW)[0])[0]["lora"])
    assert documented == produced
    copy_keys = set(decode(uplink_item(result([{"n": "a", "v": 1}]), EU868, NOW)[0])[0]["lora"]["copies"][0])
    for k in copy_keys:
        assert f"`{k}`" in table

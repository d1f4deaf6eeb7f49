"""Payload codec v1 (protocol.payload): the shared TS013 examples, hand-computed vectors for the
device-side encoder, size budgets, the SenML / LwM2M mapping, schema sanity, and the same
examples run on the real MicroPython VM."""

import binascii
import json
import os
import re
import sys

import pytest

import sim.mpvm
from protocol import payload
from protocol.payload import codec, layouts, schema, tablegen

if not __package__:  # run as a script (see the end of this file): make `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.protocol.ts013_examples import KINDS, ROOT, load_examples, python_answer, strict_equal  # noqa: E402

EXAMPLES = [(kind, ex) for kind in KINDS for ex in load_examples(kind)]


@pytest.mark.parametrize("kind,example", EXAMPLES, ids=["%s: %s" % (k, e["description"]) for k, e in EXAMPLES])
def test_python_codec_matches_example(kind, example):
    got = python_answer(kind, example)
    assert strict_equal(got, example["output"]), (got, example["output"])


def test_examples_cover_every_message_with_normal_and_error_cases():
    for kind in KINDS:
        seen_ok, seen_err = set(), set()
        for ex in load_examples(kind):
            inp = ex["input"]
            if ex["type"] == "downlink-encode":
                port = ex["output"].get("fPort")
                if port is None:
                    seen_err.add(("encode", inp["data"]["command"]))
                else:
                    seen_ok.add(("encode", inp["data"]["command"]))
                continue
            key = ("decode", inp["fPort"])
            (seen_err if ex["output"]["errors"] else seen_ok).add(key)
        for port in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS:
            lay = payload.describe(port)
            if lay["kind"] not in (kind, "any"):
                continue
            assert ("decode", port) in seen_ok, (kind, port)
            if lay["dir"] == "down":
                assert ("encode", lay["name"]) in seen_ok, (kind, lay["name"])
        for port in (10, 11, 12, 13) if kind == "pole" else (20, 21, 22, 23):
            assert ("decode", port) in seen_err, (kind, port)
        for cmd in ("dim", "schedule", "override", "pole_config") if kind == "pole" else ("relay", "meter_config"):
            assert ("encode", cmd) in seen_err, (kind, cmd)
        assert ("decode", 99) in seen_err  # unknown fPort


# ---- sizes -------------------------------------------------------------------------------


def test_report_sizes_meet_the_budget():
    assert payload.describe(10)["size"] == 12  # pole report <= 12 bytes
    assert payload.describe(20)["size"] == 16  # meter report <= 16 bytes
    assert len(payload.encode_uplink("pole", "report", {})[1]) == 12
    assert len(payload.encode_uplink("meter", "report", {})[1]) == 16


def test_every_frame_fits_dr0():
    # N = 51 bytes at DR0..2 (EU868 and KR920), both directions
    for port in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS:
        lay = payload.describe(port)
        biggest = lay["size"]
        if lay["repeat"] is not None:
            biggest += lay["repeat"]["max"] * lay["repeat"]["size"]
        assert biggest <= 51, (port, biggest)
    entries = [{"anchor": "fixed", "minute": 0, "level": 0}] * 12
    assert len(payload.encode_downlink("pole", "schedule", {"entries": entries})[1]) == 50


def test_uplink_ports_are_unique_across_kinds():
    kinds = {}
    for port in payload.UPLINK_PORTS:
        kinds[port] = payload.describe(port)["kind"]
    assert kinds == {10: "pole", 11: "pole", 12: "pole", 13: "pole",
                     20: "meter", 21: "meter", 22: "meter", 23: "meter"}
    assert not set(payload.UPLINK_PORTS) & set(payload.DOWNLINK_PORTS)
    assert all(1 <= p <= 223 for p in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS)  # application fPorts


# ---- device-side encoder: hand-computed vectors --------------------------------------------

H = binascii.unhexlify


@pytest.mark.parametrize(
    "kind,message,fields,hexbytes",
    [
        # the fields bench/device_uplink.py sends: 70 % | 355 dW | 12345 Wh | 200 dlx | (12.5+40)*2 | 110
        ("pole", "report", {"dim_level": 70, "lamp_power": 35.5, "lamp_energy": 12345, "ambient_light": 20,
                            "temperature": 12.5, "humidity": 55.0}, "0100466301393000c800696e"),
        # missing sensor fields encode as not available (0xffff, 0xff, 0xff), the rest as 0
        ("pole", "report", {}, "0100000000000000ffffffff"),
        # clamping: 150 % -> 100, -5 W -> 0, -1 lx -> 0, 100 degC -> 87 (0xfe), -50 %RH -> 0;
        # energy 2^24 + 5 wraps to 5
        ("pole", "report", {"dim_level": 150, "lamp_power": -5, "lamp_energy": (1 << 24) + 5,
                            "ambient_light": -1, "temperature": 100, "humidity": -50}, "01006400000500000000fe00"),
        # energy -1 wraps to 2^24 - 1; NaN humidity means not available; 35.25 W rounds half away to 35.3
        ("pole", "report", {"lamp_energy": -1, "humidity": float("nan"), "lamp_power": 35.25},
         "0100006101ffffffffffffff"),
        # 100000 lx = 1000000 dlx: e = 8, m = (1000000 + 128) >> 8 = 3906 -> 0x8f42
        ("pole", "report", {"ambient_light": 100000}, "0100000000000000428fffff"),
        # bitmap from booleans: lamp_on | alarm = 0x81; a boolean clearing one bit of a raw int
        ("pole", "report", {"status/lamp_on": True, "status/alarm": 1}, "0181000000000000ffffffff"),
        ("pole", "report", {"status": 0xFF, "status/lamp_on": False}, "01fe000000000000ffffffff"),
        # meter: import 2^32 + 1 wraps to 1; -2.5 W rounds half away from zero to -3 (0xfffd);
        # 230 V = 2300 (0x08fc); PF None -> 0x80; 50 Hz -> 100
        ("meter", "report", {"status/relay_closed": True, "import_energy": 2 ** 32 + 1, "export_energy": 7,
                             "active_power": -2.5, "voltage": 230, "power_factor": None, "frequency": 50},
         "01010100000007000000fdfffc088064"),
        ("meter", "ack", {"port": 70, "seq": 12, "result": "ok"}, "01460c00"),
        ("pole", "ack", {"port": 52, "seq": 3, "result": 4}, "01340304"),
    ],
)
def test_uplink_encoder_vectors(kind, message, fields, hexbytes):
    port, data = payload.encode_uplink(kind, message, fields)
    assert payload.describe(port)["kind"] == kind and payload.describe(port)["name"] == message
    assert data == H(hexbytes)


def test_unknown_messages_and_commands():
    with pytest.raises(payload.PayloadError, match="unknown uplink message report for lamp"):
        payload.encode_uplink("lamp", "report", {})
    with pytest.raises(payload.PayloadError, match="unknown downlink command relay for pole"):
        payload.encode_downlink("pole", "relay", {"action": "open"})
    with pytest.raises(payload.PayloadError, match="unknown downlink command dim for any"):
        payload.encode_downlink("any", "dim", {"level": 1})
    assert payload.encode_downlink("any", "reboot", {}) == (60, b"\x01\x00\x00")
    with pytest.raises(payload.PayloadError, match="fields must be an object"):
        payload.encode_downlink("meter", "relay", ["open"])
    with pytest.raises(payload.PayloadError, match="unknown fPort 1$"):
        payload.describe(1)
    # both kinds reach the common commands, on the same fPort
    assert payload.encode_downlink("pole", "reboot", {})[0] == payload.encode_downlink("meter", "reboot", {})[0] == 60


def test_errors_are_value_errors_with_one_line_messages():
    for call in (
        lambda: payload.decode_uplink(10, b""),
        lambda: payload.decode_uplink(10, b"\x07" * 12),
        lambda: payload.decode_downlink(51, b"\x01\x00\x09\x00\x00\x00"),
        lambda: payload.encode_downlink("pole", "dim", {"level": float("inf")}),
        lambda: payload.encode_uplink("meter", "report", {"import_energy": float("inf")}),
        lambda: payload.encode_uplink("meter", "report", {"status": 1.5}),
        lambda: payload.encode_uplink("pole", "ack", {"result": "great"}),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert isinstance(info.value, payload.PayloadError)
        assert "\n" not in str(info.value) and str(info.value).startswith(("fPort", "unknown"))


def test_decode_accepts_bytes_like():
    data = H("0100466301393000c800696e")
    want = payload.decode_uplink(10, data)
    assert payload.decode_uplink(10, bytearray(data)) == want
    assert payload.decode_uplink(10, memoryview(data)) == want
    assert tablegen.decode(layouts.LAYOUTS[0], memoryview(data)) == want


# ---- SenML and LwM2M ------------------------------------------------------------------------

# RFC 8428 / RFC 8798 primary units and RFC 8798 secondary units we may use
PRIMARY_UNITS = {"W", "V", "A", "Cel", "lx", "%RH", "/", "rad", "Hz", "count", "s", "lat", "lon"}
SECONDARY_UNITS = {"Wh", "/100", "min"}
SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*$")
LWM2M_PATH = re.compile(r"^\d+/\d+/\d+$")


def all_fields(lay):
    fields = list(lay["fields"])
    if lay["repeat"] is not None:
        fields += lay["repeat"]["fields"]
    return fields


def test_every_field_has_a_senml_name_unit_and_valid_lwm2m_path():
    for port in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS:
        for f in all_fields(payload.describe(port)):
            assert SENML_NAME.match(f["name"]), f["name"]
            if f["bits"] is None and f["enum"] is None and f["name"] not in ("seq", "port"):
                assert f["unit"] in PRIMARY_UNITS | SECONDARY_UNITS, (port, f["name"], f["unit"])
            for path in [f["lwm2m"]] + [b[2] for b in f["bits"] or ()]:
                assert path is None or LWM2M_PATH.match(path), path
            for b in f["bits"] or ():
                assert SENML_NAME.match(f["name"] + "/" + b[1])
    assert payload.SENML_BVER == 26  # RFC 9100: base version 10 + secondary-units feature (bit 4)


def test_senml_records_for_a_pole_report():
    decoded = payload.decode_uplink(10, bytes([1, 5, 70, 99, 1, 57, 48, 0, 25, 0, 255, 111]))
    recs = payload.senml_records(decoded)
    by_name = {r["n"]: r for r in recs}
    assert by_name["status"] == {"n": "status", "v": 5}
    assert by_name["status/lamp_on"] == {"n": "status/lamp_on", "vb": True}
    assert by_name["status/dark"] == {"n": "status/dark", "vb": True, "lwm2m": "3419/0/3"}
    assert by_name["status/day_burner"] == {"n": "status/day_burner", "vb": False, "lwm2m": "3416/0/10"}
    assert by_name["dim_level"] == {"n": "dim_level", "u": "/100", "v": 70, "lwm2m": "3416/0/3"}
    assert by_name["lamp_power"] == {"n": "lamp_power", "u": "W", "v": 35.5, "lwm2m": "3418/0/4"}
    assert by_name["lamp_energy"] == {"n": "lamp_energy", "u": "Wh", "v": 12345, "lwm2m": "3418/0/6"}
    assert by_name["ambient_light"] == {"n": "ambient_light", "u": "lx", "v": 2.5, "lwm2m": "3301/0/5700"}
    assert by_name["humidity"] == {"n": "humidity", "u": "%RH", "v": 55.5, "lwm2m": "3304/0/5700"}
    assert "temperature" not in by_name  # 0xff: not available, so no record
    assert len(recs) == 1 + 8 + 5


def test_senml_records_for_an_ack_and_a_schedule():
    recs = payload.senml_records(payload.decode_uplink(22, bytes([1, 70, 12, 5])))
    assert recs == [{"n": "port", "v": 70}, {"n": "seq", "v": 12}, {"n": "result", "vs": "failed"}]
    recs = payload.senml_records(payload.decode_downlink(51, bytes([1, 3, 1, 241, 255, 100])))
    assert recs == [
        {"n": "seq", "v": 3},
        {"n": "entries/0/anchor", "vs": "sunset"},
        {"n": "entries/0/minute", "u": "min", "v": -15},
        {"n": "entries/0/level", "u": "/100", "v": 100},
    ]


def test_senml_records_work_for_every_uplink():
    for port in payload.UPLINK_PORTS:
        lay = payload.describe(port)
        ones = {f["name"]: 1 for f in lay["fields"]}
        for fields in ({}, ones):
            data = payload.encode_uplink(lay["kind"], lay["name"], fields)[1]
            recs = payload.senml_records(payload.decode_uplink(port, data))
            assert recs and all(set(r) <= {"n", "u", "v", "vb", "vs", "lwm2m"} for r in recs)
            assert all(sum(k in r for k in ("v", "vb", "vs")) == 1 for r in recs)
            if fields:  # nothing is "not available", so every field yields its record
                names = {r["n"] for r in recs}
                assert set(ones) <= names


# ---- the table itself -----------------------------------------------------------------------


def test_schema_offsets_are_contiguous_and_match_struct():
    import struct

    for port in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS:
        lay = payload.describe(port)
        at = 1
        for f in lay["fields"]:
            assert f["at"] == at
            at += f["size"]
        assert at == lay["size"] == struct.calcsize(tablegen.shape(payload._TABLE[port])[0])
        assert lay["label"].startswith("fPort %d (" % port)


def test_schema_rejects_typos():
    bad = {"port": 5, "kind": "pole", "dir": "up", "name": "x", "fields": [{"name": "a", "type": "u8", "scale": 2}]}
    with pytest.raises(schema.SchemaError, match="unknown key scale"):
        schema.normalize(bad)
    bad["fields"] = [{"name": "a", "type": "u12"}]
    with pytest.raises(schema.SchemaError, match="unknown type u12"):
        schema.normalize(bad)
    assert len(schema.schema()) == len(layouts.LAYOUTS)


def test_raw_bounds_exclude_sentinels_and_honour_min_max():
    d = {f["name"]: f for f in payload.describe(20)["fields"]}
    assert (d["power_factor"]["raw_min"], d["power_factor"]["raw_max"]) == (-100, 100)
    assert (d["voltage"]["raw_min"], d["voltage"]["raw_max"]) == (0, 65534)
    assert (d["frequency"]["min"], d["frequency"]["max"]) == (40, 65.4)
    d = {f["name"]: f for f in payload.describe(61)["fields"]}
    assert (d["utc_offset"]["raw_min"], d["utc_offset"]["raw_max"]) == (-48, 56)
    d = {f["name"]: f for f in payload.describe(10)["fields"]}
    assert (d["temperature"]["min"], d["temperature"]["max"]) == (-40, 87)
    assert d["ambient_light"]["raw_max"] == 4094 << 15


# ---- MicroPython -----------------------------------------------------------------------------

VM_SCRIPT = r"""
import json
from protocol import payload
from protocol.payload import network_side as gw  # the gateway's half, re-exported on CPython only


def run(kind, ex):
    inp = ex["input"]
    try:
        if ex["type"] == "uplink":
            return {"data": gw.decode_uplink(inp["fPort"], bytes(inp["bytes"])), "errors": [], "warnings": []}
        if ex["type"] == "downlink-decode":
            return {"data": payload.decode_downlink(inp["fPort"], bytes(inp["bytes"])), "errors": [], "warnings": []}
        d = inp["data"]
        port, data = gw.encode_downlink(kind, d["command"], d.get("fields", {}))
        return {"bytes": list(data), "fPort": port, "errors": [], "warnings": []}
    except payload.PayloadError as e:
        return {"errors": [str(e)], "warnings": []}


out = {}
for kind in ("pole", "meter"):
    with open("/lib/protocol/codecs/streetgrid-%s.examples.json" % kind) as f:
        out[kind] = [run(kind, ex) for ex in json.load(f)]
uplinks = []
for kind, message, fields in UPLINKS:
    port, data = payload.encode_uplink(kind, message, fields)
    uplinks.append([port, list(data), gw.decode_uplink(port, data)])
out["uplinks"] = uplinks
print(json.dumps(out))
"""

VM_UPLINKS = [
    ["pole", "report", {"dim_level": 70, "lamp_power": 35.5, "lamp_energy": 12345, "ambient_light": 20,
                        "temperature": 12.5, "humidity": 55.0}],
    ["pole", "report", {"dim_level": 150, "lamp_power": -5, "lamp_energy": 16777221, "ambient_light": 99999.9,
                        "temperature": -12.75, "humidity": 33.3, "status/lamp_on": True}],
    ["pole", "alarm", {"alarms/tilted": True, "alarm_count": 65537, "tilt_angle": 0.5, "supply_voltage": 231.26,
                       "lamp_current": 0.4567, "lamp_power": 99.95, "temperature": None}],
    ["pole", "ack", {"port": 50, "seq": 200, "result": "bad_length"}],
    ["pole", "boot", {"reset_cause": 5, "failed_boots": 0, "safe_modes": 1, "events": 1}],
    ["meter", "report", {"status": 3, "import_energy": 4294967301, "export_energy": 12, "active_power": -40000,
                         "voltage": 229.95, "power_factor": -0.455, "frequency": 59.96}],
    ["meter", "alarm", {"alarms": 0x0801, "voltage": 0, "voltage_min": 0, "voltage_max": 251.3, "current": 99.994,
                        "active_power": 12.5}],
    ["meter", "ack", {"port": 71, "seq": 1, "result": "failed"}],
    ["meter", "boot", {"reset_cause": 3, "failed_boots": 300, "safe_modes": 65537, "events": 0}],
]


def close(a, b):
    """Equal, or both floats within double rounding (MicroPython prints floats its own way)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(1, abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_micropython_vm_agrees_with_cpython():
    script = "UPLINKS = %s\n%s" % (json.dumps(VM_UPLINKS).replace("true", "True").replace("null", "None"), VM_SCRIPT)
    out = json.loads(sim.mpvm.run(script))
    for kind in KINDS:
        for ex, got in zip(load_examples(kind), out[kind]):
            assert close(got, python_answer(kind, ex)), (kind, ex["description"], got)
            assert close(got, ex["output"]), (kind, ex["description"], got)
    assert len(out["uplinks"]) == len(VM_UPLINKS)
    for (kind, message, fields), (port, data, decoded) in zip(VM_UPLINKS, out["uplinks"]):
        cport, cdata = payload.encode_uplink(kind, message, fields)
        assert (port, bytes(data)) == (cport, cdata), (kind, message)
        assert close(decoded, payload.decode_uplink(cport, cdata))


# ---- the byte tables in docs/wire-format.md are rendered from the table -----------------------


def _num(v):
    return codec.fmt_number(v)


def _value_rule(f):
    if f["bits"] is not None:
        return "bitmap"
    if f["enum"] is not None:
        return "enum: " + ", ".join("%d %s" % (i, n) for i, n in enumerate(f["enum"]))
    raw = "raw"
    if f["float"] == "e4m12":
        raw = "(m << e)"
    if f["wrap"]:
        return "raw mod 2^%d" % (8 * f["size"])
    expr = raw
    if f["mul"] != 1:
        expr += " x %d" % f["mul"]
    if f["div"] != 1:
        expr += " / %d" % f["div"]
    if f["add"]:
        expr += " %s %d" % ("+" if f["add"] > 0 else "-", abs(f["add"]))
    return expr


def markdown_layout(port):
    """The doc table of one fPort (see docs/wire-format.md)."""
    lay = payload.describe(port)
    kind = "common to both kinds" if lay["kind"] == "any" else lay["kind"] + " " + lay["dir"] + "link"
    size = "%d bytes" % lay["size"]
    if lay["repeat"] is not None:
        size = "%d + %d x n bytes, n = 0..%d" % (lay["size"], lay["repeat"]["size"], lay["repeat"]["max"])
    lines = ["#### fPort %d: %s (%s, %s)" % (port, lay["name"], kind, size), "",
             "| byte | field | wire | value | unit | range | n/a | LwM2M |",
             "|---|---|---|---|---|---|---|---|",
             "| 0 | version | u8 | 1 | | | | |"]

    def row(f, at):
        rng = "" if f["bits"] is not None or f["enum"] is not None or f["wrap"] else \
            "%s..%s" % (_num(f["min"]), _num(f["max"]))
        na = "" if f["na"] is None else ("0x%x" % (f["na"] & ((1 << (8 * f["size"])) - 1)))
        return "| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            at, f["name"], f["type"], _value_rule(f), f["unit"] or "", rng, na, f["lwm2m"] or "")

    for f in lay["fields"]:
        lines.append(row(f, f["at"]))
    if lay["repeat"] is not None:
        rep = lay["repeat"]
        for f in rep["fields"]:
            lines.append(row(dict(f, name="%s[i].%s" % (rep["name"], f["name"])),
                             "%d + %d i" % (lay["size"] + f["at"], rep["size"])))
    return "\n".join(lines) + "\n"


def markdown_bits(bits, title):
    lines = ["#### %s" % title, "", "| bit | name | LwM2M |", "|---|---|---|"]
    for b in bits:
        lines.append("| %d | %s | %s |" % (b[0], b[1], b[2] or ""))
    return "\n".join(lines) + "\n"


def markdown_tables():
    parts = [markdown_layout(p) for p in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS]
    parts += [
        markdown_bits(layouts.POLE_STATUS, "pole status bits (fPorts 10, 11)"),
        markdown_bits(layouts.POLE_ALARMS, "pole alarm bits (fPort 11)"),
        markdown_bits(layouts.METER_STATUS, "meter status bits (fPorts 20, 21)"),
        markdown_bits(layouts.METER_ALARMS, "meter alarm bits (fPort 21)"),
        markdown_bits(layouts.BOOT_EVENTS, "boot event bits (fPorts 13, 23)"),
    ]
    return parts


def test_doc_byte_tables_match_the_table():
    with open(os.path.join(ROOT, "docs", "wire-format.md")) as f:
        doc = f.read()
    for part in markdown_tables():
        assert part in doc, "docs/wire-format.md is stale; expected:\n" + part


if __name__ == "__main__":  # print the doc tables: python tests/protocol/test_payload.py
    print("\n".join(markdown_tables()))

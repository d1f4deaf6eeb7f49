"""The compact device tables (protocol/payload/tables/): generated from layouts.py without drift,
in agreement with the normalized schema, and the only schema a device loads: the MicroPython VM
encodes a report and decodes commands without importing layouts.py, schema.py or senml.py."""

import json
import re
import struct

import pytest

import sim.mpvm
from protocol import payload
from protocol.payload import layouts, senml, tablegen


@pytest.mark.parametrize("module", tablegen.modules())
def test_checked_in_tables_equal_the_generator_output(module):
    with open(tablegen.paths()[module]) as f:
        assert f.read() == tablegen.render(module), "run: python -m protocol.payload.jsgen"


def test_tables_agree_with_the_normalized_schema():
    ports = payload.UPLINK_PORTS + payload.DOWNLINK_PORTS
    assert sorted(ports) == sorted(lay["port"] for lay in layouts.LAYOUTS)
    for port in ports:
        norm = payload.describe(port)
        lay = payload._TABLE[port]
        assert lay[:4] == (port, norm["kind"], norm["dir"], norm["name"])
        fmt, n, size, rfmt, rn, rsize = tablegen.shape(lay)
        assert struct.calcsize(fmt) == size == norm["size"]
        groups = [(lay[4], norm["fields"])]
        if norm["repeat"] is not None:
            assert lay[5][:2] == (norm["repeat"]["name"], norm["repeat"]["max"])
            assert struct.calcsize(rfmt) == rsize == norm["repeat"]["size"]
            groups.append((lay[5][2], norm["repeat"]["fields"]))
        else:
            assert lay[5] is None and rfmt is None
        for compact, fields in groups:
            assert len(compact) == len(fields)
            for c, f in zip(compact, fields):
                assert c[:8] == (f["name"], f["type"], f["na"], f["mul"], f["div"], f["add"],
                                 f["raw_min"], f["raw_max"])
                assert c[10] == (f["float"] == "e4m12") and c[13] == f["required"]
                assert c[11] == (8 * f["size"] if f["wrap"] else 0)
                assert c[12] == f.get("default")
                if f["bits"] is not None:
                    assert [(b, c[8][b]) for b in range(len(c[8])) if c[8][b]] == \
                        [(b[0], b[1]) for b in f["bits"]]
                assert (c[9] is None) == (f["enum"] is None) and list(c[9] or ()) == (f["enum"] or [])
                if norm["dir"] == "down":
                    assert c[14:] == (f["min"], f["max"])
                else:
                    assert len(c) == 14  # uplinks clamp: the range is for strict messages only
    assert payload.SENML_BVER == senml.SENML_BVER


def test_tablegen_codes_with_a_declarative_layout_too():
    data = payload.encode_uplink("pole", "report", {"dim_level": 70})[1]
    assert tablegen.decode(layouts.LAYOUTS[0], data) == payload.decode_uplink(10, data)
    assert tablegen.encode(layouts.LAYOUTS[0], {"dim_level": 70}) == data


def test_unknown_ports_names_and_kinds():
    for call in (
        lambda: payload.decode_uplink(50, b"\x01\x00\x00\x00\x00"),  # a downlink fPort
        lambda: payload.decode_downlink(10, b"\x01" * 12),  # an uplink fPort
        lambda: payload.decode_uplink(None, b""),
        lambda: payload.encode_uplink(None, "report", {}),
        lambda: payload.encode_uplink("any", "reboot", {}),
        lambda: payload.encode_downlink("pole", "report", {}),
        lambda: payload.senml_records({"kind": "lamp", "message": "report", "fields": {}}),
    ):
        with pytest.raises(payload.PayloadError):
            call()


DEVICE_SCRIPT = r"""
import sys, micropython
from protocol import payload
port, data = payload.encode_uplink("pole", "report", {"dim_level": 70, "lamp_power": 35.5})
after_report = [sorted(m for m in sys.modules if m.startswith("protocol.payload")), sorted(payload._TABLE)]
dim = payload.decode_downlink(50, bytes([1, 7, 50, 25, 0]))
reboot = payload.decode_downlink(60, bytes([1, 8, 5]))
after_commands = [sorted(m for m in sys.modules if m.startswith("protocol.payload")), sorted(payload._TABLE)]
micropython.qstr_info(1)  # every string interned so far: the names of the modules ever imported
print(json.dumps([port, list(data), after_report, dim, reboot, after_commands]))
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_a_pole_loads_only_its_tables_and_keeps_none():
    out = sim.mpvm.run("import json\n" + DEVICE_SCRIPT)
    port, data, after_report, dim, reboot, after_commands = json.loads(out.strip().splitlines()[-1])
    assert (port, bytes(data)) == payload.encode_uplink("pole", "report", {"dim_level": 70, "lamp_power": 35.5})
    assert dim == payload.decode_downlink(50, bytes([1, 7, 50, 25, 0]))
    assert reboot == payload.decode_downlink(60, bytes([1, 8, 5]))
    # nothing kept: no tables module and no cached layout, after the report nor after the
    # commands (the downlink decoder is dropped again too)
    loaded = ["protocol.payload", "protocol.payload.codec", "protocol.payload.tables"]
    assert after_report == [loaded, []]
    assert after_commands == [loaded, []]
    # the pole's tables and the commands every device takes were imported; the meter's never
    interned = set(re.findall(r"Q\((.*)\)", out))
    assert {"protocol.payload.tables.pole", "protocol.payload.tables.any"} <= interned
    assert "protocol.payload.tables.meter" not in interned

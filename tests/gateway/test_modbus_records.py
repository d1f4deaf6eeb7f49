"""gateway.modbus.readings: one meter poll -> one SenML item in the poles' batch format."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.backhaul.batch import decode_batch, encode_batch
from gateway.modbus.readings import meter_item, meter_urn
from gateway.backhaul.store import Record, RecordQueue
from protocol import cbor
from protocol.modbus import registers as regmap
from protocol.payload import SENML_BVER

BN = "urn:dev:modbus:rs485-1.7:"
T = 1795845600.25


def test_names_units_and_obis_come_from_the_register_map():
    values = {"voltage_l1": 230.5, "power_factor": -0.5, "energy_import_kwh": 12.5,
              "energy_import_wh": 12_500, "serial": 4242, "firmware_major": 1}
    recs = cbor.loads(meter_item(BN, "rs485-1", 7, T, values))
    assert [(r[0], r[1], r[2]) for r in recs] == [
        ("voltage/l1", "V", 230.5), ("power_factor", "/", -0.5),
        ("energy/import", "kWh", 12.5), ("energy/import", "Wh", 12_500)]  # no identity records
    assert recs[0][-1] == SENML_BVER and recs[0][-2] == BN and recs[0][-3] == T
    assert all(-2 not in r for r in recs[1:])
    assert recs[0]["modbus"] == {"bus": "rs485-1", "address": 7,
                                 "obis": ["1-0:32.7.0", "1-0:13.7.0", "1-0:1.8.0", "1-0:1.8.0"]}


def test_nothing_measured_is_no_item_and_urns():
    assert meter_item(BN, "b", 1, T, {"serial": 1, "model": 1}) is None
    assert meter_urn("rs485-1", 7) == BN
    assert meter_urn("x", 1, "urn:dev:os:32473-007") == "urn:dev:os:32473-007:"


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1),
       st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_exact_wh_stays_exact_through_registers_and_batch(imp, exp, volts):
    values = {"energy_import_wh": imp, "energy_export_wh": exp, "voltage_l1": volts}
    # through the register encoding, as the meter serves it
    regs = regmap.encode_block(4, 0x1000, 8, values)
    assert regmap.decode_block(0x1000, regs) == {"energy_import_wh": imp, "energy_export_wh": exp}
    item = meter_item(BN, "b", 7, T, values)
    pack = decode_batch(encode_batch("gw-1", 1, 1, [item]))["records"]
    got = {(r[0], r[1]): r[2] for r in pack}
    assert got[("energy/import", "Wh")] == imp and type(got[("energy/import", "Wh")]) is int
    assert got[("energy/export", "Wh")] == exp
    assert math.isclose(got[("voltage/l1", "V")], volts, rel_tol=0, abs_tol=0)


def test_items_share_the_durable_queue_and_batches_with_pole_items(tmp_path):
    pole = cbor.dumps([{-1: SENML_BVER, -2: "urn:dev:eui64:0011223344556677:", -3: 1795845600,
                        0: "lux", 1: "lx", 2: 12.0}])
    meter = meter_item(BN, "b", 7, T, {"power": 1500.0, "energy_import_wh": 99})
    with RecordQueue(str(tmp_path / "q.db")) as q:
        q.put([pole])
        q.put([Record(meter, "modbus")])
        items = [payload for _id, payload in q.peek(10)]
    pack = decode_batch(encode_batch("gw-1", 1, 1, items))["records"]
    assert [r.get(-2) for r in pack] == ["urn:dev:eui64:0011223344556677:", BN, None]
    assert [(r[0], r[2]) for r in pack[1:]] == [("power", 1500.0), ("energy/import", 99)]

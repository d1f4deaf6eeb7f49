"""One poll of one Modbus meter -> one queued item: a CBOR SenML record array.

Same shape as a LoRaWAN uplink's item (gateway/lorawan/readings.py): RFC 8428 CBOR labels, bver on the
first record, ``bn`` the meter's URN, ``bt`` the poll time (UNIX seconds), one record per
measured register with the SenML name and unit from the register map
(protocol/modbus/registers.py, which also holds each point's OBIS code). The first record
carries the extension field ``"modbus"``: ``{"bus": name, "address": a, "obis": [code or None, ...]}`` (one
OBIS code per record, in record order)
so the poll can be traced back to the wire.  One item per poll keeps a poll all-or-nothing in
the durable queue, as an uplink is.

Registers without a SenML name (identity: map version, serial, firmware) are not measurements
and are left out; float32 values stay floats, exact u64 Wh counters stay integers.
"""

from __future__ import annotations

from protocol.payload.senml import LABELS
from protocol import cbor
from protocol.modbus import registers as regmap
from protocol.payload import SENML_BVER

__all__ = ["meter_item", "meter_urn", "records"]


def meter_urn(bus: str, address: int, urn: str | None = None) -> str:
    """The meter's SenML base name: the configured URN, else one built from bus and address."""
    if urn:
        return urn if urn.endswith(":") else urn + ":"
    return f"urn:dev:modbus:{bus}.{address}:"


def records(values: dict) -> list[dict]:
    """SenML records (text keys) for the measured values among `values`, in map order."""
    out = []
    for reg in regmap.REGISTERS:
        if reg.name in values and reg.senml_name:
            out.append({"n": reg.senml_name, "u": reg.senml_unit, "v": values[reg.name]})
    return out


def meter_item(bn: str, bus: str, address: int, poll_time_s: float, values: dict) -> bytes | None:
    """CBOR array for one poll, or None if no measured value was read."""
    recs = records(values)
    if not recs:
        return None
    t = float(poll_time_s)
    if t == int(t):
        t = int(t)
    recs[0] = dict({"bver": SENML_BVER, "bn": bn, "bt": t}, **recs[0])
    obis = [reg.obis for reg in regmap.REGISTERS if reg.name in values and reg.senml_name]
    out = [{LABELS.get(k, k): v for k, v in r.items()} for r in recs]
    out[0]["modbus"] = {"bus": bus, "address": address, "obis": obis}
    return cbor.dumps(out)

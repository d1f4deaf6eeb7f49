"""The ``[[modbus.bus]]`` tables of the gateway config -> BusConfig, every problem collected.

Format (TOML; defaults shown, as gateway.modbus.poller.BusConfig)::

    [[modbus.bus]]
    name = "rs485-1"            # MQTT/SenML-visible bus name (urn:dev:modbus:<name>.<address>:)
    kind = "rtu"                # "rtu" (serial) | "tcp"
    port = "/dev/serial/by-id/usb-FTDI_...-if00-port0"   # rtu
    baudrate = 9600   parity = "N"   stopbits = 1        # rtu
    host = "10.0.0.7"   tcp_port = 502                  # tcp
    timeout_s = 0.2   retries = 1   poll_interval_s = 1.0
    backoff_min_s = 1.0   backoff_max_s = 60.0   reopen_min_s = 0.5   reopen_max_s = 30.0
    turnaround_s = 0.005   max_pending = 10000
      [[modbus.bus.meter]]
      address = 1
      points = ["voltage_l1", "power", "energy_import_wh", "energy_export_wh"]
      urn = "urn:dev:os:32473-0001"    # optional
      timeout_s = 0.3                  # optional, else the bus's
      max_regs = 125                   # 80 for a real Eastron SDM630

Unknown keys are errors, as in gateway/config.py.
"""

from __future__ import annotations

from dataclasses import fields

from gateway.modbus.plan import MeterPlan, PlanError
from gateway.modbus.poller import BusConfig, MeterConfig

__all__ = ["parse_buses"]

_BUS_KEYS = {f.name: f for f in fields(BusConfig)} | {"meter": None}
_METER_KEYS = {f.name for f in fields(MeterConfig)}
_NUM = (int, float)


def _check(where, table, key, types, errors, ok=lambda v: True, what=""):
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, types) or not ok(v):
        errors.append(f"{where}.{key}: {v!r} is not {what or types}")
        return False
    return True


def parse_buses(section, errors: list) -> list:
    """BusConfig per ``[[modbus.bus]]``; problems are appended to `errors` (nothing raised)."""
    buses = []
    if section is None:
        return buses
    if not isinstance(section, dict) or set(section) - {"bus"}:
        errors.append("modbus: only [[modbus.bus]] tables are allowed")
        return buses
    names = set()
    for i, b in enumerate(section.get("bus", [])):
        where = f"modbus.bus[{i}]"
        n0 = len(errors)
        if not isinstance(b, dict):
            errors.append(f"{where}: not a table")
            continue
        for k in sorted(set(b) - set(_BUS_KEYS)):
            errors.append(f"{where}.{k}: unknown key")
        kw = {}
        for k, v in b.items():
            if k in ("meter",) or k not in _BUS_KEYS:
                continue
            if k in ("name", "kind", "port", "host", "parity"):
                _check(where, b, k, str, errors, what="a string")
            elif k in ("baudrate", "stopbits", "tcp_port", "retries", "max_pending"):
                _check(where, b, k, int, errors, lambda x: x >= 0, "a non-negative integer")
            else:
                _check(where, b, k, _NUM, errors, lambda x: x >= 0, "a non-negative number")
            kw[k] = v
        if "name" not in b:
            errors.append(f"{where}.name: missing")
        elif b["name"] in names:
            errors.append(f"{where}.name: {b['name']!r} used twice")
        names.add(b.get("name"))
        if kw.get("kind", "rtu") not in ("rtu", "tcp"):
            errors.append(f"{where}.kind: must be 'rtu' or 'tcp'")
        if kw.get("kind", "rtu") == "rtu" and not kw.get("port"):
            errors.append(f"{where}.port: an rtu bus needs a serial port")
        if kw.get("parity", "N") not in ("N", "E", "O"):
            errors.append(f"{where}.parity: must be 'N', 'E' or 'O'")
        meters = []
        for j, m in enumerate(b.get("meter", [])):
            mw = f"{where}.meter[{j}]"
            if not isinstance(m, dict):
                errors.append(f"{mw}: not a table")
                continue
            for k in sorted(set(m) - _METER_KEYS):
                errors.append(f"{mw}.{k}: unknown key")
            if "address" not in m or "points" not in m:
                errors.append(f"{mw}: needs address and points")
                continue
            _check(mw, m, "address", int, errors, lambda a: 1 <= a <= 247, "an address 1..247")
            pts = m["points"]
            if not isinstance(pts, list) or not all(isinstance(p, str) for p in pts):
                errors.append(f"{mw}.points: must be a list of register names")
                continue
            try:
                MeterPlan(pts, m.get("max_regs", 125))
            except (PlanError, TypeError) as exc:
                errors.append(f"{mw}.points: {exc}")
                continue
            meters.append(MeterConfig(m["address"], tuple(pts), m.get("urn"), m.get("timeout_s"),
                                      m.get("max_regs", 125)))
        addrs = [m.address for m in meters]
        if len(set(addrs)) != len(addrs):
            errors.append(f"{where}: two meters share an address")
        if len(errors) == n0:
            buses.append(BusConfig(meters=tuple(meters), **kw))
    return buses

"""gateway.modbus.config: [[modbus.bus]] tables -> BusConfig, every problem reported."""

from __future__ import annotations

import tomllib

from gateway.modbus.config import parse_buses
from gateway.modbus.poller import BusConfig, MeterConfig

GOOD = """
[[modbus.bus]]
name = "rs485-1"
port = "/dev/ttyUSB0"
baudrate = 19200
timeout_s = 0.15
  [[modbus.bus.meter]]
  address = 1
  points = ["voltage_l1", "energy_import_wh"]
  [[modbus.bus.meter]]
  address = 2
  points = ["power"]
  urn = "urn:dev:os:32473-2"
  max_regs = 80

[[modbus.bus]]
name = "tcp-1"
kind = "tcp"
host = "10.0.0.7"
"""


def test_good_config():
    errors = []
    buses = parse_buses(tomllib.loads(GOOD)["modbus"], errors)
    assert errors == []
    assert buses[0] == BusConfig("rs485-1", (MeterConfig(1, ("voltage_l1", "energy_import_wh")),
                                             MeterConfig(2, ("power",), "urn:dev:os:32473-2", None, 80)),
                                 port="/dev/ttyUSB0", baudrate=19200, timeout_s=0.15)
    assert buses[1].kind == "tcp" and buses[1].host == "10.0.0.7" and buses[1].meters == ()
    assert parse_buses(None, errors) == [] and errors == []


def test_every_problem_is_reported():
    bad = """
[[modbus.bus]]
name = "a"
baud = 9600
parity = "X"
timeout_s = -1
  [[modbus.bus.meter]]
  address = 300
  points = ["voltage_l1"]
  [[modbus.bus.meter]]
  address = 2
  points = ["nope"]
  colour = 1
[[modbus.bus]]
name = "a"
kind = "tcp"
"""
    errors = []
    assert parse_buses(tomllib.loads(bad)["modbus"], errors) == []
    text = "\n".join(errors)
    for want in ("modbus.bus[0].baud: unknown key", "parity", "timeout_s", "port",
                 "meter[0].address", "meter[1].colour: unknown key", "meter[1].points",
                 "modbus.bus[1].name: 'a' used twice"):
        assert want in text, (want, errors)

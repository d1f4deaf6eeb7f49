"""gateway.modbus.commands: what an operator's Modbus command becomes, and its outcome when the
meter refuses or does not answer (real BusPoller against a real pymodbus TCP server)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.modbus.commands import (ModbusCommandError, parse_modbus_command,
                                     run_modbus_command)
from gateway.modbus.poller import BusConfig, BusPoller, MeterConfig
from protocol.modbus import registers as regmap
from tests.gateway.modbus_servers import MapDevice, tcp_server

BUSES = {"rs485-1": {3, 4}}
ARM = regmap.entry("relay_arm").address
RELAY = regmap.entry("relay").address


def relay(action, bus="rs485-1", address=3, **extra):
    return dict({"modbus": {"bus": bus, "address": address}, "command": "relay",
                 "fields": {"action": action}}, **extra)


@pytest.mark.parametrize("action,value", [("open", 0), ("close", 1)])
def test_relay_is_an_arm_then_a_separate_relay_write(action, value):
    cmd = parse_modbus_command(relay(action), BUSES)
    assert (cmd.bus, cmd.address, cmd.label) == ("rs485-1", 3, f"relay {action}")
    assert cmd.writes == ((ARM, (regmap.RELAY_ARM_MAGIC,)), (RELAY, (value,)))
    for register, values in cmd.writes:  # each is a write the meter's map accepts
        assert regmap.check_write(register, list(values)) == 0


@pytest.mark.parametrize("obj,needle", [
    (relay("open", bus="rs485-2"), "not configured"),
    (relay("open", address=5), "no meter 5"),
    (relay("open", address="3"), "no meter"),
    (relay("half"), "open"),
    (relay("open", extra=1), "expected"),
    ({"modbus": {"bus": "rs485-1"}, "command": "relay", "fields": {"action": "open"}}, "expected"),
    ({"modbus": {"bus": "rs485-1", "address": 3}, "command": "write", "fields": {}}, "unknown"),
])
def test_bad_modbus_commands_say_why(obj, needle):
    with pytest.raises(ModbusCommandError, match=needle):
        parse_modbus_command(obj, BUSES)


@given(st.dictionaries(st.sampled_from(["modbus", "command", "fields", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=6),
                                                 max_size=3))))
def test_any_object_parses_or_is_refused_with_a_reason(obj):
    try:
        cmd = parse_modbus_command(obj, BUSES)
    except ModbusCommandError as exc:
        assert str(exc)
    else:
        assert cmd.address in BUSES[cmd.bus] and len(cmd.writes) == 2


def test_refused_and_unanswered_commands_are_reported_failed():
    class NoRelay(MapDevice):  # a meter whose relay write is refused (exception 03)
        def setValues(self, func_code, address, values):
            if address == RELAY:
                from pymodbus.constants import ExcCodes
                return ExcCodes.ILLEGAL_VALUE
            return super().setValues(func_code, address, values)

    async def main():
        dev = NoRelay({})
        server, port = await tcp_server({3: dev})
        cfg = BusConfig("rs485-1", (MeterConfig(3, ("voltage_l1",)), MeterConfig(4, ("voltage_l1",))),
                        kind="tcp", tcp_port=port, timeout_s=0.1, retries=0, poll_interval_s=0.5)
        p = BusPoller(cfg, lambda items: None)
        task = asyncio.create_task(p.run())
        try:
            refused = await run_modbus_command(p, parse_modbus_command(relay("open"), BUSES))
            silent = await run_modbus_command(p, parse_modbus_command(relay("close", address=4),
                                                                      BUSES))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.shutdown()
        return dev, refused, silent, p.stats()

    dev, refused, silent, stats = asyncio.run(main())
    assert refused == "register 0x%04X: exception 3" % regmap.entry("relay").address
    assert silent.startswith("register 0x%04X: " % ARM)  # no answer to the arm
    assert dev.writes == [(ARM, [regmap.RELAY_ARM_MAGIC])]  # the arm went out, the relay was refused
    assert stats["meters"][3]["exceptions"] == {3: 1}
    assert stats["meters"][4]["timeouts"] >= 1

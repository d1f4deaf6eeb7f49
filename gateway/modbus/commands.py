"""Operator commands for meters on a Modbus bus, received on the same MQTT command topic as the
LoRaWAN commands (gateway/commands/subscriber.py) and carried out as writes on the bus's poller.

    {"modbus": {"bus": "rs485-1", "address": 3}, "command": "relay", "fields": {"action": "open"}}

A relay command is the meter's two-step sequence (protocol/modbus/registers.py): the arm value
to `relay_arm`, then 0 (open) or 1 (close) to `relay`, as two separate requests, as the meter
demands. Both are queued behind the polls already waiting (BusPoller.write), so a command never
races a poll on the wire; it goes out within one poll cycle, not after the next uplink as a
LoRaWAN command does. The outcome is logged and counted (`modbus_done` / `modbus_failed` in the
`commands` section of stats.json); a failed command is not retried by itself: the operator
decides, since a disconnect at an unexpected later moment is worse than none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.modbus.poller import WriteError
from protocol.modbus import registers as regmap

__all__ = ["ModbusCommand", "parse_modbus_command", "run_modbus_command", "RELAY_ACTIONS"]

log = logging.getLogger(__name__)

RELAY_ACTIONS = {"open": 0, "close": 1}


class ModbusCommandError(ValueError):
    """The command cannot be run; the message says why (one line)."""


@dataclass(frozen=True)
class ModbusCommand:
    bus: str
    address: int
    label: str  # for the log: "relay open"
    writes: tuple  # ((register address, (values...)), ...), sent one request each, in order


def parse_modbus_command(obj: dict, buses) -> ModbusCommand:
    """A decoded JSON command with a "modbus" key -> ModbusCommand; ModbusCommandError if the
    bus or meter is not configured, or the command or its fields are not understood. `buses`:
    the configured bus names -> their meters' addresses (only those can be written)."""
    extra = set(obj) - {"modbus", "command", "fields"}
    target, fields = obj.get("modbus"), obj.get("fields", {})
    if extra or not isinstance(target, dict) or set(target) != {"bus", "address"} \
            or not isinstance(fields, dict):
        raise ModbusCommandError('expected {"modbus": {"bus": str, "address": int}, '
                                 '"command": str, "fields": {...}}')
    bus, address = target["bus"], target["address"]
    if not isinstance(bus, str) or bus not in buses:
        raise ModbusCommandError(f"modbus bus {bus!r} is not configured")
    if type(address) is not int or address not in buses[bus]:
        raise ModbusCommandError(f"modbus bus {bus}: no meter {address!r} is configured")
    if obj.get("command") != "relay":
        raise ModbusCommandError(f"modbus command {obj.get('command')!r} is unknown (known: relay)")
    action = fields.get("action")
    if set(fields) != {"action"} or action not in RELAY_ACTIONS:
        raise ModbusCommandError('relay: fields must be {"action": "open" | "close"}')
    arm = regmap.entry("relay_arm").address
    relay = regmap.entry("relay").address
    return ModbusCommand(bus, address, f"relay {action}",
                         ((arm, (regmap.RELAY_ARM_MAGIC,)), (relay, (RELAY_ACTIONS[action],))))


async def run_modbus_command(poller, cmd: ModbusCommand) -> str | None:
    """Send the command's writes through the bus's poller; None if the meter accepted them
    all, else why not (one line)."""
    for register, values in cmd.writes:
        try:
            await poller.write(cmd.address, register, values)
        except WriteError as exc:
            why = f"exception {exc.code}" if exc.code is not None else str(exc)
            log.warning("modbus command %s for %s.%d failed at register 0x%04X: %s", cmd.label,
                        cmd.bus, cmd.address, register, why)
            return f"register 0x{register:04X}: {why}"
    log.info("modbus command %s for %s.%d done", cmd.label, cmd.bus, cmd.address)
    return None

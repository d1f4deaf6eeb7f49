"""The streetgrid AMI meter's Modbus register map with everything people and the gateway read:
a `Register` record per register (function, address, count, type, name, unit, OBIS code, SenML
name and unit, writable, description, allowed values), the value codecs, the master side
(decode_block, read_plan) and the doc table.

The layout itself (names, addresses, sizes, allowed values) and the slave's checks are
protocol.modbus.register_map, which the meter firmware imports alone; the records here are
built from it, with the descriptive fields below keyed by register name. See register_map for
the blocks (SDM630 float32 block, exact u64 Wh, identity, configuration).
"""

import struct

from collections import namedtuple

from protocol.modbus import register_map as _map
from protocol.modbus.line import BAUD_RATES, DEFAULTS, PARITY_CODES  # noqa: F401 - part of the map
from protocol.modbus.pdu import (  # noqa: F401 - the codes a check returns, for callers
    ILLEGAL_ADDRESS, ILLEGAL_FUNCTION, ILLEGAL_VALUE, MAX_READ, MAX_WRITE, READ_HOLDING, READ_INPUT,
    ModbusError,
)
from protocol.modbus.register_map import (  # noqa: F401 - the slave side, for the gateway and tests
    BLOCKS, MAP_VERSION, MODEL_AMI_METER, RELAY_ADDRESS, RELAY_ARM_ADDRESS, RELAY_ARM_MAGIC,
    RELAY_ARM_WINDOW_S, RELAY_CLOSED, RELAY_OPEN, RelayArm, check_read, check_write,
)
from protocol.modbus.register_map import _block  # noqa: F401

Register = namedtuple(
    "Register",
    (
        "function",  # 4 = input register, 3 = holding register (also written with 6 / 16)
        "address",  # 0-based protocol address of the first register
        "count",  # registers it spans
        "type",  # "f32", "u16", "u32", "u64": big endian, most significant register first
        "name",  # python-friendly key used by encode_block / decode_block / read_plan
        "unit",  # unit of the register's value ("" for none)
        "obis",  # IEC 62056-61 code, or None
        "senml_name",  # SenML record name, or None for non-measurements
        "senml_unit",  # SenML unit (Wh, kWh, kvarh are RFC 9100 secondary units), or None
        "writable",
        "description",
        "allowed",  # writable registers: the values a write may carry (a range or a tuple)
    ),
)


class RegisterError(ModbusError):
    """Unknown register name, or a value that its register type cannot hold."""


_PF = "+ capacitive, - inductive"
_EXP = "negative when exporting"
_ARM_TEXT = "Write 0x%04X to arm the relay for %d s; reads 1 while armed"

# Input registers: name -> (unit, OBIS code, SenML name, description)
# fmt: off
INPUT_INFO = {
    "voltage_l1": ("V", "1-0:32.7.0", "voltage/l1", "L1 to neutral voltage"),
    "voltage_l2": ("V", "1-0:52.7.0", "voltage/l2", "L2 to neutral voltage"),
    "voltage_l3": ("V", "1-0:72.7.0", "voltage/l3", "L3 to neutral voltage"),
    "current_l1": ("A", "1-0:31.7.0", "current/l1", "L1 current"),
    "current_l2": ("A", "1-0:51.7.0", "current/l2", "L2 current"),
    "current_l3": ("A", "1-0:71.7.0", "current/l3", "L3 current"),
    "power_l1": ("W", "1-0:36.7.0", "power/l1", "L1 active power, " + _EXP),
    "power_l2": ("W", "1-0:56.7.0", "power/l2", "L2 active power, " + _EXP),
    "power_l3": ("W", "1-0:76.7.0", "power/l3", "L3 active power, " + _EXP),
    "apparent_power_l1": ("VA", None, "apparent_power/l1", "L1 apparent power"),
    "apparent_power_l2": ("VA", None, "apparent_power/l2", "L2 apparent power"),
    "apparent_power_l3": ("VA", None, "apparent_power/l3", "L3 apparent power"),
    "reactive_power_l1": ("var", None, "reactive_power/l1", "L1 reactive power"),
    "reactive_power_l2": ("var", None, "reactive_power/l2", "L2 reactive power"),
    "reactive_power_l3": ("var", None, "reactive_power/l3", "L3 reactive power"),
    "power_factor_l1": ("", "1-0:33.7.0", "power_factor/l1", "L1 power factor, " + _PF),
    "power_factor_l2": ("", "1-0:53.7.0", "power_factor/l2", "L2 power factor, " + _PF),
    "power_factor_l3": ("", "1-0:73.7.0", "power_factor/l3", "L3 power factor, " + _PF),
    "phase_angle_l1": ("deg", None, "phase_angle/l1", "L1 phase angle"),
    "phase_angle_l2": ("deg", None, "phase_angle/l2", "L2 phase angle"),
    "phase_angle_l3": ("deg", None, "phase_angle/l3", "L3 phase angle"),
    "voltage_avg": ("V", None, "voltage/avg", "Average line to neutral voltage"),
    "current_avg": ("A", None, "current/avg", "Average line current"),
    "current_sum": ("A", "1-0:90.7.0", "current/sum", "Sum of line currents"),
    "power": ("W", "1-0:16.7.0", "power", "Total active power, " + _EXP),
    "apparent_power": ("VA", None, "apparent_power", "Total apparent power"),
    "reactive_power": ("var", None, "reactive_power", "Total reactive power"),
    "power_factor": ("", "1-0:13.7.0", "power_factor", "Total power factor, " + _PF),
    "phase_angle": ("deg", None, "phase_angle", "Total phase angle"),
    "frequency": ("Hz", "1-0:14.7.0", "frequency", "Supply frequency"),
    "energy_import_kwh": ("kWh", "1-0:1.8.0", "energy/import", "Import energy (float)"),
    "energy_export_kwh": ("kWh", "1-0:2.8.0", "energy/export", "Export energy (float)"),
    "reactive_energy_import_kvarh": ("kvarh", "1-0:3.8.0", "reactive_energy/import",
                                     "Import reactive energy"),
    "reactive_energy_export_kvarh": ("kvarh", "1-0:4.8.0", "reactive_energy/export",
                                     "Export reactive energy"),
    "voltage_l1_l2": ("V", None, "voltage/l1_l2", "L1 to L2 voltage"),
    "voltage_l2_l3": ("V", None, "voltage/l2_l3", "L2 to L3 voltage"),
    "voltage_l3_l1": ("V", None, "voltage/l3_l1", "L3 to L1 voltage"),
    "voltage_ll_avg": ("V", None, "voltage/ll_avg", "Average line to line voltage"),
    "current_n": ("A", "1-0:91.7.0", "current/n", "Neutral current"),
    "energy_total_kwh": ("kWh", "1-0:15.8.0", "energy/total", "Import + export energy"),
    "energy_import_wh": ("Wh", "1-0:1.8.0", "energy/import", "Import energy"),
    "energy_export_wh": ("Wh", "1-0:2.8.0", "energy/export", "Export energy"),
    "map_version": ("", None, None, "Register map version (%d)" % MAP_VERSION),
    "model": ("", None, None, "%d = streetgrid AMI meter" % MODEL_AMI_METER),
    "serial": ("", None, None, "Serial number"),
    "firmware_major": ("", None, None, "Firmware version, major"),
    "firmware_minor": ("", None, None, "Firmware version, minor"),
    "firmware_patch": ("", None, None, "Firmware version, patch"),
}

# Holding registers: name -> description
HOLDING_INFO = {
    "modbus_address": "Slave address (default 1)",
    "baud_rate": "Baud rate / 100 (default 96 = 9600)",
    "parity": "0 = 8N1 (default), 1 = 8E1, 2 = 8O1, 3 = 8N2",
    "relay_arm": _ARM_TEXT % (RELAY_ARM_MAGIC, RELAY_ARM_WINDOW_S),
    "relay": "0 = open, 1 = closed; needs an earlier arm, else exception 03",
}
# fmt: on

FLOAT_BLOCK = (0x0000, 0x0158)


def _input_register(name, address, count):
    unit, obis, senml_name, description = INPUT_INFO[name]
    if address < FLOAT_BLOCK[1]:
        typ = "f32"
        senml_unit = (unit or "/") if senml_name else None  # "/" = ratio: the power factor
    else:
        typ = {1: "u16", 2: "u32", 4: "u64"}[count]
        senml_unit = unit if senml_name else None
    return Register(READ_INPUT, address, count, typ, name, unit, obis, senml_name, senml_unit,
                    False, description, None)


INPUT_REGISTERS = tuple(_input_register(name, address, count)
                        for name, address, count in _map.input_registers())
HOLDING_REGISTERS = tuple(
    Register(READ_HOLDING, 0x3000 + i, 1, "u16", name, "", None, None, None, True,
             HOLDING_INFO[name], _map.ALLOWED[i])
    for i, name in enumerate(_map.HOLDING)
)

REGISTERS = INPUT_REGISTERS + HOLDING_REGISTERS
BY_NAME = {r.name: r for r in REGISTERS}


def entry(name):
    """The Register called `name` (RegisterError if there is none)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise RegisterError("no register named %r" % (name,))


# ---------------------------------------------------------------- value encodings


def _pack(value, count, is_float):
    buf = bytearray(2 * count)
    try:
        _map.pack_value(buf, 0, value, count, is_float)
    except ModbusError as e:
        raise RegisterError(str(e))
    return struct.unpack(">%dH" % count, buf)


def encode_float32(value):
    """(high, low) registers of an IEEE-754 single; RegisterError if it would overflow to inf."""
    return _pack(value, 2, True)


def decode_float32(hi, lo):
    return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]


def _decode_uint(regs):
    v = 0
    for r in regs:
        v = (v << 16) | r
    return v


def encode_u64(value):
    """4 registers, most significant first."""
    return _pack(value, 4, False)


def decode_u64(regs):
    if len(regs) != 4:
        raise RegisterError("a u64 is 4 registers, got %d" % len(regs))
    return _decode_uint(regs)


def encode_value(reg, value):
    """Registers of `value` as stored in Register `reg`."""
    return _pack(value, reg.count, reg.type == "f32")


def decode_value(reg, regs):
    if reg.type == "f32":
        return decode_float32(regs[0], regs[1])
    return _decode_uint(regs)


def encode_block(function, address, count, values):
    """Registers answering a read that check_read accepted (register_map.read_into, as a list
    of ints); `values` maps names to values. Missing names and unlisted addresses read as 0."""
    if check_read(function, address, count):
        raise RegisterError(
            "function %d read of %d registers at 0x%04X: not servable" % (function, count, address)
        )
    buf = bytearray(2 * count)
    try:
        _map.read_into(buf, function, address, count, values)
    except ModbusError as e:
        raise RegisterError(str(e))
    return list(struct.unpack(">%dH" % count, buf))


# ---------------------------------------------------------------- master side


def decode_block(start, registers, function=READ_INPUT):
    """{name: value} for every listed register that the read [start, start + len) covers whole."""
    out = {}
    end = start + len(registers)
    for reg in REGISTERS:
        if reg.function == function and start <= reg.address and reg.address + reg.count <= end:
            i = reg.address - start
            out[reg.name] = decode_value(reg, registers[i : i + reg.count])
    return out


def read_plan(wanted_names, max_regs=MAX_READ, max_gap=16):
    """Fewest reads [(function, address, count), ...] that cover every wanted register.

    Neighbouring registers are merged into one read when the result stays within max_regs
    (pass 80 for a real Eastron meter) and inside one block, and the unwanted registers read
    between them are at most max_gap: reading a few spare registers (2 bytes each) is cheaper
    than another transaction (13 bytes plus 2 x t3.5 plus the slave's turnaround).
    Reads start and end on register boundaries, so floats are never split.
    """
    regs = []
    for name in wanted_names:
        reg = entry(name)
        if reg.count > max_regs:
            raise RegisterError(
                "%s spans %d registers, more than max_regs=%d" % (name, reg.count, max_regs)
            )
        if reg not in regs:
            regs.append(reg)
    regs.sort(key=lambda r: (r.function, r.address))
    plan = []
    cur = None  # [function, address, end, block start]
    for reg in regs:
        blk = _block(reg.function, reg.address, reg.count)
        end = reg.address + reg.count
        if (
            cur is not None
            and cur[0] == reg.function
            and cur[3] == blk
            and reg.address - cur[2] <= max_gap
            and end - cur[1] <= max_regs
        ):
            if end > cur[2]:
                cur[2] = end
            continue
        if cur is not None:
            plan.append((cur[0], cur[1], cur[2] - cur[1]))
        cur = [reg.function, reg.address, end, blk]
    if cur is not None:
        plan.append((cur[0], cur[1], cur[2] - cur[1]))
    return plan


# ---------------------------------------------------------------- documentation


def _allowed_text(allowed):
    if allowed is None:
        return ""
    if isinstance(allowed, range):
        return "%d..%d" % (allowed[0], allowed[-1])
    return ", ".join("0x%04X" % v if v >= 0x1000 else str(v) for v in allowed)


def markdown_table():
    """The register map as a Markdown table (docs/wire-format.md embeds it verbatim)."""
    lines = [
        "| FC | Address | Regs | Type | Name | Unit | OBIS | SenML name (unit) | Access | Values "
        "| Description |",
        "|----|---------|------|------|------|------|------|-------------------|--------|--------"
        "|-------------|",
    ]
    for r in REGISTERS:
        senml = "%s (%s)" % (r.senml_name, r.senml_unit) if r.senml_name else ""
        lines.append(
            "| %02d | 0x%04X | %d | %s | `%s` | %s | %s | %s | %s | %s | %s |"
            % (
                r.function,
                r.address,
                r.count,
                r.type,
                r.name,
                r.unit,
                r.obis or "",
                senml,
                "RW" if r.writable else "R",
                _allowed_text(r.allowed),
                r.description,
            )
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

"""The streetgrid AMI meter's Modbus register map: the one definition that the meter firmware
(slave), the gateway poller (master) and the docs all read.

Input registers (function 04):
- 0x0000-0x0157: SDM630-compatible block of IEEE-754 float32 values, most significant register
  first, so tools written for an Eastron SDM630 read our meter unchanged. Every even address
  in the block is a float; the ones this map does not list read as 0.0, as on a real SDM630.
  A read must start on an even address and have an even count (Eastron's rule): a read that
  would split a float is refused with exception 02.
- 0x1000-0x1007: exact energy as unsigned 64-bit Wh, MSW first. Float kWh cannot count single
  Wh past ~16.7 MWh; these counters never lose or invent a watt-hour. Not mirrored as holding
  registers: measured data lives in input registers only.
- 0x2000-0x2006: identity (read-only, so input registers).
Holding registers (functions 03, 06, 16):
- 0x3000-0x3004: configuration, one u16 each, validated on write (bad value: exception 03).
  Kept away from Eastron's float holding registers at 0x0000.. so that an SDM630 tool writing
  its own settings gets exception 02 instead of changing ours by accident.
Any read or write outside these blocks, or one that splits a multi-register value, gets
exception 02.

Entries are `Register` tuples; INPUT_REGISTERS and HOLDING_REGISTERS list them in address order.
"""

import struct

from collections import namedtuple

from protocol.modbus.line import BAUD_RATES, DEFAULTS, PARITY_CODES  # noqa: F401 - part of the map

from protocol.modbus.pdu import (
    ILLEGAL_ADDRESS,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    MAX_READ,
    MAX_WRITE,
    READ_HOLDING,
    READ_INPUT,
    ModbusError,
)

MAP_VERSION = 1
MODEL_AMI_METER = 1

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


def _f32(address, name, unit, obis, senml_name, description):
    senml_unit = (unit or "/") if senml_name else None  # "/" = ratio: the power factor
    return Register(
        READ_INPUT, address, 2, "f32", name, unit, obis, senml_name, senml_unit,
        False, description, None,
    )


def _uint(address, count, name, unit, obis, senml_name, description):
    typ = {1: "u16", 2: "u32", 4: "u64"}[count]
    senml_unit = unit if senml_name else None
    return Register(
        READ_INPUT, address, count, typ, name, unit, obis, senml_name, senml_unit,
        False, description, None,
    )


def _cfg(address, name, description, allowed):
    return Register(
        READ_HOLDING, address, 1, "u16", name, "", None, None, None, True, description, allowed
    )


_PF = "+ capacitive, - inductive"
_EXP = "negative when exporting"

# fmt: off
INPUT_REGISTERS = (
    _f32(0x0000, "voltage_l1", "V", "1-0:32.7.0", "voltage/l1", "L1 to neutral voltage"),
    _f32(0x0002, "voltage_l2", "V", "1-0:52.7.0", "voltage/l2", "L2 to neutral voltage"),
    _f32(0x0004, "voltage_l3", "V", "1-0:72.7.0", "voltage/l3", "L3 to neutral voltage"),
    _f32(0x0006, "current_l1", "A", "1-0:31.7.0", "current/l1", "L1 current"),
    _f32(0x0008, "current_l2", "A", "1-0:51.7.0", "current/l2", "L2 current"),
    _f32(0x000A, "current_l3", "A", "1-0:71.7.0", "current/l3", "L3 current"),
    _f32(0x000C, "power_l1", "W", "1-0:36.7.0", "power/l1", "L1 active power, " + _EXP),
    _f32(0x000E, "power_l2", "W", "1-0:56.7.0", "power/l2", "L2 active power, " + _EXP),
    _f32(0x0010, "power_l3", "W", "1-0:76.7.0", "power/l3", "L3 active power, " + _EXP),
    _f32(0x0012, "apparent_power_l1", "VA", None, "apparent_power/l1", "L1 apparent power"),
    _f32(0x0014, "apparent_power_l2", "VA", None, "apparent_power/l2", "L2 apparent power"),
    _f32(0x0016, "apparent_power_l3", "VA", None, "apparent_power/l3", "L3 apparent power"),
    _f32(0x0018, "reactive_power_l1", "var", None, "reactive_power/l1", "L1 reactive power"),
    _f32(0x001A, "reactive_power_l2", "var", None, "reactive_power/l2", "L2 reactive power"),
    _f32(0x001C, "reactive_power_l3", "var", None, "reactive_power/l3", "L3 reactive power"),
    _f32(0x001E, "power_factor_l1", "", "1-0:33.7.0", "power_factor/l1", "L1 power factor, " + _PF),
    _f32(0x0020, "power_factor_l2", "", "1-0:53.7.0", "power_factor/l2", "L2 power factor, " + _PF),
    _f32(0x0022, "power_factor_l3", "", "1-0:73.7.0", "power_factor/l3", "L3 power factor, " + _PF),
    _f32(0x0024, "phase_angle_l1", "deg", None, "phase_angle/l1", "L1 phase angle"),
    _f32(0x0026, "phase_angle_l2", "deg", None, "phase_angle/l2", "L2 phase angle"),
    _f32(0x0028, "phase_angle_l3", "deg", None, "phase_angle/l3", "L3 phase angle"),
    _f32(0x002A, "voltage_avg", "V", None, "voltage/avg", "Average line to neutral voltage"),
    _f32(0x002E, "current_avg", "A", None, "current/avg", "Average line current"),
    _f32(0x0030, "current_sum", "A", "1-0:90.7.0", "current/sum", "Sum of line currents"),
    _f32(0x0034, "power", "W", "1-0:16.7.0", "power", "Total active power, " + _EXP),
    _f32(0x0038, "apparent_power", "VA", None, "apparent_power", "Total apparent power"),
    _f32(0x003C, "reactive_power", "var", None, "reactive_power", "Total reactive power"),
    _f32(0x003E, "power_factor", "", "1-0:13.7.0", "power_factor", "Total power factor, " + _PF),
    _f32(0x0042, "phase_angle", "deg", None, "phase_angle", "Total phase angle"),
    _f32(0x0046, "frequency", "Hz", "1-0:14.7.0", "frequency", "Supply frequency"),
    _f32(0x0048, "energy_import_kwh", "kWh", "1-0:1.8.0", "energy/import", "Import energy (float)"),
    _f32(0x004A, "energy_export_kwh", "kWh", "1-0:2.8.0", "energy/export", "Export energy (float)"),
    _f32(0x004C, "reactive_energy_import_kvarh", "kvarh", "1-0:3.8.0", "reactive_energy/import",
         "Import reactive energy"),
    _f32(0x004E, "reactive_energy_export_kvarh", "kvarh", "1-0:4.8.0", "reactive_energy/export",
         "Export reactive energy"),
    _f32(0x00C8, "voltage_l1_l2", "V", None, "voltage/l1_l2", "L1 to L2 voltage"),
    _f32(0x00CA, "voltage_l2_l3", "V", None, "voltage/l2_l3", "L2 to L3 voltage"),
    _f32(0x00CC, "voltage_l3_l1", "V", None, "voltage/l3_l1", "L3 to L1 voltage"),
    _f32(0x00CE, "voltage_ll_avg", "V", None, "voltage/ll_avg", "Average line to line voltage"),
    _f32(0x00E0, "current_n", "A", "1-0:91.7.0", "current/n", "Neutral current"),
    _f32(0x0156, "energy_total_kwh", "kWh", "1-0:15.8.0", "energy/total", "Import + export energy"),
    _uint(0x1000, 4, "energy_import_wh", "Wh", "1-0:1.8.0", "energy/import", "Import energy"),
    _uint(0x1004, 4, "energy_export_wh", "Wh", "1-0:2.8.0", "energy/export", "Export energy"),
    _uint(0x2000, 1, "map_version", "", None, None, "Register map version (%d)" % MAP_VERSION),
    _uint(0x2001, 1, "model", "", None, None, "%d = streetgrid AMI meter" % MODEL_AMI_METER),
    _uint(0x2002, 2, "serial", "", None, None, "Serial number"),
    _uint(0x2004, 1, "firmware_major", "", None, None, "Firmware version, major"),
    _uint(0x2005, 1, "firmware_minor", "", None, None, "Firmware version, minor"),
    _uint(0x2006, 1, "firmware_patch", "", None, None, "Firmware version, patch"),
)
# fmt: on

# Configuration. New address / baud / parity values take effect after the response to the
# write has left the line (the reply still uses the old settings) and persist across resets.

RELAY_ARM_MAGIC = 0xA55A
RELAY_ARM_WINDOW_S = 10
RELAY_OPEN = 0  # load disconnected
RELAY_CLOSED = 1  # load connected

_ARM_TEXT = "Write 0x%04X to arm the relay for %d s; reads 1 while armed"
_BAUD_CODES = tuple(b // 100 for b in BAUD_RATES)
_ARM_VALUES = (RELAY_ARM_MAGIC,)

# fmt: off
HOLDING_REGISTERS = (
    _cfg(0x3000, "modbus_address", "Slave address (default 1)", range(1, 248)),
    _cfg(0x3001, "baud_rate", "Baud rate / 100 (default 96 = 9600)", _BAUD_CODES),
    _cfg(0x3002, "parity", "0 = 8N1 (default), 1 = 8E1, 2 = 8O1, 3 = 8N2", (0, 1, 2, 3)),
    _cfg(0x3003, "relay_arm", _ARM_TEXT % (RELAY_ARM_MAGIC, RELAY_ARM_WINDOW_S), _ARM_VALUES),
    _cfg(0x3004, "relay", "0 = open, 1 = closed; needs an earlier arm, else exception 03", (0, 1)),
)
# fmt: on

RELAY_ARM_ADDRESS = 0x3003
RELAY_ADDRESS = 0x3004

FLOAT_BLOCK = (0x0000, 0x0158)
# (function, first address, register count): reads and writes must stay inside one block
BLOCKS = (
    (READ_INPUT, 0x0000, 0x0158),
    (READ_INPUT, 0x1000, 8),
    (READ_INPUT, 0x2000, 7),
    (READ_HOLDING, 0x3000, 5),
)

REGISTERS = INPUT_REGISTERS + HOLDING_REGISTERS
BY_NAME = {}
for _r in REGISTERS:
    BY_NAME[_r.name] = _r
_STARTS = {}  # function -> {address: Register}
for _r in REGISTERS:
    _STARTS.setdefault(_r.function, {})[_r.address] = _r
_ENDS = {}  # function -> set of addresses one past an entry
for _r in REGISTERS:
    _ENDS.setdefault(_r.function, set()).add(_r.address + _r.count)
del _r


def entry(name):
    """The Register called `name` (RegisterError if there is none)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise RegisterError("no register named %r" % (name,))


# ---------------------------------------------------------------- value encodings

_F32_OVERFLOW = 3.4028235677973366e38  # 2**128 - 2**103: rounds to inf as a float32
_INF = float("inf")


def encode_float32(value):
    """(high, low) registers of an IEEE-754 single; RegisterError if it would overflow to inf."""
    if (value >= _F32_OVERFLOW or value <= -_F32_OVERFLOW) and value != _INF and value != -_INF:
        raise RegisterError("%r does not fit a float32" % (value,))
    return struct.unpack(">HH", struct.pack(">f", value))


def decode_float32(hi, lo):
    return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]


def _encode_uint(value, count):
    if not 0 <= value < (1 << (16 * count)):
        raise RegisterError("%r out of range for %d unsigned bits" % (value, 16 * count))
    regs = [0] * count
    for i in range(count - 1, -1, -1):
        regs[i] = value & 0xFFFF
        value >>= 16
    return tuple(regs)


def _decode_uint(regs):
    v = 0
    for r in regs:
        v = (v << 16) | r
    return v


def encode_u64(value):
    """4 registers, most significant first."""
    return _encode_uint(value, 4)


def decode_u64(regs):
    if len(regs) != 4:
        raise RegisterError("a u64 is 4 registers, got %d" % len(regs))
    return _decode_uint(regs)


def encode_value(reg, value):
    """Registers of `value` as stored in Register `reg`."""
    if reg.type == "f32":
        return encode_float32(value)
    return _encode_uint(value, reg.count)


def decode_value(reg, regs):
    if reg.type == "f32":
        return decode_float32(regs[0], regs[1])
    return _decode_uint(regs)


# ---------------------------------------------------------------- slave side


def _block(function, address, count):
    for f, start, n in BLOCKS:
        if f == function and start <= address and address + count <= start + n:
            return start
    return None


def check_read(function, address, count):
    """Exception code a slave answers this read with, or 0 when it may be served."""
    if function != READ_INPUT and function != READ_HOLDING:
        return ILLEGAL_FUNCTION
    if not 1 <= count <= MAX_READ:
        return ILLEGAL_VALUE
    start = _block(function, address, count)
    if start is None:
        return ILLEGAL_ADDRESS
    if function == READ_INPUT and start == FLOAT_BLOCK[0]:
        return ILLEGAL_ADDRESS if (address | count) & 1 else 0
    if address not in _STARTS[function] or address + count not in _ENDS[function]:
        return ILLEGAL_ADDRESS  # would split a u32 / u64
    return 0


def check_write(address, values):
    """Exception code a slave answers a write of `values` at `address` with, or 0.

    Checks the address range and each value against its register's allowed values, and refuses
    a write that arms and switches the relay in one request: the arm must come first, in a
    separate request (RelayArm then decides whether the relay write is in time).
    """
    n = len(values)
    if not 1 <= n <= MAX_WRITE:
        return ILLEGAL_VALUE
    if _block(READ_HOLDING, address, n) is None:
        return ILLEGAL_ADDRESS
    regs = _STARTS[READ_HOLDING]
    for i in range(n):
        reg = regs.get(address + i)
        if reg is None or not reg.writable:
            return ILLEGAL_ADDRESS
        if reg.allowed is not None and values[i] not in reg.allowed:
            return ILLEGAL_VALUE
    if address <= RELAY_ARM_ADDRESS and RELAY_ADDRESS < address + n:
        return ILLEGAL_VALUE
    return 0


def encode_block(function, address, count, values):
    """Registers answering a read that check_read accepted; `values` maps names to values.

    Names missing from `values`, and unlisted addresses of the float block, read as 0.
    """
    if check_read(function, address, count):
        raise RegisterError(
            "function %d read of %d registers at 0x%04X: not servable" % (function, count, address)
        )
    out = [0] * count
    end = address + count
    for reg in REGISTERS:
        if reg.function == function and address <= reg.address and reg.address + reg.count <= end:
            v = values.get(reg.name)
            if v is not None:
                i = reg.address - address
                for w in encode_value(reg, v):
                    out[i] = w
                    i += 1
    return out


class RelayArm:
    """The relay's two-step guard: a write of RELAY_ARM_MAGIC arms it, and only a relay write
    within RELAY_ARM_WINDOW_S after that is obeyed. Arming is used up by one relay write.

    Times are microseconds from the caller's clock (ticks_period: wrap of a tick counter).
    """

    def __init__(self, window_s=RELAY_ARM_WINDOW_S, ticks_period=None):
        self._window = window_s * 1000000
        self._period = ticks_period
        self._at = None

    def arm(self, now_us):
        self._at = now_us

    def armed(self, now_us):
        if self._at is None:
            return False
        d = now_us - self._at
        p = self._period
        if p:
            d = (d + p // 2) % p - p // 2
        return 0 <= d < self._window

    def take(self, now_us):
        """True if a relay write may proceed now; disarms either way."""
        ok = self.armed(now_us)
        self._at = None
        return ok


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

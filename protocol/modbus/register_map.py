"""The AMI meter's register map as its slave serves it: every register's name, address and size,
the values a write may carry, and the checks and encodings of a slave. The one definition of
the layout; protocol.modbus.registers adds what only people and the gateway read (units, OBIS,
SenML names, descriptions: keyed by these names) and the master side.

Why flat tuples rather than a record per register: a meter keeps this in RAM, and 53 records
with their descriptive strings cost 16 KB there; these tables cost under 2 KB.

Input registers (function 04): the SDM630-compatible float32 block 0x0000-0x0157 (every even
address a float, most significant register first; reads must not split one, and the floats
this map does not list read as 0.0), the exact energy as u64 Wh at 0x1000 and the identity at
0x2000. Holding registers (functions 03, 06, 16): the configuration at 0x3000, one u16 each,
validated on write. Anything else, or a read that splits a value, gets exception 02.
"""

import struct

from protocol.modbus.line import BAUD_RATES
from protocol.modbus.pdu import (
    ILLEGAL_ADDRESS, ILLEGAL_FUNCTION, ILLEGAL_VALUE, MAX_READ, MAX_WRITE, READ_HOLDING, READ_INPUT,
    ModbusError,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MAP_VERSION = 1
MODEL_AMI_METER = 1

RELAY_ARM_MAGIC = 0xA55A
RELAY_ARM_WINDOW_S = 10
RELAY_OPEN = 0  # load disconnected
RELAY_CLOSED = 1  # load connected
RELAY_ARM_ADDRESS = 0x3003
RELAY_ADDRESS = 0x3004

_FLOAT_END = const(0x0158)  # the float block is 0x0000..0x0157
_HOLDING = const(0x3000)

# (function, first address, register count): reads and writes must stay inside one block
BLOCKS = (
    (READ_INPUT, 0x0000, 0x0158),
    (READ_INPUT, 0x1000, 8),
    (READ_INPUT, 0x2000, 7),
    (READ_HOLDING, 0x3000, 5),
)

# Input registers in address order: name, address, register count. Below 0x1000 a float32
# (count 2); above, an unsigned integer of 1, 2 or 4 registers. One bytes constant rather than a
# tuple: a meter keeps its text in flash (53 names in a tuple were 1.5 KB of its heap) and an
# index of bytes (_INDEX); input_registers() gives the table as tuples.
_INPUT = const(b"""
voltage_l1 0x0000 2   voltage_l2 0x0002 2   voltage_l3 0x0004 2   current_l1 0x0006 2
current_l2 0x0008 2   current_l3 0x000A 2   power_l1 0x000C 2   power_l2 0x000E 2
power_l3 0x0010 2   apparent_power_l1 0x0012 2   apparent_power_l2 0x0014 2
apparent_power_l3 0x0016 2   reactive_power_l1 0x0018 2   reactive_power_l2 0x001A 2
reactive_power_l3 0x001C 2   power_factor_l1 0x001E 2   power_factor_l2 0x0020 2
power_factor_l3 0x0022 2   phase_angle_l1 0x0024 2   phase_angle_l2 0x0026 2
phase_angle_l3 0x0028 2   voltage_avg 0x002A 2   current_avg 0x002E 2   current_sum 0x0030 2
power 0x0034 2   apparent_power 0x0038 2   reactive_power 0x003C 2   power_factor 0x003E 2
phase_angle 0x0042 2   frequency 0x0046 2   energy_import_kwh 0x0048 2
energy_export_kwh 0x004A 2   reactive_energy_import_kvarh 0x004C 2
reactive_energy_export_kvarh 0x004E 2   voltage_l1_l2 0x00C8 2   voltage_l2_l3 0x00CA 2
voltage_l3_l1 0x00CC 2   voltage_ll_avg 0x00CE 2   current_n 0x00E0 2
energy_total_kwh 0x0156 2   energy_import_wh 0x1000 4   energy_export_wh 0x1004 4
map_version 0x2000 1   model 0x2001 1   serial 0x2002 2   firmware_major 0x2004 1
firmware_minor 0x2005 1   firmware_patch 0x2006 1
""")


def _word(i):
    """(start, end) of the first word of _INPUT at or after offset i (start == end: none left).
    Indexing bytes gives ints: nothing is allocated per character or word."""
    t = _INPUT
    n = len(t)
    while i < n and t[i] <= 0x20:
        i += 1
    j = i
    while j < n and t[j] > 0x20:
        j += 1
    return i, j


def _number(i, j):
    """The decimal or 0x-hexadecimal number _INPUT[i:j]."""
    t = _INPUT
    base = 10
    if j - i > 2 and t[i + 1] == 0x78:  # "0x"
        base, i = 16, i + 2
    v = 0
    for k in range(i, j):
        c = t[k] | 0x20  # lower case
        v = v * base + (c - 0x30 if c <= 0x39 else c - 0x57)
    return v


def _name(at):
    """The register name at offset `at` of _INPUT."""
    return _INPUT[at:_INPUT.find(b" ", at)].decode()


def input_registers():
    """(name, address, count) of every input register, in address order: the table for the
    gateway and the docs (protocol.modbus.registers)."""
    ix = _INDEX
    return [(_name(ix[i + 3] << 8 | ix[i + 4]), ix[i] << 8 | ix[i + 1], ix[i + 2])
            for i in range(0, len(ix), 5)]


def _index():
    """Per input register 5 bytes: address (2), count, and its name's offset in _INPUT (2).
    One pass over _INPUT that keeps no list of its words: a meter builds this at import, and a
    transient list of 160 words (5 KB) was once kept for good by a stray pointer (MicroPython's
    garbage collector is conservative)."""
    out = bytearray()
    i = 0
    while True:
        at, i = _word(i)
        if at == i:
            return bytes(out)
        start, i = _word(i)
        a = _number(start, i)
        start, i = _word(i)
        out.append(a >> 8)
        out.append(a & 0xFF)
        out.append(_number(start, i))
        out.append(at >> 8)
        out.append(at & 0xFF)


_INDEX = _index()


# Holding registers, one u16 each from 0x3000 on. A new address, baud or parity takes effect
# after the response to the write has left the line, and persists across resets.
HOLDING = ("modbus_address", "baud_rate", "parity", "relay_arm", "relay")
ALLOWED = (  # per holding register: the values a write may carry
    range(1, 248),
    tuple(b // 100 for b in BAUD_RATES),  # baud / 100
    (0, 1, 2, 3),  # protocol.modbus.line.PARITY_CODES
    (RELAY_ARM_MAGIC,),
    (RELAY_OPEN, RELAY_CLOSED),
)


def _block(function, address, count):
    """First address of the block that holds the whole span, or None."""
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
    if function == READ_HOLDING:
        return 0  # u16 each: nothing to split
    if start == 0:
        return ILLEGAL_ADDRESS if (address | count) & 1 else 0
    end = address + count
    starts = ends = False  # the read starts / ends on a register boundary (no u32 / u64 split)
    ix = _INDEX
    for i in range(0, len(ix), 5):
        a = ix[i] << 8 | ix[i + 1]
        starts = starts or a == address
        ends = ends or a + ix[i + 2] == end
    return 0 if starts and ends else ILLEGAL_ADDRESS


def check_write(address, values):
    """Exception code a slave answers a write of `values` at `address` with, or 0.

    Checks the address range and each value against ALLOWED, and refuses a write that arms and
    switches the relay in one request: the arm must come first, in a separate request (RelayArm
    then decides whether the relay write is in time).
    """
    n = len(values)
    if not 1 <= n <= MAX_WRITE:
        return ILLEGAL_VALUE
    if _block(READ_HOLDING, address, n) is None:
        return ILLEGAL_ADDRESS
    for i in range(n):
        if values[i] not in ALLOWED[address - _HOLDING + i]:
            return ILLEGAL_VALUE
    if address <= RELAY_ARM_ADDRESS and RELAY_ADDRESS < address + n:
        return ILLEGAL_VALUE
    return 0


def pack_value(buf, offset, value, count, is_float):
    """Write `value` as the map stores it into buf[offset:offset + 2 * count], big endian: an
    IEEE-754 float32 or an unsigned integer of `count` registers. ModbusError (exception 03)
    when it does not fit."""
    if is_float:
        # 3.4028235677973366e38 = 2**128 - 2**103: from there on, a float32 rounds to inf
        if (value >= 3.4028235677973366e38 or value <= -3.4028235677973366e38) \
                and value - value == 0:
            raise ModbusError("%r does not fit a float32" % (value,))  # finite: would be inf
        struct.pack_into(">f", buf, offset, value)
        return
    if not 0 <= value < 1 << (16 * count):
        raise ModbusError("%r out of range for %d unsigned bits" % (value, 16 * count))
    for j in range(offset + 2 * count - 1, offset - 1, -1):
        buf[j] = value & 0xFF
        value >>= 8


def read_into(buf, function, address, count, values):
    """Write the registers answering a read that check_read accepted into buf[0:2 * count]
    (big endian, the data of the response PDU) from `values`, names to values. Names missing
    from `values`, and the float block's unlisted addresses, read as 0. Allocates only the
    names of the registers read (slices of _INPUT, garbage once the reply is built)."""
    for i in range(2 * count):
        buf[i] = 0
    end = address + count
    if function == READ_HOLDING:
        for a in range(address, end):
            v = values.get(HOLDING[a - _HOLDING])
            if v is not None:
                pack_value(buf, 2 * (a - address), v, 1, False)
        return
    ix = _INDEX
    for i in range(0, len(ix), 5):
        a = ix[i] << 8 | ix[i + 1]
        n = ix[i + 2]
        if a + n > end:
            break
        if a >= address:
            at = ix[i + 3] << 8 | ix[i + 4]  # the name's offset in _INPUT
            v = values.get(_name(at))
            if v is not None:
                pack_value(buf, 2 * (a - address), v, n, a < _FLOAT_END)


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

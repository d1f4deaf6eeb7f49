"""Microchip ATM90E32AS poly-phase metering IC over SPI, integer-only.

ATM90E32(spi, cs, cfg) takes a machine.SPI (mode 3, <= 200 kHz as the vendor libraries run it;
the chip samples MOSI on the rising edge) and a machine.Pin for chip select. One register access
is one frame: CS low, 16-bit address (bit 15 = 1 read, 0 write; register in bits 9..0), 16-bit
data, MSB first, CS high. Buffers are pre-allocated; a read allocates nothing.

cfg (keys, all optional): `phases` 1 | 3 (single-phase reads phase A and its own energy
registers; three-phase the totals), `meter_constant` MC in CF pulses per kWh (3200; written as
PLconst = 450e9 / MC), `mmode0` (0x0087: 50 Hz, 3P4W), `mmode1` (PGA gains, 0), `ugain`,
`igain` (3 values each, default 0x8000 = the chip's nominal), `uoffset`, `ioffset` (3 each, 0),
`pqgain` (3, signed power gain g: 1 + g / 2**15, 0), `max_power_w` (the meter's rating: 69000 =
3 x 100 A x 230 V; 23000 single-phase). These are the board's calibration
constants, measured against a reference meter at commissioning.

Scaling (datasheet register tables): Urms 0.01 V, Irms 0.001 A, Pmean 1 W plus PmeanLSB bits
15..8 in 1/256 W, PFmean 0.001, Freq 0.01 Hz, energy 1 LSB = 0.01 CF = 10 / MC Wh.
read() fills `mv`, `ma`, `mw` (signed, < 0 = export), `pf` (x1000) per phase and `total_mw`,
`centi_hz`.

Energy: the energy registers are 16 bits and READ-CLEAR (each read returns what accumulated
since the previous read). read_energy(elapsed_ms) returns (import_mwh, export_mwh) since the last
call, in integer mWh with the sub-mWh remainder carried (no rounding drift). Reset and wrap:
  - a chip that lost power or reset has MeterEn = 0 and its calibration back at defaults:
    chip_was_reset() reads them back against what configure() wrote; then the registers hold
    what the chip counted since its reset (taken as it is: what came before the reset was lost
    with the chip, bounded by one read interval) and the chip is configured again;
  - a register that passed 2**16 between two reads has wrapped: with MC 3200 that is 204.8 Wh,
    e.g. 3 s at 3 x 100 A x 230 V. The driver must be read well within that (the meter reads
    every second). Only when max_power_w x elapsed_ms could have filled the register (a read
    came late) is a wrap considered: if the mean of the power at the previous and this read,
    times elapsed_ms, says more than half a register went by, the whole wraps it implies are
    added back (never for a reset chip). Reads on time never trigger it, so a load step can
    not invent a wrap.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_METEREN = const(0x00)
_SOFTRESET = const(0x70)
_CFGREGACCEN = const(0x7F)
_APENERGYT = const(0x80)
_ANENERGYT = const(0x84)
_PMEAN = const(0xB0)
_PMEANLSB = const(0xC0)
_PFMEAN = const(0xBC)
_URMS = const(0xD9)
_IRMS = const(0xDD)
_FREQ = const(0xF8)
# what configure() writes, in order: PLconstH, PLconstL, MMode0, MMode1, then per phase A, B, C
# UGain, IGain, UOffset, IOffset and PQGain (bytes, and the values in a bytearray beside them:
# 19 (register, value) tuples held 0.4 KB of a meter's heap)
_SETUP_REGS = const(b"\x31\x32\x33\x34\x61\x65\x69\x62\x66\x6a\x63\x67\x6b\x64\x68\x6c\x47\x49\x4b")
_CALIBRATION = const("ugain igain uoffset ioffset pqgain")  # their cfg keys, from the 5th

_WRAP = const(0x10000)


class ATM90E32Error(OSError):
    pass


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _three(cfg, key, default):
    v = cfg.get(key)
    if v is None:
        return (default, default, default)
    if len(v) != 3:
        raise ValueError("%s: 3 values expected (phases A, B, C)" % key)
    return tuple(int(x) & 0xFFFF for x in v)


class ATM90E32:
    def __init__(self, spi, cs, cfg=None):
        cfg = cfg or {}
        self.spi = spi
        self.cs = cs
        cs.init(cs.OUT, value=1)
        self.phases = int(cfg.get("phases", 3))
        if self.phases not in (1, 3):
            raise ValueError("phases must be 1 or 3, got %r" % (self.phases,))
        self.mc = int(cfg.get("meter_constant", 3200))
        if not 1 <= self.mc <= 450000000:
            raise ValueError("meter_constant out of range: %r" % (self.mc,))
        plconst = 450000000000 // self.mc
        values = [plconst >> 16, plconst & 0xFFFF, int(cfg.get("mmode0", 0x0087)),
                  int(cfg.get("mmode1", 0))]
        for key in _CALIBRATION.split():
            # default: unity gain (0x8000) for UGain and IGain, 0 for the offsets and PQGain
            values.extend(_three(cfg, key, 0x8000 if key in "ugain igain" else 0))
        self._setup = bytearray(2 * len(_SETUP_REGS))  # big-endian u16 per register
        for i in range(len(_SETUP_REGS)):
            self._setup[2 * i] = (values[i] >> 8) & 0xFF
            self._setup[2 * i + 1] = values[i] & 0xFF
        self._tx = bytearray(4)
        self._rx = bytearray(4)
        self.mv = [0, 0, 0]
        self.ma = [0, 0, 0]
        self.mw = [0, 0, 0]
        self.pf = [0, 0, 0]
        self.total_mw = 0
        self.centi_hz = 0
        self._rem = [0, 0]  # energy remainders, in units * 10000 mod MC
        self.resets = 0
        self.wraps = 0
        self._pending = None
        self._last_mw = None
        self.max_mw = int(cfg.get("max_power_w", 69000 if self.phases == 3 else 23000)) * 1000
        # the shortest time in which the rated power fills a 16-bit energy register, ms
        self._wrap_ms = max(1, _WRAP * 36000000000 // (self.max_mw * self.mc))

    # -- SPI frames
    def read_reg(self, reg):
        tx = self._tx
        tx[0] = 0x80 | (reg >> 8)
        tx[1] = reg & 0xFF
        tx[2] = tx[3] = 0
        self.cs(0)
        try:
            self.spi.write_readinto(tx, self._rx)
        finally:
            self.cs(1)
        return self._rx[2] << 8 | self._rx[3]

    def write_reg(self, reg, value):
        tx = self._tx
        tx[0] = (reg >> 8) & 0x03
        tx[1] = reg & 0xFF
        tx[2] = (value >> 8) & 0xFF
        tx[3] = value & 0xFF
        self.cs(0)
        try:
            self.spi.write(tx)
        finally:
            self.cs(1)

    # -- setup
    def configure(self):
        """Soft-reset, unlock, write the calibration and enable metering; verify by reading back."""
        self.write_reg(_SOFTRESET, 0x789A)
        self.write_reg(_CFGREGACCEN, 0x55AA)
        for i in range(len(_SETUP_REGS)):
            self.write_reg(_SETUP_REGS[i], self._setup[2 * i] << 8 | self._setup[2 * i + 1])
        self.write_reg(_METEREN, 1)
        self.write_reg(_CFGREGACCEN, 0x0000)  # lock
        for e in range(_APENERGYT, _ANENERGYT + 4):
            self.read_reg(e)  # start all read-clear registers from 0
        if self._changed():
            raise ATM90E32Error("ATM90E32: configuration did not take (no chip on the bus?)")

    def _changed(self):
        if self.read_reg(_METEREN) != 1:
            return True
        for i in range(len(_SETUP_REGS)):
            if self.read_reg(_SETUP_REGS[i]) != self._setup[2 * i] << 8 | self._setup[2 * i + 1]:
                return True
        return False

    def chip_was_reset(self):
        """True when the chip lost its configuration since configure() (power loss, brown-out,
        reset); it is then configured again."""
        if not self._changed():
            return False
        self.resets += 1
        # configure() would clear the energy the chip counted since its reset: keep it
        imp, exp = self._energy_regs()
        self.configure()
        self._pending = (imp, exp)
        return True

    # -- measurements
    def read(self):
        """Read every phase's V, I, P, PF and the line frequency; returns total_mw."""
        total = 0
        for i in range(self.phases):
            self.mv[i] = self.read_reg(_URMS + i) * 10
            self.ma[i] = self.read_reg(_IRMS + i)
            fixed = _s16(self.read_reg(_PMEAN + 1 + i)) << 8 | self.read_reg(_PMEANLSB + 1 + i) >> 8
            mw = fixed * 1000
            self.mw[i] = mw // 256 if mw >= 0 else -((-mw) // 256)
            self.pf[i] = _s16(self.read_reg(_PFMEAN + 1 + i))
            total += self.mw[i]
        self.total_mw = total
        self._last_mw = total
        self.centi_hz = self.read_reg(_FREQ)
        return self.total_mw

    def _energy_regs(self):
        off = 1 if self.phases == 1 else 0  # single phase: phase A's own registers
        return self.read_reg(_APENERGYT + off), self.read_reg(_ANENERGYT + off)

    def read_energy(self, elapsed_ms=0):
        """(import_mwh, export_mwh) counted since the previous call."""
        self._pending = None
        reset = self.chip_was_reset()
        if reset:
            imp, exp = self._pending
        else:
            imp, exp = self._energy_regs()
            # a wrap is possible only if the meter's rated maximum could have filled the register
            if elapsed_ms >= self._wrap_ms:
                prev = self._last_mw
                mw = self.read()
                if prev is not None:
                    mw = (mw + prev) // 2  # mean of the powers at both ends of the interval
                # 1 unit = 10 / MC Wh = 3.6e10 / MC mW*ms
                expected = abs(mw) * elapsed_ms * self.mc // 36000000000
                if expected > _WRAP // 2:
                    if mw >= 0:
                        k = (expected - imp + _WRAP // 2) // _WRAP
                        if k > 0:
                            imp += k * _WRAP
                            self.wraps += k
                    else:
                        k = (expected - exp + _WRAP // 2) // _WRAP
                        if k > 0:
                            exp += k * _WRAP
                            self.wraps += k
            elif elapsed_ms > 0:
                self._last_mw = None
        return self._to_mwh(0, imp), self._to_mwh(1, exp)

    def _to_mwh(self, d, units):
        # 1 unit = 10 / MC Wh = 10000 / MC mWh
        n = units * 10000 + self._rem[d]
        self._rem[d] = n % self.mc
        return n // self.mc

"""Microchip (Atmel) ATM90E32AS poly-phase energy metering IC on SPI, register level.

SPI frame (datasheet section 5.1; ESPHome atm90e32, CircuitSetup ATM90E32 library): CS low, a
16-bit address word MSB first whose bit 15 is 1 for a read and 0 for a write (bits 9..0 the
register), then a 16-bit data word (the chip drives it on MISO for a read, the host on MOSI for a
write), CS high. A frame cut short by CS going high is ignored. The model answers in any SPI mode.

Registers modelled (addresses as the datasheet / ESPHome atm90e32_reg.h):
  0x00 MeterEn (reset 0; 1 = metering on)      0x70 SoftReset (0x789A resets the chip)
  0x7F CfgRegAccEn (0x55AA unlocks config/calibration writes, anything else locks)
  0x31/0x32 PLconstH/L (reset 0x0861/0xC468 = 140625000 = 450e9 / MC 3200)
  0x33 MMode0 (reset 0x0087), 0x34 MMode1 (PGA gains)
  0x47/0x49/0x4B PQGainA/B/C (signed, power gain 1 + g/2^15; reset 0)
  0x61..0x6C UgainX, IgainX, UoffsetX, IoffsetX per phase (gain reset 0x8000 here)
  0x80 APenergyT, 0x81..0x83 APenergyA..C  forward active energy   } 16-bit, READ-CLEAR,
  0x84 ANenergyT, 0x85..0x87 ANenergyA..C  reverse active energy   } 1 LSB = 0.01 CF = 10/MC Wh
  0xB0 PmeanT, 0xB1..0xB3 PmeanA..C  active power, signed, 1 W;  0xC0..0xC3 PmeanXLSB bits
       15..8 = 1/256 W (so (Pmean << 8 | LSB >> 8) is the power in 1/256 W)
  0xBC PFmeanT, 0xBD..0xBF PFmeanA..C  power factor, signed, 0.001
  0xD9..0xDB UrmsA..C 0.01 V;  0xDD..0xDF IrmsA..C 0.001 A;  0xF8 Freq 0.01 Hz
The total registers sum the phases algebraically (net power > 0 counts forward, < 0 reverse).
Energy registers wrap at 2**16 if not read in time (at MC 3200: 204.8 Wh).

Board model: the true per-phase `voltage[i]`, `current[i]`, `pf[i]` (signed: < 0 = export) and
`line_hz` are set by the simulator, `advance(seconds)` integrates energy. The analogue front end
of this particular board reads `board_u[i]` / `board_i[i]` (default 1.0) times the truth when the
gain registers hold 0x8000, so calibration gains g give truth * board * g / 0x8000; a calibrated
meter has g = 0x8000 / board. Voltage and current gains scale power and energy too (the chip
derives them from the same samples); PQGain scales power and energy only.
`power_cycle()` is a chip reset (registers back to defaults, energy registers 0).
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_PLCONST_DEFAULT = const(140625000)
_GAIN_UNITY = const(0x8000)

# registers; per-phase ones as phase A's address and the step to the next phase
_METEREN = const(0x00)
_PLCONSTH = const(0x31)
_PLCONSTL = const(0x32)
_MMODE0 = const(0x33)
_MMODE1 = const(0x34)
_PQGAIN = const(0x47)  # step 2
_UGAIN = const(0x61)  # UgainX, IgainX, UoffsetX, IoffsetX: step 4
_IGAIN = const(0x62)
_UOFFSET = const(0x63)
_IOFFSET = const(0x64)
_SOFTRESET = const(0x70)
_CFGREGACCEN = const(0x7F)
_APENERGYT = const(0x80)
_ANENERGYT = const(0x84)
_PMEANT = const(0xB0)
_PFMEANT = const(0xBC)
_PMEANTLSB = const(0xC0)
_URMS = const(0xD9)  # step 1
_IRMS = const(0xDD)  # step 1
_FREQ = const(0xF8)


def _config(reg):
    """Written only while CfgRegAccEn is unlocked: MeterEn, PLconst, MMode, gains, offsets."""
    return (reg == _METEREN or _PLCONSTH <= reg <= _MMODE1 or reg in (0x47, 0x49, 0x4B)
            or _UGAIN <= reg <= 0x6C)


def _s16(v):
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def _clip_u16(v):
    return min(max(int(round(v)), 0), 0xFFFF)


def _clip_s16(v):
    return min(max(int(round(v)), -0x8000), 0x7FFF) & 0xFFFF


class ATM90E32:
    def __init__(self, voltage=(230.0, 230.0, 230.0), current=(0.0, 0.0, 0.0), pf=(1.0, 1.0, 1.0),
                 line_hz=50.0, board_u=(1.0, 1.0, 1.0), board_i=(1.0, 1.0, 1.0)):
        self.voltage, self.current, self.pf = list(voltage), list(current), list(pf)
        self.line_hz = line_hz
        self.board_u, self.board_i = list(board_u), list(board_i)
        self.frames = 0
        self.resets = 0
        self.power_cycle()

    def power_cycle(self):
        """The chip loses power (or is soft-reset): registers to defaults, energy lost."""
        self.regs = {_PLCONSTH: _PLCONST_DEFAULT >> 16, _PLCONSTL: _PLCONST_DEFAULT & 0xFFFF,
                     _MMODE0: 0x0087, _MMODE1: 0, _METEREN: 0, _CFGREGACCEN: 0x6886}
        for i in range(3):
            self.regs[_UGAIN + 4 * i] = self.regs[_IGAIN + 4 * i] = _GAIN_UNITY
            self.regs[_UOFFSET + 4 * i] = self.regs[_IOFFSET + 4 * i] = 0
            self.regs[_PQGAIN + 2 * i] = 0
        self.energy = {}  # register -> accumulated 0.01 CF units (float, read-clear)
        for r in range(_APENERGYT, _ANENERGYT + 4):
            self.energy[r] = 0.0
        self._frame = bytearray(4)  # the frame so far: its first _n bytes
        self._n = 0
        self._selected = False

    # -- the analogue truth, as the chip measures it with its current gains
    def _u_scale(self, i):
        return self.board_u[i] * self.regs[_UGAIN + 4 * i] / _GAIN_UNITY

    def _i_scale(self, i):
        return self.board_i[i] * self.regs[_IGAIN + 4 * i] / _GAIN_UNITY

    def measured_power(self, i):
        """Active power (W) phase i as the chip measures it now."""
        p = self.voltage[i] * self.current[i] * self.pf[i]
        pq = 1 + _s16(self.regs[_PQGAIN + 2 * i]) / 32768.0
        return p * self._u_scale(i) * self._i_scale(i) * pq

    def wh_per_unit(self):
        plconst = self.regs[_PLCONSTH] << 16 | self.regs[_PLCONSTL]
        return 10.0 / (450000000000 / plconst)  # 0.01 CF at MC = 450e9 / PLconst

    def metering(self):
        """True once the firmware switched metering on (MeterEn), until a reset."""
        return bool(self.regs[_METEREN])

    def advance(self, seconds):
        if not self.regs[_METEREN]:
            return
        unit = self.wh_per_unit()
        total = 0.0
        for i in range(3):
            p = self.measured_power(i)
            total += p
            e = abs(p) * seconds / 3600.0 / unit
            self.energy[(_APENERGYT if p >= 0 else _ANENERGYT) + 1 + i] += e
        e = abs(total) * seconds / 3600.0 / unit
        self.energy[_APENERGYT if total >= 0 else _ANENERGYT] += e

    # -- register contents
    def read_reg(self, reg):
        if reg in self.energy:
            units = int(self.energy[reg])
            self.energy[reg] -= units  # read-clear: the fraction stays in the accumulator
            return units & 0xFFFF  # a register not read in time has wrapped
        on = self.regs[_METEREN]
        if _URMS <= reg <= _URMS + 2:
            i = reg - _URMS
            return _clip_u16(self.voltage[i] * self._u_scale(i) * 100) if on else 0
        if _IRMS <= reg <= _IRMS + 2:
            i = reg - _IRMS
            return _clip_u16(self.current[i] * self._i_scale(i) * 1000) if on else 0
        if _PMEANT <= reg <= _PMEANT + 3 or _PMEANTLSB <= reg <= _PMEANTLSB + 3:
            k = reg & 3
            p = (sum(self.measured_power(i) for i in range(3)) if k == 0 else self.measured_power(k - 1)) if on else 0.0
            fixed = int(round(p * 256))  # 1/256 W
            return (fixed >> 8) & 0xFFFF if reg < _PMEANTLSB else (fixed & 0xFF) << 8
        if _PFMEANT <= reg <= _PFMEANT + 3:
            k = reg - _PFMEANT
            pf = (sum(self.pf) / 3 if k == 0 else self.pf[k - 1]) if on else 0.0
            return _clip_s16(pf * 1000)
        if reg == _FREQ:
            return _clip_u16(self.line_hz * 100) if on else 0
        return self.regs.get(reg, 0)

    def write_reg(self, reg, value):
        if reg == _SOFTRESET:
            if value == 0x789A:
                self.resets += 1
                self.power_cycle()
            return
        if reg == _CFGREGACCEN:
            self.regs[_CFGREGACCEN] = value
            return
        if _config(reg) and self.regs[_CFGREGACCEN] == 0x55AA:
            self.regs[reg] = value

    # -- SPI side
    def spi_select(self, selected):
        self._selected = selected
        self._n = 0  # CS edge: a new frame starts (a partial one is dropped)

    def spi_transfer(self, mosi):
        # one buffer per transfer and none per byte: the meter reads ~40 registers a second
        out = bytearray(len(mosi))  # 0 where nothing is driven
        f = self._frame
        for j in range(len(mosi)):
            n = self._n
            if n >= 4:
                continue  # frame complete: further bytes until CS high are ignored
            f[n] = mosi[j]
            self._n = n + 1
            if n < 2 or not self._selected:
                if n < 2:
                    out[j] = 0xFF
                continue
            addr = f[0] << 8 | f[1]
            reg = addr & 0x3FF
            if addr & 0x8000:
                if n == 2:
                    self._value = self.read_reg(reg)
                    self.frames += 1
                out[j] = (self._value >> (8 if n == 2 else 0)) & 0xFF
            elif n == 3:
                self.frames += 1
                self.write_reg(reg, f[2] << 8 | f[3])
        return out

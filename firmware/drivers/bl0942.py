"""Belling BL0942 energy meter driver (UART 4800 baud 8N1, address 0), integer-only.

BL0942(uart) takes any object with write(buf) and
readinto(buf) (or read(n)), e.g. machine.UART(2, 4800, timeout=200) (23 bytes take ~48 ms).
read() sends "read full packet" (0x58 0xAA), reads the 23-byte reply into a pre-allocated
buffer, checks the header 0x55 and checksum ~(0x58 + sum of bytes 0..21) & 0xFF (as ESPHome's
validate_checksum_), and returns (mV, mA, dW, cf_count): volts x1000, amps x1000, watts x10
(signed; negative = reverse power) and the raw 24-bit CF_CNT. A short read or a bad header or
checksum raises BL0942Error.

Calibration constants are register counts per kV / kA / kW (i.e. counts per unit x1000):
  _V_REF = 15873359   ESPHome BL0942_UREF 15873.35944299 counts/V
  _I_REF = 251213465  ESPHome BL0942_IREF 305978 / 1.218 counts/A (Vref 1.218 V, 1 mOhm shunt)
  _P_REF = 623002     ESPHome's derived power reference UREF * IREF * 3537 / 305978 / 73989
  E_REF = 5347269    CF counts per MWh = _P_REF * 3600000 / 419430.4 (ESPHome energy_reference)
Boards must be calibrated against a reference meter; pass the measured constants. Results are
rounded to the nearest unit; the products exceed 31 bits, so they use MicroPython long ints
(MPZ on the ESP32 port), a few short-lived allocations per read.

configure() unlocks USR_WRPROT, sets MODE = 0x87 | 0x08 (ESPHome's default + 800 ms RMS update)
and locks again. chip_was_reset() reads MODE back: a chip that lost power or reset has MODE at
its 0x87 default again, so it returns True (and re-configures). Feed that to EnergyAccumulator.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_V_REF = const(15873359)
_I_REF = const(251213465)
_P_REF = const(623002)
E_REF = 5347269

_READ = const(0x58)
_WRITE = const(0xA8)
_REG_MODE = const(0x19)
_REG_WRPROT = const(0x1D)
_MODE = const(0x87 | 0x08)
_PACKET = const(23)
_WRAP = const(1 << 24)
_HALF = const(1 << 23)


class BL0942Error(ValueError):
    pass


def _u24(b, i):
    return b[i] | b[i + 1] << 8 | b[i + 2] << 16


def _scale(counts, per_kilo):
    # counts * 10^6 / per_kilo, rounded half away from zero (counts per unit x1000 -> milli-unit)
    if counts < 0:
        return -((-counts * 1000000 + per_kilo // 2) // per_kilo)
    return (counts * 1000000 + per_kilo // 2) // per_kilo


class BL0942:
    def __init__(self, uart):
        self.uart = uart
        self._buf = bytearray(_PACKET)
        self._cmd = bytearray(2)
        self._wr = bytearray(6)
        self._reg = bytearray(4)

    def _readinto(self, buf):
        if hasattr(self.uart, "readinto"):
            n = self.uart.readinto(buf)
            return n or 0
        data = self.uart.read(len(buf)) or b""
        buf[:len(data)] = data
        return len(data)

    def _request(self, reg, buf):
        self._cmd[0] = _READ
        self._cmd[1] = reg
        self.uart.write(self._cmd)
        n = self._readinto(buf)
        if n < len(buf):
            raise BL0942Error("BL0942: short read, %d of %d bytes" % (n, len(buf)))
        s = _READ if reg == 0xAA else _READ + reg
        for i in range(len(buf) - 1):
            s += buf[i]
        if (~s) & 0xFF != buf[len(buf) - 1]:
            raise BL0942Error("BL0942: checksum mismatch")

    def read_raw(self):
        b = self._buf
        self._request(0xAA, b)
        if b[0] != 0x55:
            raise BL0942Error("BL0942: bad packet header 0x%02x" % b[0])
        return b

    def read(self):
        b = self.read_raw()
        watt = _u24(b, 10)
        if watt & 0x800000:
            watt -= _WRAP
        mv = _scale(_u24(b, 4), _V_REF)
        ma = _scale(_u24(b, 1), _I_REF)
        dw = _scale(watt, _P_REF * 100)  # 0.1 W = counts * 10^4 / _P_REF
        return mv, ma, dw, _u24(b, 13)

    def _write_reg(self, reg, value):
        w = self._wr
        w[0] = _WRITE
        w[1] = reg
        w[2] = value & 0xFF
        w[3] = (value >> 8) & 0xFF
        w[4] = (value >> 16) & 0xFF
        w[5] = ~(w[0] + w[1] + w[2] + w[3] + w[4]) & 0xFF
        self.uart.write(w)

    def read_reg(self, reg):
        b = self._reg
        self._request(reg, b)
        return _u24(b, 0)

    def configure(self):
        self._write_reg(_REG_WRPROT, 0x55)
        self._write_reg(_REG_MODE, _MODE)
        self._write_reg(_REG_WRPROT, 0)
        if self.read_reg(_REG_MODE) != _MODE:
            raise BL0942Error("BL0942: MODE write did not take")

    def chip_was_reset(self):
        if self.read_reg(_REG_MODE) == _MODE:
            return False
        self.configure()
        return True


class EnergyAccumulator:
    """Turns successive CF_CNT readings into a running total in integer milli-Wh.

    update(cf_cnt, reset=False) -> counts added. Rules, in order:
      - first reading: baseline only (energy before it is unknown);
      - reset=True (the driver saw the chip lose its configuration): the chip restarted
        counting from 0, so the new value is all new energy;
      - forward step: the difference;
      - backward step by more than half the 24-bit range: a wrap, adds new + 2^24 - old;
      - any other backward step: an unflagged chip reset (a wrap cannot look like this when
        polled at least once per 2^23 counts: 65 days at 6 kW with the default constants),
        adds the new value; never a negative jump.
    milli_wh() = total counts * 10^9 / e_ref (e_ref = CF counts per MWh, default E_REF).
    """

    def __init__(self, e_ref=E_REF):
        self.e_ref = e_ref
        self.counts = 0
        self.resets = 0
        self.wraps = 0
        self._last = None

    def update(self, cf_cnt, reset=False):
        last, self._last = self._last, cf_cnt
        if last is None:
            delta = 0
        elif reset:
            self.resets += 1
            delta = cf_cnt
        elif cf_cnt >= last:
            delta = cf_cnt - last
        elif last - cf_cnt > _HALF:
            self.wraps += 1
            delta = cf_cnt + _WRAP - last
        else:
            self.resets += 1
            delta = cf_cnt
        self.counts += delta
        return delta

    def milli_wh(self):
        return (self.counts * 1000000000 + self.e_ref // 2) // self.e_ref

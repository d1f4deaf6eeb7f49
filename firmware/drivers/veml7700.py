"""Vishay VEML7700 ambient light driver, integer-only.

VEML7700(i2c, addr=0x10). configure(gain, it_ms) with gain one of GAIN_2, GAIN_1, GAIN_1_4,
GAIN_1_8 (the gain in eighths) and it_ms one of 25, 50, 100, 200, 400, 800; it powers the
sensor on and waits one integration time. lux_milli() returns the illuminance in millilux:
counts * resolution, where the resolution is 0.0036 lx/count at gain x2 / 800 ms and scales
with 1/gain and 1/IT (Vishay application note), i.e. 460800 / (gain_eighths * it_ms) in units
of 0.1 mlx (always an even integer).

Auto-range (auto=True, the default): the configured setting is the most sensitive one used.
While the reading is saturated (65535 counts) the driver steps down a ladder - first the gain
(x2, x1, x1/4, x1/8), then the integration time (halving down to 25 ms) - re-reading after one
integration time at each step. When a later reading falls under 100 counts it steps back up,
never above the configured setting. Each step costs one integration time. The sensor's
non-linearity above ~1000 lx at low gain is not corrected.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import sleep_ms as _sleep_ms
except ImportError:  # CPython
    from time import sleep as _sleep

    def _sleep_ms(ms):
        _sleep(ms / 1000)

GAIN_1_8 = 1
GAIN_1_4 = 2
GAIN_1 = 8
GAIN_2 = 16

# gains (eighths) and integration times (units of 25 ms), most sensitive first, and their
# ALS_CONF bits at the same index: bytes, which stay in flash
_GAINS = const(b"\x10\x08\x02\x01")
_GAIN_BITS = const(b"\x01\x00\x03\x02")
_ITS_25MS = const(b"\x20\x10\x08\x04\x02\x01")
_IT_BITS = const(b"\x03\x02\x01\x00\x08\x0c")
_REG_CONF = const(0x00)
_REG_ALS = const(0x04)
_REG_WHITE = const(0x05)
_SATURATED = const(65535)
_LOW = const(100)


class VEML7700:
    def __init__(self, i2c, addr=0x10, sleep_ms=None, auto=True):
        self.i2c = i2c
        self.addr = addr
        self.auto = auto
        self._sleep_ms = sleep_ms or _sleep_ms
        self._buf = bytearray(2)
        self._ladder = []
        self._step = 0
        self.configure(GAIN_1_8, 100)

    def configure(self, gain, it_ms):
        if (type(gain) is not int or gain not in _GAINS or type(it_ms) is not int or it_ms % 25
                or it_ms // 25 not in _ITS_25MS):
            raise ValueError("bad gain or integration time")
        # the ladder of settings auto-range may use, most sensitive (the configured one) first
        ladder = [(g, it_ms) for g in _GAINS if g <= gain]
        ladder += [(1, it * 25) for it in _ITS_25MS if it * 25 < it_ms]
        self._ladder = ladder
        self._set(0)

    def _set(self, step):
        self._step = step
        gain, it = self._ladder[step]
        # ALS_SD = 0: powered on
        conf = _GAIN_BITS[_GAINS.index(gain)] << 11 | _IT_BITS[_ITS_25MS.index(it // 25)] << 6
        b = self._buf
        b[0] = conf & 0xFF
        b[1] = conf >> 8
        self.i2c.writeto_mem(self.addr, _REG_CONF, b)
        self._sleep_ms(it + 5)  # first result after one integration (+2.5 ms wake-up)

    def setting(self):
        """The (gain_eighths, it_ms) in use."""
        return self._ladder[self._step]

    def resolution(self):
        """Current resolution in 0.1 mlx per count."""
        gain, it = self._ladder[self._step]
        return 460800 // (gain * it)

    def _read(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._buf)
        return self._buf[0] | self._buf[1] << 8

    def raw(self):
        return self._read(_REG_ALS)

    def white_raw(self):
        return self._read(_REG_WHITE)

    def lux_milli(self):
        raw = self._read(_REG_ALS)
        if self.auto:
            for _ in range(2 * len(self._ladder)):
                if raw >= _SATURATED and self._step + 1 < len(self._ladder):
                    self._set(self._step + 1)
                elif raw < _LOW and self._step > 0:
                    self._set(self._step - 1)
                else:
                    break
                raw = self._read(_REG_ALS)
        # raw * resolution / 10, kept under 2**30 (MicroPython small int): resolution is even
        return raw * (self.resolution() >> 1) // 5

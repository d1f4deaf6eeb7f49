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
    from time import sleep_ms as _sleep_ms
except ImportError:  # CPython
    from time import sleep as _sleep

    def _sleep_ms(ms):
        _sleep(ms / 1000)

GAIN_1_8 = 1
GAIN_1_4 = 2
GAIN_1 = 8
GAIN_2 = 16

_GAIN_BITS = {16: 0b01, 8: 0b00, 2: 0b11, 1: 0b10}
_IT_BITS = {25: 0b1100, 50: 0b1000, 100: 0b0000, 200: 0b0001, 400: 0b0010, 800: 0b0011}
_GAINS = (16, 8, 2, 1)
_ITS = (800, 400, 200, 100, 50, 25)
_REG_CONF = 0x00
_REG_ALS = 0x04
_REG_WHITE = 0x05
_SATURATED = 65535
_LOW = 100


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
        if gain not in _GAIN_BITS or it_ms not in _IT_BITS:
            raise ValueError("bad gain or integration time")
        # the ladder of settings auto-range may use, most sensitive (the configured one) first
        ladder = [(g, it_ms) for g in _GAINS if g <= gain]
        ladder += [(1, it) for it in _ITS if it < it_ms]
        self._ladder = ladder
        self._set(0)

    def _set(self, step):
        self._step = step
        gain, it = self._ladder[step]
        conf = _GAIN_BITS[gain] << 11 | _IT_BITS[it] << 6  # ALS_SD = 0: powered on
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

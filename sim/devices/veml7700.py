"""Vishay VEML7700 ambient light sensor at I2C 0x10.

16-bit registers, little-endian, addressed by an 8-bit command code (writeto_mem/readfrom_mem):
0x00 ALS_CONF (bit 0 ALS_SD shutdown, bit 1 ALS_INT_EN, bits 5:4 ALS_PERS, bits 9:6 ALS_IT,
bits 12:11 ALS_GAIN), 0x01 ALS_WH, 0x02 ALS_WL, 0x03 power saving, 0x04 ALS (read-only),
0x05 WHITE (read-only), 0x06 ALS_INT (read-only), 0x07 ID (0xC481). Unknown codes and writes to
read-only registers are NACKed. The model powers up shut down (ALS_SD = 1), so a driver must
enable it, and reads 0 counts until the first integration after enabling.

Counts = round(lux / resolution), saturating at 65535, with the resolution of Vishay's
"Designing the VEML7700 into an application" table: 0.0036 lx/count at gain x2 and 800 ms,
doubling for each halving of the integration time and scaling inversely with the gain (x2, x1,
x1/4, x1/8), up to 1.8432 lx/count at gain x1/8 and 25 ms (120 klx full scale). The sensor's
non-linearity above ~1000 lx at low gain (corrected by Vishay's polynomial) is not modelled.
WHITE counts are the ALS counts times `white_ratio` (not a calibrated spectral model).

Timing: with a simulator `clock` (milliseconds), results for a new configuration appear one
integration time (plus 2.5 ms wake-up from shutdown) after ALS_CONF is written; before that the
registers hold the previous result. Without a clock they are available at once.
"""

ADDRESS = 0x10

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_READ_ONLY = const(b"\x04\x05\x06\x07")  # bytes: no heap on the VM


def resolution(gain_eighths, it_ms):
    """Lux per count for a gain (in eighths: 1, 2, 8, 16) and integration time (ms)."""
    return 0.0036 * (16.0 / gain_eighths) * (800.0 / it_ms)


class VEML7700:
    def __init__(self, lux=100.0, clock=None):
        self.lux = lux  # true illuminance, set by the simulator
        self.white_ratio = 1.0
        self.clock = clock
        self.regs = {0x00: 0x0001, 0x01: 0, 0x02: 0, 0x03: 0, 0x06: 0, 0x07: 0xC481}
        self._ptr = 0
        self._held = (0, 0)  # ALS, WHITE counts shown until the current configuration is ready
        self._ready_at = None

    # -- configuration as decoded from ALS_CONF
    def gain_eighths(self):
        return b"\x08\x10\x01\x02"[(self.regs[0] >> 11) & 3]  # ALS_GAIN x1, x2, x1/8, x1/4

    def it_ms(self):
        """ALS_IT: 0b0000..0b0011 = 100..800 ms, 0b1000 = 50 ms, 0b1100 = 25 ms, else None."""
        c = (self.regs[0] >> 6) & 0xF
        return 100 << c if c < 4 else 50 if c == 8 else 25 if c == 12 else None

    def shutdown(self):
        return bool(self.regs[0] & 1)

    def resolution(self):
        return resolution(self.gain_eighths(), self.it_ms())

    def _counts(self, lux):
        return min(max(int(round(lux / self.resolution())), 0), 65535)

    def _results(self):
        if self.shutdown() or self.it_ms() is None:
            return self._held
        if self._ready_at is not None and self.clock() < self._ready_at:  # set with a clock only
            return self._held
        self._ready_at = None
        self._held = (self._counts(self.lux), self._counts(self.lux * self.white_ratio))
        return self._held

    def i2c_write(self, data, stop):
        if not data or data[0] > 0x07:
            return False
        self._ptr = data[0]
        if len(data) == 1:
            return True
        if self._ptr in _READ_ONLY or len(data) != 3:
            return False
        value = data[1] | data[2] << 8
        if self._ptr == 0:
            self._results()  # latch what the old configuration measured
            was_off = self.shutdown()
            self.regs[0] = value
            it = self.it_ms()
            if self.clock and it is not None and not self.shutdown():
                self._ready_at = self.clock() + it + (2.5 if was_off else 0)
        else:
            self.regs[self._ptr] = value
        return True

    def i2c_read(self, n):
        if self._ptr == 0x04:
            value = self._results()[0]
        elif self._ptr == 0x05:
            value = self._results()[1]
        else:
            value = self.regs[self._ptr]
        return (bytes([value & 0xFF, value >> 8]) + b"\xff" * n)[:n]

"""Sensirion SHT3x (SHT30/31/35) temperature and humidity driver, integer-only.

SHT3x(i2c, addr=0x44).measure() -> (temperature in 0.01 degC, relative humidity in 0.01 %RH).
It sends a single-shot high-repeatability measurement without clock stretching (0x2400), waits
the 15.5 ms maximum measurement time, reads the 6-byte result into a pre-allocated buffer and
checks both CRC-8s (poly 0x31, init 0xFF); a mismatch raises SHT3xCRCError. An absent or busy
sensor NACKs, which raises OSError (ENODEV on the ESP32). `sleep_ms` may be injected (the
simulator passes one that advances its clock).
"""

try:
    from time import sleep_ms as _sleep_ms
except ImportError:  # CPython
    from time import sleep as _sleep

    def _sleep_ms(ms):
        _sleep(ms / 1000)

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_CMD_MEASURE = const(b"\x24\x00")
_CMD_SOFT_RESET = const(b"\x30\xa2")
_CMD_STATUS = const(b"\xf3\x2d")
_MEASURE_MS = 16


class SHT3xCRCError(ValueError):
    pass


def crc8(buf, start, end):
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


class SHT3x:
    def __init__(self, i2c, addr=0x44, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self._sleep_ms = sleep_ms or _sleep_ms
        self._buf = bytearray(6)
        self._mv = memoryview(self._buf)

    def _word(self, i):
        b = self._buf
        if crc8(b, i, i + 2) != b[i + 2]:
            raise SHT3xCRCError("SHT3x CRC mismatch at byte %d" % i)
        return b[i] << 8 | b[i + 1]

    def measure(self):
        self.i2c.writeto(self.addr, _CMD_MEASURE)
        self._sleep_ms(_MEASURE_MS)
        self.i2c.readfrom_into(self.addr, self._buf)
        t_raw = self._word(0)
        rh_raw = self._word(3)
        # T = -45 + 175 * raw / 65535, in 0.01 degC, rounded. 17500 * raw would exceed a
        # MicroPython small int (31 bits), so split it: 17500 = 4 * 4375.
        q, r = divmod(t_raw * 4375, 65535)
        t = 4 * q + (4 * r + 32767) // 65535 - 4500
        rh = (rh_raw * 10000 + 32767) // 65535
        return t, rh

    def status(self):
        self.i2c.writeto(self.addr, _CMD_STATUS)
        self.i2c.readfrom_into(self.addr, self._mv[:3])
        return self._word(0)

    def reset(self):
        self.i2c.writeto(self.addr, _CMD_SOFT_RESET)
        self._sleep_ms(2)

"""ST LIS3DH accelerometer driver for pole tilt, integer-only.

LIS3DH(i2c, addr=0x18) reads WHO_AM_I (0x0F) and raises LIS3DHError unless it is 0x33, then
configures CTRL_REG1 = 0x57 (100 Hz, normal power, X/Y/Z on) and CTRL_REG4 = 0x88 (block data
update, high resolution, +-2 g: 12-bit, 1 mg/digit). read_mg() -> (x, y, z) in milli-g, read
in one auto-increment transfer from OUT_X_L (0x28 | 0x80) into a pre-allocated buffer.

tilt_centideg() -> angle of the sensor's z axis (the pole) from vertical, 0..18000 centi-degrees,
= atan2(sqrt(x^2 + y^2), z) computed with an integer square root and a 16-step CORDIC
(vectoring mode) on inputs scaled by 2^12; intermediates stay under 2^30 (MicroPython small
ints). The maths adds at most ~0.03 deg; with 1 mg quantisation the result is within
+-0.15 deg (15 centideg) of the true tilt when the pole is at rest (static 1 g only: wind sway
or vibration adds acceleration that a single sample cannot separate from gravity).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_REG_WHO_AM_I = const(0x0F)
_REG_CTRL1 = const(0x20)
_REG_CTRL4 = const(0x23)
_REG_OUT_X_L = const(0x28)
_AUTO_INC = const(0x80)
_WHO_AM_I = const(0x33)
_CTRL1 = const(0x57)
_CTRL4 = const(0x88)

# atan(2^-i) in millidegrees, i = 0..15
_ATAN = const((45000, 26565, 14036, 7125, 3576, 1790, 895, 448, 224, 112, 56, 28, 14, 7, 3, 2))


class LIS3DHError(OSError):
    pass


def isqrt(n):
    """floor(sqrt(n)) for an int n >= 0."""
    if n <= 0:
        return 0
    x, m = 1, n
    while m > 0:  # x = 2^ceil(bits/2) >= sqrt(n): Newton then decreases monotonically
        x <<= 1
        m >>= 2
    while True:
        y = (x + n // x) >> 1
        if y >= x:
            return x
        x = y


def atan2_millideg(y, x):
    """atan2(y, x) in millidegrees for y >= 0 (result 0..180000); |x|, |y| < 2^17."""
    if y == 0:
        return 180000 if x < 0 else 0
    if x == 0:  # on the axis: exact (CORDIC on a tiny vector would be off by a few mdeg)
        return 90000
    flip = x < 0
    if flip:
        x = -x
    # now x >= 0, y >= 0: angle 0..90 deg; rotate the vector onto the x axis
    x <<= 12
    y <<= 12
    angle = 0
    for i in range(16):
        if y > 0:
            x, y = x + (y >> i), y - (x >> i)
            angle += _ATAN[i]
        elif y < 0:
            x, y = x - (y >> i), y + (x >> i)
            angle -= _ATAN[i]
    if angle < 0:
        angle = 0
    return 180000 - angle if flip else angle


class LIS3DH:
    def __init__(self, i2c, addr=0x18):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(6)
        self._one = bytearray(1)
        i2c.readfrom_mem_into(addr, _REG_WHO_AM_I, self._one)
        if self._one[0] != _WHO_AM_I:
            raise LIS3DHError("LIS3DH: WHO_AM_I is 0x%02x, expected 0x33 (wrong chip at 0x%02x?)"
                              % (self._one[0], addr))
        self._write(_REG_CTRL1, _CTRL1)
        self._write(_REG_CTRL4, _CTRL4)

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def read_mg(self):
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _REG_OUT_X_L | _AUTO_INC, b)
        x = b[0] | b[1] << 8
        y = b[2] | b[3] << 8
        z = b[4] | b[5] << 8
        # 16-bit two's complement, left-justified 12-bit: >> 4 gives counts of 1 mg
        if x & 0x8000:
            x -= 0x10000
        if y & 0x8000:
            y -= 0x10000
        if z & 0x8000:
            z -= 0x10000
        return x >> 4, y >> 4, z >> 4

    def tilt_centideg(self):
        x, y, z = self.read_mg()
        r = isqrt(x * x + y * y)
        return (atan2_millideg(r, z) + 5) // 10

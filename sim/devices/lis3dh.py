"""ST LIS3DH 3-axis accelerometer at I2C 0x18 (0x19 with SA0 high).

Register map (LIS3DH datasheet DocID17530, section 8): WHO_AM_I 0x0F = 0x33 (read-only),
CTRL_REG1 0x20 (ODR[7:4], LPen bit 3, Zen/Yen/Xen bits 2:0; reset value 0x07 = power-down),
CTRL_REG4 0x23 (BDU bit 7, BLE bit 6, FS[5:4], HR bit 3; reset 0x00), STATUS_REG 0x27,
OUT_X_L..OUT_Z_H 0x28..0x2D (read-only). Other registers are plain storage. Sub-address bit 7
set = auto-increment across a multi-byte read/write; clear = the address stays put (datasheet
6.1.1). Unknown addresses (0x00..0x06, 0x3F+) are NACKed, as are writes to read-only ones.

Outputs are 16-bit two's complement, little-endian (BLE = 0), left-justified: 12 bits in
high-resolution mode (HR = 1), 10 bits in normal mode, 8 bits in low-power mode (LPen = 1).
Sensitivity (datasheet table 4), mg/digit at the native resolution:
    FS     +-2g  +-4g  +-8g  +-16g
    HR       1     2     4    12
    normal   4     8    16    48
    LP      16    32    64   192
In power-down (ODR = 0) or with an axis disabled the axis reads 0.

Physics: the sensor's z axis runs up the pole. The simulator sets `tilt_deg` (pole axis angle
from vertical) and `azimuth_deg` (direction of lean, from the x axis towards y). At rest the
accelerometer measures the reaction to gravity: (sin t cos a, sin t sin a, cos t) g.
"""

import math

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

ADDRESS = 0x18
_WHO_AM_I = const(0x33)

# mg/digit by FS code (+-2, 4, 8, 16 g), each: HR, normal, low-power (bytes: flash on the VM)
_SENS = const(b"\x01\x04\x10\x02\x08\x20\x04\x10\x40\x0c\x30\xc0")
_READ_ONLY = const(b"\x0f\x27\x28\x29\x2a\x2b\x2c\x2d\x31\x35\x39\x3d")  # bytes: no heap on the VM


def _valid(reg):
    return 0x07 <= reg <= 0x3F and reg not in (0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                                0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D)


class LIS3DH:
    def __init__(self, tilt_deg=0.0, azimuth_deg=0.0):
        self.tilt_deg = tilt_deg  # true tilt of the pole, set by the simulator
        self.azimuth_deg = azimuth_deg
        # the register file by address (only _valid ones are reachable); bytes, not a dict:
        # a dict of 41 registers holds 400 B of the VM's heap
        self.regs = bytearray(0x40)
        self.regs[0x0F] = _WHO_AM_I
        self.regs[0x20] = 0x07
        self.regs[0x1E] = 0x10  # CTRL_REG0 reset value
        self.regs[0x1F] = 0x00
        self._ptr = None

    # -- configuration decoded from the control registers
    def mode(self):
        if self.regs[0x20] & 0x08:
            return "lp"
        return "hr" if self.regs[0x23] & 0x08 else "normal"

    def bits(self):
        return {"hr": 12, "normal": 10, "lp": 8}[self.mode()]

    def sensitivity_mg(self):
        return _SENS[((self.regs[0x23] >> 4) & 3) * 3 + ("hr", "normal", "lp").index(self.mode())]

    def _outputs(self):
        ctrl1 = self.regs[0x20]
        bits, sens = self.bits(), self.sensitivity_mg()
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        t, a = math.radians(self.tilt_deg), math.radians(self.azimuth_deg)
        gravity = (math.sin(t) * math.cos(a), math.sin(t) * math.sin(a), math.cos(t))
        out = b""
        for axis, g in enumerate(gravity):
            counts = 0
            if ctrl1 >> 4 and ctrl1 & (1 << axis):
                counts = min(max(int(round(g * 1000.0 / sens)), lo), hi)
            raw = (counts << (16 - bits)) & 0xFFFF
            out += bytes([raw & 0xFF, raw >> 8]) if not self.regs[0x23] & 0x40 else bytes([raw >> 8, raw & 0xFF])
        return out

    def i2c_write(self, data, stop):
        if not data:
            return True
        sub = data[0]
        reg, inc = sub & 0x7F, bool(sub & 0x80)
        if not _valid(reg):
            return False
        for b in data[1:]:
            if reg in _READ_ONLY or not _valid(reg):
                return False
            self.regs[reg] = b
            if inc:
                reg += 1
        self._ptr = (sub & 0x7F, inc)
        return True

    def i2c_read(self, n):
        if self._ptr is None:
            return None
        reg, inc = self._ptr
        # one sample for the whole read, as the chip latches one conversion for a burst (and
        # its float maths once, not per byte: the VM's heap counts it)
        sample = self._outputs() if reg <= 0x2D and reg + (n if inc else 1) > 0x28 else None
        out = []
        for _ in range(n):
            if not _valid(reg):
                out.append(0)
            elif 0x28 <= reg <= 0x2D:
                out.append(sample[reg - 0x28])
            elif reg == 0x27:  # STATUS_REG, ZYXOR..ZYXDA: always fresh data
                out.append(0xFF if self.regs[0x20] >> 4 else 0x00)
            else:
                out.append(self.regs[reg])
            if inc:
                reg += 1
        return bytes(out)

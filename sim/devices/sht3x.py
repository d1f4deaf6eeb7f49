"""Sensirion SHT3x-DIS (SHT31) temperature/humidity sensor at I2C 0x44 (0x45 with ADDR high).

Commands are 16-bit, MSB first. Modelled: single-shot measurements without clock stretching
(0x2400 high / 0x240B medium / 0x2416 low repeatability; max durations 15.5 / 6.5 / 4.5 ms) and
with clock stretching (0x2C06 / 0x2C0D / 0x2C10: the read is held until the result is ready, so
it never NACKs); soft reset 0x30A2; read status 0xF32D; clear status 0x3041; heater on 0x306D /
off 0x3066. A measurement result is 6 bytes: T msb, T lsb, CRC, RH msb, RH lsb, CRC (CRC-8 poly
0x31, init 0xFF); it can be read once. Reading with nothing to read, or before the measurement
time has elapsed (when the simulator supplies `clock`, a function returning milliseconds), NACKs
the read header. Unknown commands are NACKed and set status bit 1. Periodic mode is not modelled.

Conversions (datasheet section 4.13): T = -45 + 175 * raw / 65535, RH = 100 * raw / 65535.
Fault injection: `corrupt_crc = True` sends wrong CRCs.
"""


def crc8_sensirion(data):
    """CRC-8 of Sensirion sensors: polynomial 0x31, init 0xFF, no reflection, no final XOR."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


ADDRESS = 0x44

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_STATUS_AFTER_RESET = const(0x8010)  # alert pending (bit 15) + system reset detected (bit 4)


class SHT3x:
    def __init__(self, temperature=20.0, humidity=50.0, clock=None):
        self.temperature = temperature  # true values in degC and %RH, set by the simulator
        self.humidity = humidity
        self.clock = clock
        self.corrupt_crc = False
        self.measurements = 0
        self.status = _STATUS_AFTER_RESET
        self._out = None  # bytes waiting to be read
        self._ready_at = None

    def _word(self, value):
        w = bytes([value >> 8, value & 0xFF])
        crc = crc8_sensirion(w)
        return w + bytes([crc ^ 0x5A if self.corrupt_crc else crc])

    def i2c_write(self, data, stop):
        if len(data) != 2:
            self.status |= 0x0002
            return False
        cmd = data[0] << 8 | data[1]
        self._out = None
        self._ready_at = None
        # single shot, no clock stretching: its maximum duration in ms (None: not one)
        single = 15.5 if cmd == 0x2400 else 6.5 if cmd == 0x240B else 4.5 if cmd == 0x2416 else None
        if single or cmd == 0x2C06 or cmd == 0x2C0D or cmd == 0x2C10:
            self.measurements += 1
            t = min(max(int(round((self.temperature + 45.0) * 65535 / 175.0)), 0), 65535)
            rh = min(max(int(round(self.humidity * 65535 / 100.0)), 0), 65535)
            self._out = self._word(t) + self._word(rh)
            if single and self.clock:
                self._ready_at = self.clock() + single
        elif cmd == 0x30A2:
            self.status = 0x0010  # reset detected; heater off
        elif cmd == 0xF32D:
            self._out = self._word(self.status)
        elif cmd == 0x3041:
            self.status &= ~0x8C10 & 0xFFFF
        elif cmd == 0x306D:
            self.status |= 0x2000
        elif cmd == 0x3066:
            self.status &= ~0x2000 & 0xFFFF
        else:
            self.status |= 0x0002
            return False
        self.status &= ~0x0002 & 0xFFFF
        return True

    def i2c_read(self, n):
        # _ready_at: set with a clock only
        if self._out is None or (self._ready_at is not None and self.clock() < self._ready_at):
            return None
        out, self._out = self._out, None
        return (out + b"\xff" * n)[:n]  # the master may stop early; past the end it reads 0xFF

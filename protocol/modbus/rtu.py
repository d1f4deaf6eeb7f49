"""Modbus RTU: ADU framing, line timing and a sans-I/O deframer.

ADU = address (1 byte) | PDU | CRC-16/MODBUS (low byte first), at most 256 bytes. RTU has no
length field and no start marker: frames are delimited by silence (>= 3.5 character times
between frames; a gap > 1.5 character times inside one spoils it). Above 19200 baud the spec
fixes the timers at 750 us / 1750 us. The deframer does no I/O and reads no clock: the caller
passes the bytes it read and the time it read them, h11-style.

All times are integer microseconds, rounded up so that a wait computed here is never short.
"""

from protocol.modbus.crc import crc16
from protocol.modbus.pdu import ModbusError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x

BROADCAST = 0  # writes to address 0 reach every slave; none of them answers
MAX_ADDRESS = 247  # 248..255 are reserved
_MIN_ADU = const(4)  # address, function, CRC
MAX_ADU = 256


class FrameError(ModbusError):
    """An ADU of impossible length or address."""


class CrcError(FrameError):
    """An ADU whose CRC does not match: line noise, a collision or a torn frame."""


def encode_frame(address, pdu):
    """ADU for slave `address` (0 = broadcast, 1..247) carrying `pdu`."""
    if not 0 <= address <= MAX_ADDRESS:
        raise FrameError("slave address %r out of range 0..%d" % (address, MAX_ADDRESS))
    n = len(pdu)
    if not 1 <= n <= MAX_ADU - 3:
        raise FrameError("PDU length %d out of range 1..%d" % (n, MAX_ADU - 3))
    head = bytes((address,)) + bytes(pdu)
    c = crc16(head)
    return head + bytes((c & 0xFF, c >> 8))


def decode_frame(adu):
    """(address, pdu) of a received ADU; FrameError on bad length, CrcError on bad CRC."""
    n = len(adu)
    if n < _MIN_ADU:
        raise FrameError("frame too short: %d bytes, need at least %d" % (n, _MIN_ADU))
    if n > MAX_ADU:
        raise FrameError("frame too long: %d bytes, at most %d" % (n, MAX_ADU))
    got = adu[n - 2] | (adu[n - 1] << 8)
    want = crc16(adu[: n - 2])
    if got != want:
        raise CrcError("CRC mismatch: frame says 0x%04X, computed 0x%04X" % (got, want))
    return adu[0], bytes(adu[1 : n - 2])


# ---------------------------------------------------------------- timing


def _ceil_div(a, b):
    return -(-a // b)


def _check_baud(baud):
    if not 0 < baud <= 10000000:
        raise FrameError("baud rate %r out of range" % (baud,))


def char_bits(parity="E", stop_bits=None, data_bits=8):
    """Bits per character: start + data + parity + stop (11 for 8E1, 8O1, 8N2; 10 for 8N1).

    stop_bits defaults to the spec's rule: 2 without parity, 1 with.
    """
    if parity not in ("N", "E", "O"):
        raise FrameError("parity must be 'N', 'E' or 'O', got %r" % (parity,))
    if stop_bits is None:
        stop_bits = 2 if parity == "N" else 1
    return 1 + data_bits + (0 if parity == "N" else 1) + stop_bits


def char_time_us(baud, bits=11):
    """Time one character occupies the line."""
    _check_baud(baud)
    return _ceil_div(bits * 1000000, baud)


def frame_time_us(n_bytes, baud, bits=11):
    """Time `n_bytes` back-to-back characters occupy the line."""
    _check_baud(baud)
    return _ceil_div(n_bytes * bits * 1000000, baud)


def t15_us(baud, bits=11):
    """Longest gap allowed inside a frame (1.5 characters; 750 us above 19200 baud)."""
    _check_baud(baud)
    if baud > 19200:
        return 750
    return _ceil_div(15 * bits * 100000, baud)


def t35_us(baud, bits=11):
    """Shortest silence between frames (3.5 characters; 1750 us above 19200 baud)."""
    _check_baud(baud)
    if baud > 19200:
        return 1750
    return _ceil_div(35 * bits * 100000, baud)


# ---------------------------------------------------------------- deframer


class RtuDeframer:
    """Cut a received byte stream into ADUs by RTU timing (a slave's view of the line).

    feed(data, now_us): `data` just read, its last byte having arrived at `now_us`; bytes of
    one feed are taken to have arrived back to back. poll(now_us) returns the list of ADUs
    completed by then (not CRC-checked: pass each to decode_frame). deadline() says when
    poll() should next be called.

    A gap >= t3.5 ends a frame; a frame with a gap > t1.5 inside, or longer than 256 bytes, is
    dropped when it ends (counted in gap_errors / overruns). A master, which knows how long the
    answer is, cuts by length instead: protocol.modbus.master.ResponseDeframer (apart, so that
    a meter never loads it).

    now_us may come from a wrapping tick counter (MicroPython ticks_us) if its period is
    given as ticks_period.
    """

    def __init__(self, baud, bits=11, ticks_period=None):
        self.t15 = t15_us(baud, bits)
        self.t35 = t35_us(baud, bits)
        self._num = bits * 1000000
        self._baud = baud
        self._period = ticks_period
        self._buf = bytearray(MAX_ADU)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._gap = False  # a gap > t1.5 inside the current frame
        self._over = False  # the current frame ran past 256 bytes
        self._last = 0  # when the current frame's last byte arrived
        self._ready = []
        self.frames = 0
        self.gap_errors = 0
        self.overruns = 0

    def _diff(self, a, b):
        d = a - b
        p = self._period
        if p:
            d = (d + p // 2) % p - p // 2
        return d

    def reset(self):
        """Drop a partial frame."""
        self._n = 0
        self._gap = False
        self._over = False

    def _finish(self):
        n = self._n
        if self._over:
            self.overruns += 1
        elif self._gap:
            self.gap_errors += 1
        elif n:
            self._ready.append(bytes(self._mv[:n]))
            self.frames += 1
        self.reset()

    def _append(self, data, i, j):
        n = self._n
        room = MAX_ADU - n
        if j - i > room:
            self._over = True
            j = i + room
        if i or j != len(data):
            data = memoryview(data)[i:j]
        self._mv[n : n + j - i] = data
        self._n = n + j - i

    def feed(self, data, now_us):
        n = len(data)
        if n == 0:
            return
        if self._n:
            gap = self._diff(now_us - n * self._num // self._baud, self._last)
            if gap >= self.t35:
                self._finish()
            elif gap > self.t15:
                self._gap = True
        self._last = now_us
        self._append(data, 0, n)

    def _take(self):
        if not self._ready:
            return ()
        out = self._ready
        self._ready = []
        return out

    def poll(self, now_us):
        if self._n and self._diff(now_us, self._last) >= self.t35:
            self._finish()
        return self._take()

    def deadline(self):
        """When the frame in progress ends by silence (None: nothing pending by time)."""
        if not self._n:
            return None
        t = self._last + self.t35
        if self._period:
            t %= self._period
        return t

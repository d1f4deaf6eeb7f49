"""CRC-16/MODBUS (reflected poly 0xA001, init 0xFFFF, no final XOR), sent low byte first.

Two 256-byte tables indexed by one byte, as in the spec's reference code: on CPython this is
faster than a 256-entry int table (one bytes index per table, no mask), and on MicroPython the
tables are 512 bytes of immutable data instead of a 1 KB list.

Handy property: the CRC of a whole frame, its CRC included, is 0 (see rtu.decode_frame).
"""


def _tables():
    lo = bytearray(256)
    hi = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        lo[i] = c & 0xFF
        hi[i] = c >> 8
    return bytes(lo), bytes(hi)


_LO, _HI = _tables()


def crc16(data, crc=0xFFFF):
    """CRC of `data` (bytes-like), continuing from `crc` so a frame can be checked in pieces."""
    lo_t = _LO
    hi_t = _HI
    lo = crc & 0xFF
    hi = (crc >> 8) & 0xFF
    for b in data:
        i = lo ^ b
        lo = hi ^ lo_t[i]
        hi = hi_t[i]
    return (hi << 8) | lo

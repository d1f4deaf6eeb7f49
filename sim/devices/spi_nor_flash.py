"""A SPI NOR flash chip (Winbond W25Q family) as a bootloader sees it: erase sets whole 4 KiB
sectors to 0xFF, programming can only clear bits (new = old AND data), so data written over
unerased flash comes out wrong, exactly what makes a forgotten erase visible to a test.

It also answers the few opcodes esptool sends through the SPI controller's user-command
registers to identify it: RDID (0x9F, JEDEC id: manufacturer, memory type, capacity = log2 of
the size), RDSFDP (0x5A, the "SFDP" signature and its first headers), RDSR (0x05) and the
software reset pair (0x66, 0x99).

Worn cells: `stuck_at_zero` maps an offset to the bits of that byte that read 0 whatever is
erased or programmed, the usual end of a NOR cell.
"""

SECTOR = 0x1000

WINBOND = 0xEF
W25Q_MEMORY_TYPE = 0x40

RDID = 0x9F
RDSFDP = 0x5A
RDSR = 0x05
RESET_ENABLE = 0x66
RESET = 0x99

# SFDP header and the JEDEC basic-parameter header (JESD216), then a vendor header.
_SFDP = bytes([0x53, 0x46, 0x44, 0x50, 0x06, 0x01, 0x01, 0xFF,
               0x00, 0x06, 0x01, 0x10, 0x80, 0x00, 0x00, 0xFF,
               0x84, 0x00, 0x01, 0x02, 0xD0, 0x00, 0x00, 0xFF])


class SpiNorFlash:
    def __init__(self, size):
        if size & (size - 1) or size < SECTOR:
            raise ValueError("flash size must be a power of two of at least one sector")
        self.size = size
        self.data = bytearray(b"\xff" * size)
        self.sectors_erased = 0  # counted, so a test can tell an erase happened at all
        self.stuck_at_zero = {}  # offset -> bit mask

    @property
    def jedec_id(self):
        return bytes([WINBOND, W25Q_MEMORY_TYPE, self.size.bit_length() - 1])

    def _check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError("0x%x+0x%x is outside the %d-byte flash" % (offset, length, self.size))

    def erase(self, offset, length):
        """Erase every sector that [offset, offset+length) touches."""
        if length <= 0:
            return
        start = offset - offset % SECTOR
        end = -(-(offset + length) // SECTOR) * SECTOR
        self._check(start, end - start)
        self.data[start:end] = b"\xff" * (end - start)
        self.sectors_erased += (end - start) // SECTOR
        self._wear(start, end)

    def erase_chip(self):
        self.erase(0, self.size)

    def program(self, offset, data):
        self._check(offset, len(data))
        cells = self.data
        for i, b in enumerate(bytes(data)):
            cells[offset + i] &= b
        self._wear(offset, offset + len(data))

    def _wear(self, start, end):
        for at, bits in self.stuck_at_zero.items():
            if start <= at < end:
                self.data[at] &= ~bits & 0xFF

    def read(self, offset, length):
        self._check(offset, length)
        return bytes(self.data[offset:offset + length])

    def command(self, opcode, address, read_len):
        """The bytes a user command clocks back on MISO (0xFF: nothing drives the line)."""
        if opcode == RDID:
            reply = self.jedec_id
        elif opcode == RDSFDP:
            reply = _SFDP[address:address + read_len]
        elif opcode == RDSR:
            reply = b"\x00"  # not busy, no write protection
        else:
            reply = b""
        return (reply + b"\xff" * read_len)[:read_len]

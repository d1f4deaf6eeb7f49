"""The memory-mapped registers of an ESP32 and an ESP32-S3 that a host reaches through the ROM
loader's READ_REG / WRITE_REG: what esptool reads to identify the chip (the ROM word at
CHIP_DETECT_MAGIC, eFuse words for package, revision, features and MAC, the UART clock
divider for the crystal) and the SPI0 controller's user-command registers, through which it
talks to the flash chip (RDID, SFDP).

Addresses and bit positions are those of the Technical Reference Manuals, as esptool's
targets/esp32.py and targets/esp32s3.py read them. The values describe one plausible board
of each kind: an ESP32-D0WD-V3 (revision v3.0) with 4 MiB flash, and an ESP32-S3 (QFN56,
revision v0.2) with 8 MiB external flash. Registers not listed read as 0.
"""

from sim.devices.spi_nor_flash import SpiNorFlash

CHIP_DETECT_MAGIC_REG = 0x40001000

# SPI controller register layout (offsets from its base) and command bits.
SPI_USR_COMMAND = 1 << 18  # in SPI_CMD_REG: start a user command (self-clearing)
SPI_USR_ADDR_BIT = 1 << 30
SPI_USR_MISO_BIT = 1 << 28


class Profile:
    """Everything that differs between the two chips, as data."""

    def __init__(self, name, magic, spi, addr_msb, registers, flash_size, security_info):
        self.name = name
        self.magic = magic
        self.spi = spi  # base, usr, usr1, usr2, mosi_dlen, miso_dlen, w0
        self.addr_msb = addr_msb  # ESP32 takes a 24-bit flash address in the top bits
        self.registers = registers
        self.flash_size = flash_size
        self.security_info = security_info  # None: the ROM has no GET_SECURITY_INFO


def _esp32_registers(mac):
    efuse = 0x3FF5A000
    return {
        efuse + 0x04: mac & 0xFFFFFFFF,  # MAC, low 4 bytes
        efuse + 0x08: mac >> 32,  # MAC, top 2 bytes (the CRC byte above them left 0)
        # word 3: package D0WD (bits 9-11 = 1), rated CPU frequency given (bit 13, 240 MHz),
        # revision bit 0 (bit 15); BT and the app CPU enabled
        efuse + 0x0C: (1 << 9) | (1 << 13) | (1 << 15),
        # word 4: ADC Vref calibration (bits 8-12), RC 8M clock calibration (bits 0-7)
        efuse + 0x10: (0x11 << 8) | 80,
        efuse + 0x14: 1 << 20,  # word 5: revision bit 1; default SPI pads
        0x3FF6607C: 1 << 31,  # APB_CTL_DATE: revision bit 2 -> v3
        0x3FF40014: 347,  # UART_CLKDIV: 40 MHz crystal / 115200 baud
        # RTCCALICFG1: the ROM's crystal calibration, cali_val (bits 7-31) * 15625 * 80 / 40
        # = 40 MHz
        0x3FF5F06C: 1280 << 7,
    }


def _esp32s3_registers(mac):
    efuse = 0x60007000
    block1 = efuse + 0x44
    return {
        block1: mac & 0xFFFFFFFF,  # MAC_EFUSE_REG
        block1 + 0x04: mac >> 32,
        # word 3: minor revision low bits (18-20) = 2, eFuse block version minor (24-26) = 3
        block1 + 0x0C: (2 << 18) | (3 << 24),
        efuse + 0x5C + 0x10: 1,  # block 2 word 4: eFuse block version major 1
    }


PROFILES = {
    "esp32": Profile(
        "ESP32", 0x00F01D83,
        spi=(0x3FF42000, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x80), addr_msb=True,
        registers=_esp32_registers(0x240AC4123456), flash_size=4 << 20,
        security_info=None),
    "esp32s3": Profile(
        "ESP32-S3", 0x00000009,
        spi=(0x60002000, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x58), addr_msb=False,
        registers=_esp32s3_registers(0x348518ABCDEF), flash_size=8 << 20,
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version: nothing secured
        security_info=(0, 0, (0,) * 7, 9, 0)),
}


class EspChip:
    def __init__(self, kind):
        self.profile = PROFILES[kind]
        self.flash = SpiNorFlash(self.profile.flash_size)
        self._regs = dict(self.profile.registers)
        self._regs[CHIP_DETECT_MAGIC_REG] = self.profile.magic
        base, usr, usr1, usr2, mosi, miso, w0 = self.profile.spi
        self._spi_cmd, self._spi_addr = base, base + 4
        self._spi_usr, self._spi_usr2 = base + usr, base + usr2
        self._spi_miso_dlen, self._spi_w0 = base + miso, base + w0

    def read(self, addr):
        return self._regs.get(addr, 0)

    def write(self, addr, value, mask=0xFFFFFFFF):
        value = (self.read(addr) & ~mask | value & mask) & 0xFFFFFFFF
        self._regs[addr] = value
        if addr == self._spi_cmd and value & SPI_USR_COMMAND:
            self._run_user_command()

    def _run_user_command(self):
        usr = self.read(self._spi_usr)
        opcode = self.read(self._spi_usr2) & 0xFF
        address = self.read(self._spi_addr)
        if self.profile.addr_msb:
            address >>= 8
        read_len = (self.read(self._spi_miso_dlen) + 8) // 8 if usr & SPI_USR_MISO_BIT else 0
        reply = self.flash.command(opcode, address if usr & SPI_USR_ADDR_BIT else 0, read_len)
        reply += b"\x00" * (-len(reply) % 4)
        for i in range(0, len(reply), 4):
            self._regs[self._spi_w0 + i] = int.from_bytes(reply[i:i + 4], "little")
        self._regs[self._spi_cmd] &= ~SPI_USR_COMMAND  # done at once

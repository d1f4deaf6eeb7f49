"""An ESP32 / ESP32-S3 in serial download mode: the ROM bootloader, and esptool's flasher stub
once esptool has uploaded it, speaking Espressif's documented serial protocol ("Serial
Protocol" in the esptool docs) so that the real esptool can flash it over a pseudo-terminal.

Protocol: SLIP frames (sim.slip); a request is direction 0x00, opcode, u16 data length, u32
checksum, data; a response is 0x01, the same opcode, u16 length, u32 value (READ_REG's
result), data, then status bytes. The ROM's status is 4 bytes (status 0/1, error code, two
reserved), its error codes 0x05-0x0B; the stub's is 2 bytes, one big-endian 16-bit code
(0xC000-0xC900, 0xFF00 for an unknown command). The data commands carry a 16-byte header
(length, sequence, 0, 0) and their checksum is 0xEF XORed with every data byte.

What each side implements (what esptool v5 uses to identify, erase, write and verify):
- ROM: SYNC, READ_REG, WRITE_REG, SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE,
  FLASH_BEGIN (erases the sectors it covers) / FLASH_DATA (checksum and sequence checked,
  read back like the ROM does: a block that does not read back is a flash write error) /
  FLASH_END (leaves the loader), FLASH_DEFL_BEGIN/DATA/END (zlib), MEM_BEGIN / MEM_DATA /
  MEM_END (RAM download; running an entry point inside what was loaded starts the stub,
  which greets with "OHAI"), SPI_FLASH_MD5 (32 hex digits), and GET_SECURITY_INFO on the
  ESP32-S3 only (its chip id is how esptool tells it; the ESP32 ROM rejects the command and
  esptool reads the magic word instead).
- Stub: the same, plus ERASE_FLASH and ERASE_REGION; MD5 as 16 raw bytes; writes erase as
  they go and are not read back, and sequence numbers are not checked.
  READ_FLASH is not emulated (esptool's verify uses MD5; it reads only to show a diff).
The code esptool uploads is not executed, only checked to cover the entry point.

Not in download mode (download_mode=False): the chip runs its application, which answers
whatever arrives with console text (the boot log) and never a frame.

Faults, for the host's error handling:
- corrupt_block=N: a bit of data block N (FLASH_DATA / FLASH_DEFL_DATA sequence number) is
  flipped on the wire after the host computed its checksum, the first corrupt_times
  transmissions (esptool sends each block up to 3 times);
- flash_stuck_bit_at=OFFSET: bit 0 of the flash byte at that offset is stuck at 0 (a worn
  cell), so an image with a 1 there does not land as sent although every checksum passed:
  the ROM's read-back reports a flash write error, the stub does not look, so only the final
  MD5 catches it.

Pacing and baud rate are not modelled: a pty carries bytes at any rate.
"""

import hashlib
import struct
import zlib

from sim import slip
from sim.devices.esp_chip import EspChip

FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0
ERASE_REGION = 0xD1

# ROM loader error codes (second status byte, the first being 1)
ROM_INVALID_MESSAGE = 0x05
ROM_FAILED = 0x06
ROM_BAD_CHECKSUM = 0x07
ROM_FLASH_WRITE_ERROR = 0x08

# Stub status codes (big-endian u16)
STUB_BAD_DATA_LEN = 0xC000
STUB_BAD_CHECKSUM = 0xC100
STUB_FAILED_SPI_OP = 0xC400
STUB_NOT_IN_FLASH_MODE = 0xC600
STUB_INFLATE_ERROR = 0xC700
STUB_TOO_MUCH_DATA = 0xC900
STUB_NOT_IMPLEMENTED = 0xFF00

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
ROM_SYNC_VALUE = 0x55552007  # what ROMs leave in SYNC's value field; the stub answers 0
STUB_GREETING = b"OHAI"

BOOT_LOG = (b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 "
            b"(SPI_FAST_FLASH_BOOT)\r\nconfigsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\n"
            b"entry 0x400805f0\r\nMicroPython v1.25.0 on 2025-04-15\r\n"
            b"Type \"help()\" for more information.\r\n>>> ")


def checksum(data):
    """The protocol's data checksum: 0xEF XOR every byte."""
    state = 0xEF
    for b in data:
        state ^= b
    return state


class Faults:
    """What goes wrong on the line or in the flash (see the module docstring)."""

    def __init__(self, corrupt_block=None, corrupt_times=1, flash_stuck_bit_at=None):
        self.corrupt_block = corrupt_block
        self.corrupt_times = corrupt_times
        self.flash_stuck_bit_at = flash_stuck_bit_at
        self.corrupted = 0  # transmissions actually corrupted


class Rejected(Exception):
    """A request the loader refuses; args[0] is the ROM error byte or the stub's code."""


class EspRomLoader:
    """Sans-I/O: receive() takes bytes from the host and returns the bytes the chip sends."""

    def __init__(self, chip="esp32", download_mode=True, faults=None):
        self.chip = EspChip(chip)
        self.faults = faults or Faults()
        if self.faults.flash_stuck_bit_at is not None:
            self.chip.flash.stuck_at_zero[self.faults.flash_stuck_bit_at] = 0x01
        self.download_mode = download_mode
        self.stub_running = False
        self.left_loader = False  # FLASH_END / MEM_END jumped away: no more answers
        self.commands = []  # opcodes received, in order (tests read it)
        self._decoder = slip.Decoder()
        self._ram = {}  # load address -> bytes, from MEM_BEGIN/MEM_DATA
        self._mem = None  # [address, size, next expected seq, buffer]
        self._write = None  # the FLASH_BEGIN / FLASH_DEFL_BEGIN session
        self._boot_log_sent = False
        self._rom = dict(self._ROM)
        if self.chip.profile.security_info is not None:  # from the ESP32-S2 on
            self._rom[GET_SECURITY_INFO] = EspRomLoader._security_info

    @property
    def name(self):
        return self.chip.profile.name

    @property
    def flash(self):
        """The flash contents (a bytearray; tests may pre-fill it)."""
        return self.chip.flash.data

    def receive(self, data):
        frames = self._decoder.feed(data)
        if not self.download_mode:
            if frames and not self._boot_log_sent:
                self._boot_log_sent = True
                return BOOT_LOG
            return b"\r\n>>> " if frames else b""
        out = bytearray()
        for frame in frames:
            if not self.left_loader:
                out += self._request(frame)
        return bytes(out)

    # ------------------------------------------------------------------ framing

    def _request(self, frame):
        if len(frame) < 8 or frame[0] != 0x00:
            return b""  # not a request (noise, or an acknowledgement we do not expect)
        op, size, chk = struct.unpack_from("<BHI", frame, 1)
        body = frame[8:]
        self.commands.append(op)
        if size != len(body):
            return self._respond(op, error=ROM_INVALID_MESSAGE if not self.stub_running
                                 else STUB_BAD_DATA_LEN)
        handler = (self._STUB if self.stub_running else self._rom).get(op)
        if handler is None:
            return self._respond(op, error=STUB_NOT_IMPLEMENTED if self.stub_running
                                 else ROM_INVALID_MESSAGE)
        try:
            result = handler(self, body, chk)
        except Rejected as e:
            return self._respond(op, error=e.args[0])
        return result if isinstance(result, bytes) else self._respond(op, *result)

    def _respond(self, op, value=0, data=b"", error=0):
        if self.stub_running:
            status = struct.pack(">H", error)
        else:
            status = bytes([1 if error else 0, error, 0, 0])
        payload = data + status
        return slip.encode(struct.pack("<BBHI", 0x01, op, len(payload), value) + payload)

    def _reject(self, rom_error, stub_code):
        raise Rejected(stub_code if self.stub_running else rom_error)

    def _words(self, body, n, allowed=None):
        if len(body) not in (allowed or (4 * n,)):
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        return struct.unpack_from("<%dI" % n, body)

    # ------------------------------------------------------------------ commands

    def _sync(self, body, chk):
        if body != SYNC_PAYLOAD:
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        value = 0 if self.stub_running else ROM_SYNC_VALUE
        return self._respond(SYNC, value) * 8  # both answer a SYNC eight times

    def _read_reg(self, body, chk):
        (addr,) = self._words(body, 1)
        return (self.chip.read(addr),)

    def _write_reg(self, body, chk):
        if not body or len(body) % 16:
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        for addr, value, mask, _delay_us in struct.iter_unpack("<4I", body):
            self.chip.write(addr, value, mask)
        return ()

    def _spi_attach(self, body, chk):
        self._words(body, 1, allowed=(4,) if self.stub_running else (8,))
        return ()

    def _spi_set_params(self, body, chk):
        _id, total_size, _block, _sector, _page, _mask = self._words(body, 6)
        if total_size > self.chip.flash.size:
            self._reject(ROM_FAILED, STUB_FAILED_SPI_OP)
        return ()

    def _change_baudrate(self, body, chk):
        self._words(body, 2)
        return ()

    def _security_info(self, body, chk):
        info = self.chip.profile.security_info
        if info is None:
            self._reject(ROM_INVALID_MESSAGE, STUB_NOT_IMPLEMENTED)
        flags, crypt_cnt, purposes, chip_id, api = info
        return (0, struct.pack("<IB7BII", flags, crypt_cnt, *purposes, chip_id, api))

    def _flash_md5(self, body, chk):
        addr, size, _, _ = self._words(body, 4)
        try:
            digest = hashlib.md5(self.chip.flash.read(addr, size))
        except ValueError:
            self._reject(ROM_FAILED, STUB_FAILED_SPI_OP)
        if self.stub_running:
            return (0, digest.digest())
        return (0, digest.hexdigest().encode())

    def _mem_begin(self, body, chk):
        size, blocks, block_size, addr = self._words(body, 4)
        self._mem = [addr, size, 0, bytearray()]
        return ()

    def _mem_data(self, body, chk):
        if self._mem is None:
            self._reject(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        data = self._data_block(body, chk, expected_seq=self._mem[2])
        if len(self._mem[3]) + len(data) > self._mem[1]:
            self._reject(ROM_INVALID_MESSAGE, STUB_TOO_MUCH_DATA)
        self._mem[3] += data
        self._mem[2] += 1
        if len(self._mem[3]) == self._mem[1]:
            self._ram[self._mem[0]] = bytes(self._mem[3])
        return ()

    def _mem_end(self, body, chk):
        stay, entry = self._words(body, 2)
        reply = self._respond(MEM_END)
        self._mem = None
        if stay:
            return reply
        if any(start <= entry < start + len(code) for start, code in self._ram.items()):
            self.stub_running = True
            return reply + slip.encode(STUB_GREETING)
        self.left_loader = True  # jumped nowhere useful: the chip is gone
        return reply

    def _flash_begin(self, body, chk, compressed=False):
        rom_extended = self.chip.profile.security_info is not None  # S3 ROM: 5th word
        allowed = (16, 20) if self.stub_running or rom_extended else (16,)
        size, blocks, block_size, offset = self._words(body, 4, allowed=allowed)[:4]
        if offset + size > self.chip.flash.size:
            self._reject(ROM_FAILED, STUB_FAILED_SPI_OP)
        # The ROM erases `size` bytes from `offset` now; the stub erases as it writes, the
        # sectors covering what it is told it will write (`size` is then the exact length).
        self.chip.flash.erase(offset, size)
        self._write = {"offset": offset, "remaining": size, "seq": 0, "block": block_size,
                       "inflate": zlib.decompressobj() if compressed else None}
        return ()

    def _flash_defl_begin(self, body, chk):
        return self._flash_begin(body, chk, compressed=True)

    def _flash_data(self, body, chk):
        w = self._write
        if w is None or w["inflate"] is not None:
            self._reject(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        data = self._data_block(body, chk, expected_seq=w["seq"])
        if not self.stub_running:
            # The ROM writes whole blocks at offset + seq * block size, then reads them back.
            self._program(w["offset"] + w["seq"] * w["block"], data, read_back=True)
        else:
            data = data[:w["remaining"]]
            self._program(w["offset"], data)
            w["offset"] += len(data)
            w["remaining"] -= len(data)
        w["seq"] += 1
        return ()

    def _flash_defl_data(self, body, chk):
        w = self._write
        if w is None or w["inflate"] is None:
            self._reject(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        data = self._data_block(body, chk, expected_seq=None if self.stub_running else w["seq"])
        try:
            plain = w["inflate"].decompress(data)
        except zlib.error:
            self._reject(0x0B, STUB_INFLATE_ERROR)
        if len(plain) > w["remaining"]:
            self._reject(ROM_INVALID_MESSAGE, STUB_TOO_MUCH_DATA)
        self._program(w["offset"], plain)
        w["offset"] += len(plain)
        w["remaining"] -= len(plain)
        w["seq"] += 1
        return ()

    def _flash_end(self, body, chk):
        (run_user_code,) = self._words(body, 1)
        if self.stub_running:
            if self._write is None:
                self._reject(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
            if self._write["remaining"]:
                self._reject(ROM_FAILED, STUB_BAD_DATA_LEN)
            self._write = None
            return ()
        self._write = None
        reply = self._respond(FLASH_END)
        self.left_loader = True  # the ROM leaves the loader: reboot or run the application
        return reply

    def _erase_flash(self, body, chk):
        self.chip.flash.erase_chip()
        return ()

    def _erase_region(self, body, chk):
        offset, size = self._words(body, 2)
        if offset % 0x1000 or size % 0x1000 or offset + size > self.chip.flash.size:
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        self.chip.flash.erase(offset, size)
        return ()

    # ------------------------------------------------------------------ data path

    def _data_block(self, body, chk, expected_seq):
        """The payload of a *_DATA request, after the wire fault and the protocol's checks."""
        if len(body) < 16:
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        length, seq, _, _ = struct.unpack_from("<4I", body)
        data = bytearray(body[16:])
        if length != len(data):
            self._reject(ROM_INVALID_MESSAGE, STUB_TOO_MUCH_DATA)
        f = self.faults
        if (f.corrupt_block == seq and f.corrupted < f.corrupt_times and data
                and self.commands[-1] in (FLASH_DATA, FLASH_DEFL_DATA)):
            f.corrupted += 1
            data[len(data) // 2] ^= 0x10
        if checksum(data) != chk:
            self._reject(ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM)
        if expected_seq is not None and seq != expected_seq:
            self._reject(ROM_INVALID_MESSAGE, STUB_BAD_DATA_LEN)
        return bytes(data)

    def _program(self, offset, data, read_back=False):
        flash = self.chip.flash
        try:
            flash.program(offset, data)
            if read_back and checksum(flash.read(offset, len(data))) != checksum(data):
                self._reject(ROM_FLASH_WRITE_ERROR, STUB_FAILED_SPI_OP)
        except ValueError:
            self._reject(ROM_FAILED, STUB_FAILED_SPI_OP)

    _ROM = {
        SYNC: _sync, READ_REG: _read_reg, WRITE_REG: _write_reg, SPI_ATTACH: _spi_attach,
        SPI_SET_PARAMS: _spi_set_params, CHANGE_BAUDRATE: _change_baudrate,
        FLASH_BEGIN: _flash_begin, FLASH_DATA: _flash_data, FLASH_END: _flash_end,
        MEM_BEGIN: _mem_begin, MEM_DATA: _mem_data, MEM_END: _mem_end,
        FLASH_DEFL_BEGIN: _flash_defl_begin, FLASH_DEFL_DATA: _flash_defl_data,
        FLASH_DEFL_END: _flash_end, SPI_FLASH_MD5: _flash_md5,
    }
    _STUB = {**_ROM, GET_SECURITY_INFO: _security_info, ERASE_FLASH: _erase_flash,
             ERASE_REGION: _erase_region}


class EmulatedBoard:
    """The loader behind a pseudo-terminal: open `port` like the USB serial port of a board
    held in download mode (a pty has no DTR/RTS, so esptool's reset cannot be seen: the board
    simply is in download mode, or not). `flash` is the chip's flash; `loader` the state."""

    def __init__(self, chip="esp32", download_mode=True, faults=None):
        import os
        import threading

        from sim.rs485 import PtyLink

        self._os = os
        self.loader = EspRomLoader(chip, download_mode=download_mode, faults=faults)
        self._link = PtyLink(ends=2)
        self.port = self._link.paths[0]
        self._fd = os.open(self._link.paths[1], os.O_RDWR | os.O_NOCTTY)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="esp-rom-loader", daemon=True)
        self._thread.start()

    @property
    def flash(self):
        return self.loader.flash

    def _serve(self):
        import select

        os = self._os
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                reply = self.loader.receive(os.read(self._fd, 65536))
            except OSError:
                return
            if reply:
                os.write(self._fd, reply)

    def close(self):
        os = self._os
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        self._link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    """python -m sim.esp_rom_loader [--chip esp32|esp32s3] [--not-in-download-mode]: an
    emulated board on a pty, to try esptool or the field tool by hand; Ctrl-C ends it."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m sim.esp_rom_loader", description=main.__doc__)
    parser.add_argument("--chip", choices=("esp32", "esp32s3"), default="esp32")
    parser.add_argument("--not-in-download-mode", action="store_true")
    args = parser.parse_args(argv)
    with EmulatedBoard(args.chip, download_mode=not args.not_in_download_mode) as board:
        print("emulated %s on %s" % (board.loader.name, board.port), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

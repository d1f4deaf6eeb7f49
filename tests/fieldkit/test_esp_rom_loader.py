"""The emulated ESP32 / ESP32-S3 serial bootloader (sim.esp_rom_loader) at the byte level,
without esptool: SLIP framing, the ROM's and the stub's answers and error codes, and a
parser that survives garbage. test_flash.py runs the real esptool against it."""

import hashlib
import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sim import slip
from sim.devices.spi_nor_flash import SpiNorFlash
from sim.esp_rom_loader import (
    FLASH_BEGIN, FLASH_DATA, FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, GET_SECURITY_INFO, MEM_BEGIN,
    MEM_DATA, MEM_END, READ_REG, SPI_FLASH_MD5, SYNC, SYNC_PAYLOAD, EspRomLoader, Faults,
    checksum)


def request(op, body=b"", chk=0):
    return slip.encode(struct.pack("<BBHI", 0, op, len(body), chk) + body)


def responses(raw):
    """(op, value, data) of every response frame in `raw`."""
    out = []
    for frame in slip.Decoder().feed(raw):
        assert frame[0] == 0x01, frame
        op, size, value = struct.unpack_from("<BHI", frame, 1)
        assert size == len(frame) - 8
        out.append((op, value, frame[8:]))
    return out


def ask(loader, op, body=b"", chk=0):
    (answer,) = [r for r in responses(loader.receive(request(op, body, chk))) if r[0] == op]
    return answer


def data_block(seq, data):
    return struct.pack("<4I", len(data), seq, 0, 0) + data, checksum(data)


def start_stub(loader):
    code = b"\x36\x41\x00" * 100
    ask(loader, MEM_BEGIN, struct.pack("<4I", len(code), 1, len(code), 0x40080000))
    ask(loader, MEM_DATA, *data_block(0, code))
    go = request(MEM_END, struct.pack("<II", 0, 0x40080010))  # run what was loaded
    frames = slip.Decoder().feed(loader.receive(go))
    assert frames[-1] == b"OHAI" and loader.stub_running


# ---------------------------------------------------------------------- SLIP


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.data())
def test_slip_frames_round_trip_however_the_stream_is_chunked(payloads, data):
    stream = b"".join(slip.encode(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = slip.Decoder()
    got = []
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        got += decoder.feed(stream[a:b])
    assert got == payloads
    assert decoder.noise == decoder.dropped == 0


@given(st.binary(max_size=500))
def test_slip_delimiter_only_at_the_ends(payload):
    frame = slip.encode(payload)
    assert frame[0] == frame[-1] == 0xC0 and 0xC0 not in frame[1:-1]


def test_slip_drops_a_frame_with_an_invalid_escape_and_resynchronises():
    decoder = slip.Decoder()
    assert decoder.feed(b"noise\xc0ab\xdb\x01cd\xc0" + slip.encode(b"ok")) == [b"ok"]
    assert decoder.dropped == 1 and decoder.noise == 5
    assert decoder.feed(slip.encode(b"") + b"\xc0" + slip.encode(b"again")) == [b"again"]


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.sampled_from(["esp32", "esp32s3"]))
def test_loader_fed_garbage_answers_only_frames_and_still_syncs(garbage, chip):
    loader = EspRomLoader(chip)
    out = loader.receive(garbage)
    for frame in slip.Decoder().feed(out):
        assert frame == b"OHAI" or (frame[0] == 0x01 and len(frame) >= 10)
    # Two SYNCs: the first may only close a frame the garbage left open.
    answers = responses(loader.receive(request(SYNC, SYNC_PAYLOAD) * 2))
    assert loader.left_loader or sum(op == SYNC for op, _, _ in answers) >= 8


# ---------------------------------------------------------------------- ROM


def test_rom_answers_sync_eight_times_with_a_nonzero_value_and_four_status_bytes():
    answers = responses(EspRomLoader("esp32").receive(request(SYNC, SYNC_PAYLOAD)))
    assert len(answers) == 8
    assert all(op == SYNC and value != 0 and data == b"\0\0\0\0" for op, value, data in answers)


def test_chip_detection_registers():
    esp32, s3 = EspRomLoader("esp32"), EspRomLoader("esp32s3")
    assert ask(esp32, READ_REG, struct.pack("<I", 0x40001000))[1] == 0x00F01D83
    # The ESP32 ROM has no GET_SECURITY_INFO: "received message is invalid".
    assert ask(esp32, GET_SECURITY_INFO)[2] == b"\x01\x05\x00\x00"
    _, _, data = ask(s3, GET_SECURITY_INFO)
    flags, _crypt, *_purposes, chip_id, _api = struct.unpack("<IB7BII", data[:20])
    assert (chip_id, flags, data[20:]) == (9, 0, b"\0\0\0\0")


def test_rom_flash_begin_erases_and_flash_data_checks_checksum_and_sequence():
    loader = EspRomLoader("esp32")
    loader.flash[:0x3000] = b"\x00" * 0x3000
    ask(loader, FLASH_BEGIN, struct.pack("<4I", 0x1400, 2, 0x400, 0x1000))
    assert loader.flash[0x1000:0x3000] == b"\xff" * 0x2000  # both covered sectors
    assert loader.flash[:0x1000] == b"\x00" * 0x1000
    block, chk = data_block(0, b"\xa5" * 0x400)
    assert ask(loader, FLASH_DATA, block, chk ^ 1)[2][:2] == b"\x01\x07"  # invalid CRC
    assert ask(loader, FLASH_DATA, *data_block(1, b"\xa5" * 0x400))[2][:2] == b"\x01\x05"
    assert ask(loader, FLASH_DATA, block, chk)[2] == b"\0\0\0\0"
    assert loader.flash[0x1000:0x1400] == b"\xa5" * 0x400


def test_rom_reads_back_each_block_and_reports_a_flash_write_error():
    loader = EspRomLoader("esp32", faults=Faults(flash_stuck_bit_at=0x1410))  # in block 1
    ask(loader, FLASH_BEGIN, struct.pack("<4I", 0xC00, 3, 0x400, 0x1000))
    assert ask(loader, FLASH_DATA, *data_block(0, b"\xa5" * 0x400))[2] == b"\0\0\0\0"
    for _attempt in range(2):  # a worn cell stays worn: the resend fails the same way
        assert ask(loader, FLASH_DATA, *data_block(1, b"\xa5" * 0x400))[2][:2] == b"\x01\x08"
    assert ask(loader, FLASH_DATA, *data_block(2, b"\xa5" * 0x400))[2][:2] == b"\x01\x05"


def test_rom_md5_is_hex_and_the_stubs_is_raw():
    loader = EspRomLoader("esp32s3")
    expected = hashlib.md5(b"\xff" * 0x2000)
    body = struct.pack("<4I", 0x1000, 0x2000, 0, 0)
    assert ask(loader, SPI_FLASH_MD5, body)[2] == expected.hexdigest().encode() + b"\0" * 4
    start_stub(loader)
    assert ask(loader, SPI_FLASH_MD5, body)[2] == expected.digest() + b"\0\0"


def test_a_block_corrupted_on_the_wire_is_refused_by_its_checksum():
    loader = EspRomLoader("esp32", faults=Faults(corrupt_block=0))
    start_stub(loader)
    image = b"streetgrid" * 500
    packed = zlib.compress(image)
    ask(loader, FLASH_DEFL_BEGIN, struct.pack("<5I", len(image), 1, len(packed), 0x1000, 0))
    block = data_block(0, packed)
    assert ask(loader, FLASH_DEFL_DATA, *block)[2] == b"\xc1\x00"  # stub: bad data checksum
    assert ask(loader, FLASH_DEFL_DATA, *block)[2] == b"\x00\x00"  # the resend gets through
    assert loader.flash[0x1000:0x1000 + len(image)] == image


def test_stub_rejects_what_it_does_not_implement_and_the_esp32_security_info():
    loader = EspRomLoader("esp32")
    start_stub(loader)
    assert ask(loader, 0xD2, struct.pack("<4I", 0, 16, 16, 1))[2] == b"\xff\x00"
    assert ask(loader, GET_SECURITY_INFO)[2] == b"\xff\x00"


def test_nor_flash_programs_only_zero_bits_until_erased():
    flash = SpiNorFlash(0x10000)
    flash.program(0x100, b"\x0f")
    flash.program(0x100, b"\xf0")
    assert flash.read(0x100, 1) == b"\x00"
    flash.erase(0x100, 1)
    assert flash.read(0, 0x1000) == b"\xff" * 0x1000 and flash.sectors_erased == 1
    flash.stuck_at_zero[0x200] = 0x01
    flash.erase(0, 0x1000)
    assert flash.read(0x1FF, 3) == b"\xff\xfe\xff"


def test_not_in_download_mode_the_board_prints_its_console_and_never_a_frame():
    loader = EspRomLoader("esp32", download_mode=False)
    out = loader.receive(request(SYNC, SYNC_PAYLOAD) * 3)
    assert b"boot:0x13" in out and 0xC0 not in out

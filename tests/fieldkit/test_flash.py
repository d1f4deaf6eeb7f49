"""`streetgrid-field flash` driving the real esptool against an emulated ESP32 / ESP32-S3
bootloader on a pseudo-terminal (sim.esp_rom_loader): what lands in flash, where, what was
erased, and the one-line error a technician gets for each way it goes wrong."""

import random
import shutil
import subprocess
import sys

import pytest

from fieldkit.cli import main
from sim.esp_rom_loader import ERASE_FLASH, EmulatedBoard, Faults

OFFSET = {"esp32": 0x1000, "esp32s3": 0x0}
PREFILL = 0x5A  # what the flash held before: anything left of it was not erased


@pytest.fixture
def firmware(tmp_path):
    """A compressible 128 KiB image (as firmware is; it then travels as zlib blocks) that
    does not start with the 0xE9 image magic, so esptool leaves its header alone."""
    rng = random.Random(11)
    image = bytes(rng.choice(b"\x00\x01\x02\x03\x10\x20\x40\x80\xff") for _ in range(128 << 10))
    path = tmp_path / "firmware.bin"
    path.write_bytes(image)
    return path, image


@pytest.fixture
def board(request):
    kind, kwargs = getattr(request, "param", ("esp32", {}))
    with EmulatedBoard(kind, **kwargs) as b:
        b.flash[:] = bytes([PREFILL]) * len(b.flash)
        yield b


def flash(board_or_port, chip, firmware_path, *extra, capsys):
    port = getattr(board_or_port, "port", board_or_port)
    status = main(["flash", "--port", port, "--chip", chip, "--firmware", str(firmware_path),
                   *extra])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status, err):
    assert status == 1
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("streetgrid-field: error: ") and "Traceback" not in err
    return err


def outside(flash, offset, length):
    return bytes(flash[:offset]) + bytes(flash[offset + length:])


@pytest.mark.parametrize("board", [("esp32", {}), ("esp32s3", {})], indirect=True)
def test_image_lands_at_the_chips_offset_and_the_rest_is_erased(board, firmware, capsys):
    path, image = firmware
    chip = "esp32" if board.loader.name == "ESP32" else "esp32s3"
    status, out, err = flash(board, chip, path, capsys=capsys)
    assert (status, err) == (0, "")
    offset = OFFSET[chip]
    assert bytes(board.flash[offset:offset + len(image)]) == image
    assert set(outside(board.flash, offset, len(image))) == {0xFF}
    assert ERASE_FLASH in board.loader.commands and board.loader.stub_running
    assert "Flashed %d bytes at 0x%x and verified." % (len(image), offset) in out


def test_console_script_flashes_an_esp32s3(firmware, tmp_path):
    script = shutil.which("streetgrid-field")
    assert script, "pip install -e . installs the streetgrid-field console script"
    path, image = firmware
    with EmulatedBoard("esp32s3") as b:
        run = subprocess.run([script, "flash", "-p", b.port, "-c", "esp32s3", "-f", str(path),
                              "-b", "921600"], capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, "")
        assert bytes(b.flash[:len(image)]) == image


def test_no_stub_erases_only_the_sectors_the_image_covers(firmware):
    path, image = firmware
    with EmulatedBoard("esp32") as b:
        b.flash[:] = bytes([PREFILL]) * len(b.flash)
        run = subprocess.run([sys.executable, "-m", "fieldkit", "flash", "--port", b.port,
                              "--chip", "esp32", "--firmware", str(path), "--no-stub"],
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, "")
        assert "cannot erase the whole chip" in run.stdout
        assert bytes(b.flash[0x1000:0x1000 + len(image)]) == image
        end = 0x1000 + len(image)  # a whole number of sectors here
        assert set(b.flash[:0x1000]) == set(b.flash[end:]) == {PREFILL}
        assert not b.loader.stub_running


def test_a_block_corrupted_once_is_sent_again_and_flashing_succeeds(firmware, capsys):
    path, image = firmware
    with EmulatedBoard("esp32", faults=Faults(corrupt_block=1)) as b:
        status, _, err = flash(b, "esp32", path, capsys=capsys)
        assert (status, err, b.loader.faults.corrupted) == (0, "", 1)
        assert bytes(b.flash[0x1000:0x1000 + len(image)]) == image


@pytest.mark.parametrize("extra", [(), ("--no-stub",)], ids=["stub", "rom"])
def test_a_block_corrupted_every_time_fails_in_one_line(firmware, capsys, extra):
    path, _ = firmware
    with EmulatedBoard("esp32", faults=Faults(corrupt_block=1, corrupt_times=99)) as b:
        status, _, err = flash(b, "esp32", path, *extra, capsys=capsys)
        assert "data block 1 arrived corrupted 3 times" in one_line_error(status, err)
        assert b.loader.faults.corrupted == 3  # esptool's attempts per block


@pytest.mark.parametrize("extra, expected", [
    ((), "verification failed"),  # the stub does not read back: the MD5 catches it
    (("--no-stub",), "flash write error"),  # the ROM reads each block back
], ids=["stub", "rom"])
def test_flash_that_does_not_keep_the_data_fails_in_one_line(firmware, capsys, extra, expected):
    path, image = firmware
    worn = next(i for i in range(5000, len(image)) if image[i] & 1)  # where a 1 must land
    with EmulatedBoard("esp32", faults=Faults(flash_stuck_bit_at=0x1000 + worn)) as b:
        status, _, err = flash(b, "esp32", path, *extra, capsys=capsys)
        assert expected in one_line_error(status, err)


@pytest.mark.parametrize("real, asked, message", [
    ("esp32", "esp32s3", "is an ESP32, not an ESP32-S3: use --chip esp32"),
    ("esp32s3", "esp32", "is an ESP32-S3, not an ESP32: use --chip esp32s3"),
])
def test_wrong_chip(firmware, capsys, real, asked, message):
    with EmulatedBoard(real) as b:
        status, _, err = flash(b, asked, firmware[0], capsys=capsys)
        assert message in one_line_error(status, err)
        assert set(b.flash) == {0xFF} and ERASE_FLASH not in b.loader.commands


def test_missing_port(firmware, capsys):
    status, _, err = flash("/dev/ttyUSB-streetgrid-none", "esp32", firmware[0], capsys=capsys)
    assert "port /dev/ttyUSB-streetgrid-none does not exist" in one_line_error(status, err)


def test_busy_port(firmware, capsys):
    with EmulatedBoard("esp32") as b:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import serial, sys; s = serial.Serial(sys.argv[1], "
             "exclusive=True); print('open', flush=True); sys.stdin.read()", b.port],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "open\n"
            status, _, err = flash(b, "esp32", firmware[0], capsys=capsys)
        finally:
            holder.communicate("", timeout=10)
        assert "port %s is busy" % b.port in one_line_error(status, err)
        assert b.loader.commands == []


@pytest.mark.parametrize("kwargs", [{"download_mode": False}, None],
                         ids=["running-its-application", "silent"])
def test_board_that_does_not_answer(firmware, capsys, kwargs):
    from sim.rs485 import PtyLink

    with (EmulatedBoard("esp32", **kwargs) if kwargs else PtyLink()) as b:
        port = b.port if kwargs else b.paths[0]
        status, _, err = flash(port, "esp32", firmware[0], "--connect-attempts", "2",
                               capsys=capsys)
        assert "no answer from the ESP32 bootloader on %s: the board is not in download " \
               "mode" % port in one_line_error(status, err)


@pytest.mark.parametrize("name, expected", [
    ("missing.bin", "No such file or directory"),
    ("", "Is a directory"),
    ("empty.bin", "is empty"),
])
def test_unreadable_firmware_fails_before_touching_the_board(tmp_path, capsys, name, expected):
    (tmp_path / "empty.bin").write_bytes(b"")
    with EmulatedBoard("esp32") as b:
        status, _, err = flash(b, "esp32", tmp_path / name, capsys=capsys)
        assert expected in one_line_error(status, err)
        assert b.loader.commands == []


def test_firmware_built_for_the_other_chip(tmp_path, capsys):
    from esptool.bin_image import ESP32S3FirmwareImage, ImageSegment

    image = ESP32S3FirmwareImage()  # an ESP32-S3 bootloader image, at the ESP32's 0x1000
    image.entrypoint = 0x403C8000
    segment = ImageSegment(0x403C8000, bytes(4096))
    segment.name = ".iram0.text"
    image.segments = [segment]
    image.save(str(tmp_path / "s3.bin"))
    with EmulatedBoard("esp32") as b:
        status, _, err = flash(b, "esp32", tmp_path / "s3.bin", capsys=capsys)
        assert "not built for the ESP32" in one_line_error(status, err)

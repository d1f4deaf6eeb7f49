"""`streetgrid-field deploy` against an emulated board (sim.serial_board: the real MicroPython VM
on a pty, its romfs partition a host file): the image of this checkout lands in the partition
byte for byte, /main.py runs it, a second deploy skips both by hash, and a partition that does
not hold the image (a flash going bad) is written again."""

import hashlib
import os

import pytest

from fieldkit import deploy, image
from sim import serial_board

pytestmark = pytest.mark.skipif(not serial_board.available(), reason="MicroPython VM missing")


@pytest.fixture(scope="module")
def firmware_image():
    return image.build()[1]


def test_deploy_writes_the_image_and_main_py_then_skips_them(tmp_path, firmware_image):
    part = tmp_path / "romfs.bin"
    lines = []
    with serial_board.SerialBoard(romfs=str(part), romfs_size=256 * 1024) as board:
        done = deploy.deploy(board.port, out=lines.append, data=firmware_image)
        assert done == {"image": "written", "slot": 0, "trial": False, "main.py": "written",
                        "boot.py": "written", "app_slots.mpy": "written"}
        assert any("one romfs partition" in x and "no way back" in x for x in lines), lines
        assert part.read_bytes()[:len(firmware_image)] == firmware_image
        with open(os.path.join(board.flash_dir, "main.py"), "rb") as f:
            assert f.read() == deploy.MAIN_PY
        assert deploy.deploy(board.port, out=lines.append, data=firmware_image) == {
            "image": "unchanged", "slot": 0, "trial": False, "main.py": "unchanged",
            "boot.py": "unchanged", "app_slots.mpy": "unchanged"}
        # a bit that flipped in the partition: the next deploy sees it and writes again
        data = bytearray(part.read_bytes())
        data[1000] ^= 0x10
        part.write_bytes(bytes(data))
        board.power_cycle()  # the board reads its partition afresh
        assert deploy.deploy(board.port, out=lines.append, data=firmware_image)["image"] == \
            "written"
        assert hashlib.sha256(part.read_bytes()[:len(firmware_image)]).digest() == \
            hashlib.sha256(firmware_image).digest()
    assert any("sha256 %s" % hashlib.sha256(firmware_image).hexdigest()[:16] in x for x in lines)


def test_a_board_without_romfs_or_too_small_is_refused_in_one_line(tmp_path, firmware_image):
    from fieldkit.board_link import BoardError

    with serial_board.SerialBoard() as board:
        with pytest.raises(BoardError, match="no romfs partition"):
            deploy.deploy(board.port, out=lambda *a: None, data=firmware_image)
    with serial_board.SerialBoard(romfs=str(tmp_path / "small.bin"), romfs_size=64 * 1024) as b:
        with pytest.raises(BoardError, match="bigger than the board's romfs partition"):
            deploy.deploy(b.port, out=lambda *a: None, data=firmware_image)

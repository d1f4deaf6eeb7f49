"""The real mpremote (PyPI) drives the real MicroPython VM through a pty, as it drives an ESP32 on
USB serial: the bridge must speak the UART REPL byte for byte and keep the flash like the chip."""

import hashlib
import importlib.util
import os
import re
import select
import subprocess
import sys
import time

import pytest

from sim.serial_board import SerialBoard, available

pytestmark = pytest.mark.skipif(
    not available() or importlib.util.find_spec("mpremote") is None,
    reason="node, the MicroPython npm package or mpremote missing")

BLOB = bytes(range(256)) + b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(160))


@pytest.fixture
def board():
    with SerialBoard() as b:
        yield b


def mpremote(board, *args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", board.port, *args],
                          capture_output=True, timeout=30)
    if ok:
        assert proc.returncode == 0, (proc.stdout, proc.stderr, board.log())
    return proc


def on_flash(board, name):
    with open(os.path.join(board.flash_dir, name), "rb") as f:
        return f.read()


def wait_for(predicate, timeout=10):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


class Line:
    """The tool's end of the serial line, for checking bytes mpremote does not show."""

    def __init__(self, board):
        self.fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)

    def send(self, data):
        os.write(self.fd, data)

    def until(self, ending, timeout=10):
        data = b""
        end = time.monotonic() + timeout
        while not data.endswith(ending):
            assert time.monotonic() < end, "no %r after %r" % (ending, data)
            if select.select([self.fd], [], [], 0.05)[0]:
                data += os.read(self.fd, 4096)
        return data

    def close(self):
        os.close(self.fd)


def test_the_repl_speaks_as_the_chip_does(board):
    line = Line(board)
    try:
        boot = line.until(b">>> ")
        assert b"rst:0x1 (POWERON_RESET)" in boot
        assert b'Type "help()" for more information.\r\n' in boot
        line.send(b"print(6 * 7)\r")
        assert line.until(b">>> ").endswith(b"42\r\n>>> ")
        line.send(b"site = input('site? ')\r")
        line.until(b"site? ")
        line.send(b"pole-77\x7f\r")  # typed, echoed, one rubbed out
        line.until(b">>> ")
        line.send(b"print(repr(site))\r")
        assert line.until(b">>> ").endswith(b"'pole-7'\r\n>>> ")
        line.send(b"\x01")
        assert line.until(b"raw REPL; CTRL-B to exit\r\n>")
        line.send(b"\x05A\x01")  # raw-paste: refused, the VM's own would hang
        assert line.until(b"R\x00") == b"R\x00"
        line.send(b"print(1)\x04")
        assert line.until(b"\x04>") == b"OK1\r\n\x04\x04>"
        line.send(b"1/0\x04")
        err = line.until(b"\x04>")
        assert err.startswith(b"OK\x04Traceback") and b"ZeroDivisionError" in err
        line.send(b"import time\nwhile True:\n time.sleep_ms(10)\x04")
        assert line.until(b"OK") == b"OK"
        line.send(b"\x03")  # heard while the code sleeps, and raised there (not a line later)
        tb = line.until(b"\x04>")
        # the port's time.sleep_ms is Python (sim/mpvm/port/_boot.py): its frame is the one
        # line a chip's traceback would not have
        assert re.fullmatch(rb'\x04Traceback \(most recent call last\):\r\n'
                            rb'  File "<stdin>", line 3, in <module>\r\n'
                            rb'(  File "_boot", line \d+, in sleep_ms\r\n)?'
                            rb'KeyboardInterrupt: \r\n\x04>', tb), tb
        line.send(b"\x04")  # soft reboot from the raw REPL: back in it, main.py not run
        assert line.until(b">") == b"OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>"
        line.send(b"\x02")
        assert line.until(b">>> ").endswith(b'Type "help()" for more information.\r\n>>> ')
        line.send(b"\x04")  # soft reboot from the friendly REPL
        reboot = line.until(b">>> ")
        assert reboot.startswith(b"\r\nMPY: soft reboot\r\nMicroPython v1.29")
        assert b"rst:" not in reboot  # no ROM boot: the chip did not reset
    finally:
        line.close()


def test_exec(board):
    assert mpremote(board, "exec", "import sys; print(1+1, sys.implementation.name)").stdout == \
        b"2 micropython\r\n"


def test_fs_cp_round_trip_is_byte_identical(board, tmp_path):
    (tmp_path / "blob.bin").write_bytes(BLOB)
    (tmp_path / "notes.txt").write_text("line one\nline two\n")
    mpremote(board, "fs", "cp", str(tmp_path / "blob.bin"), str(tmp_path / "notes.txt"), ":")
    assert on_flash(board, "blob.bin") == BLOB  # on the host at once, as in flash
    mpremote(board, "fs", "cp", ":blob.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == BLOB
    listing = mpremote(board, "fs", "ls", ":").stdout.decode()
    assert "%d blob.bin" % len(BLOB) in listing and "18 notes.txt" in listing
    assert mpremote(board, "fs", "cat", ":notes.txt").stdout == b"line one\r\nline two\r\n"
    digest = mpremote(board, "fs", "sha256sum", ":blob.bin").stdout.split()[-1].decode()
    assert digest == hashlib.sha256(BLOB).hexdigest()


def test_fs_mkdir_and_rm(board, tmp_path):
    (tmp_path / "a.py").write_text("A = 1\n")
    mpremote(board, "fs", "mkdir", ":app")
    mpremote(board, "fs", "cp", str(tmp_path / "a.py"), ":app/a.py")
    assert "a.py" in mpremote(board, "fs", "ls", ":app").stdout.decode()
    out = mpremote(board, "exec", "import sys; sys.path.append('/app'); import a; print(a.A)")
    assert out.stdout == b"1\r\n"  # imports read the flash too
    mpremote(board, "fs", "rm", ":app/a.py")
    mpremote(board, "fs", "rmdir", ":app")
    assert not os.path.exists(os.path.join(board.flash_dir, "app"))


def test_errors_carry_micropythons_errno(board, tmp_path):
    proc = mpremote(board, "fs", "cp", ":missing.txt", str(tmp_path / "x"), ok=False)
    assert proc.returncode != 0 and b"No such file or directory" in proc.stderr
    proc = mpremote(board, "exec", "import os; os.mkdir('d'); os.mkdir('d')", ok=False)
    assert b"OSError: [Errno 17] EEXIST" in proc.stdout  # mpremote exec shows the traceback
    proc = mpremote(board, "exec", "import os; open('d/f', 'w').close(); os.rmdir('d')", ok=False)
    assert b"OSError: 39" in proc.stdout  # ENOTEMPTY, which MicroPython prints by number


def test_soft_reset_clears_the_heap_keeps_the_flash(board):
    out = mpremote(board, "exec", "open('kept.txt', 'w').write('k'); x = 1", "soft-reset",
                   "exec", "import machine; print('x' in globals(), machine.reset_cause(), "
                   "open('kept.txt').read())").stdout
    # the heap is new, the flash kept, and reset_cause() still the chip's last hardware reset
    # (a soft reboot leaves the ROM's reset reason as it was: ports/esp32 reads that)
    assert out == b"False 1 k\r\n"


MAIN = b"""import machine, time
open('boots.txt', 'a').write('%d\\n' % machine.reset_cause())
while True:
    time.sleep_ms(20)
"""


def test_main_py_runs_at_each_boot_and_mpremote_interrupts_it(board, tmp_path):
    (tmp_path / "main.py").write_bytes(MAIN)
    (tmp_path / "boot.py").write_text("open('boot.log', 'a').write('b')\n")
    mpremote(board, "fs", "cp", str(tmp_path / "main.py"), str(tmp_path / "boot.py"), ":")
    mpremote(board, "exec", "print(1)")  # a soft reset in the raw REPL: boot.py, not main.py
    assert on_flash(board, "boot.log") == b"b"
    assert not os.path.exists(os.path.join(board.flash_dir, "boots.txt"))
    mpremote(board, "reset")  # machine.reset(): the chip reboots and runs main.py
    # main.py's line, not just its file: the file exists from open(), before its write lands
    wait_for(lambda: os.path.exists(os.path.join(board.flash_dir, "boots.txt"))
             and on_flash(board, "boots.txt").endswith(b"\n"))
    boots = board.boots()  # mpremote soft-resets when it enters the raw REPL (once per run)
    assert boots[0] == "power" and boots[-1] == "hard" and set(boots[1:-1]) == {"soft"}, boots
    log = on_flash(board, "boot.log")  # boot.py ran at every boot since it was copied: at
    assert set(log) == {ord("b")} and 2 <= len(log) <= len(boots) - 2  # least exec's and reset's
    assert on_flash(board, "boots.txt") == b"5\n"  # SW_CPU_RESET: SOFT_RESET on an ESP32
    assert mpremote(board, "exec", "print(open('main.py').read() == %r)" % MAIN.decode()).stdout \
        == b"True\r\n"  # connecting interrupted the running main.py with Ctrl-C
    board.power_cycle()
    wait_for(lambda: on_flash(board, "boots.txt") == b"5\n1\n")  # PWRON_RESET
    assert mpremote(board, "exec", "print(len(open('boots.txt').read()))").stdout == b"4\r\n"


def test_rtc_is_set_by_mpremote_and_lost_with_the_power(board):
    assert mpremote(board, "rtc").stdout.startswith(b"(2000, 1, 1, 5, 0, 0, 0,")  # power-on
    mpremote(board, "rtc", "--set")
    mpremote(board, "reset")
    wait_for(lambda: board.boots()[-1] == "hard")
    year = mpremote(board, "exec", "import time; print(time.localtime()[0])").stdout
    assert int(year) == time.localtime()[0]  # kept over machine.reset(), as by the RTC domain
    board.power_cycle()
    assert mpremote(board, "rtc").stdout.startswith(b"(2000, 1, 1, 5, 0, 0, 0,")


def test_flash_outlives_the_process(tmp_path):
    flash = tmp_path / "flash"
    (tmp_path / "cfg.json").write_text('{"site": "pole-7"}')
    with SerialBoard(flash_dir=str(flash)) as first:
        mpremote(first, "fs", "cp", str(tmp_path / "cfg.json"), ":cfg.json")
    with SerialBoard(flash_dir=str(flash)) as second:
        assert mpremote(second, "fs", "cat", ":cfg.json").stdout == b'{"site": "pole-7"}'
    assert flash.is_dir()  # a flash directory the caller gave is the caller's


def test_romfs_deploy_writes_the_partition_and_boots_from_it(tmp_path):
    from mpremote.romfs import make_romfs

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("VERSION = 7\n")
    (tmp_path / "app.romfs").write_bytes(make_romfs(str(tmp_path / "src"), mpy_cross=False))
    with SerialBoard(romfs=str(tmp_path / "partition.bin")) as board:
        assert b"ROMFS0 partition has size 131072 bytes (32 blocks of 4096 bytes each)" in \
            mpremote(board, "romfs", "query").stdout
        assert b"ROMFS image deployed" in mpremote(board, "romfs", "deploy",
                                                   str(tmp_path / "app.romfs")).stdout
        mpremote(board, "reset")
        wait_for(lambda: board.boots()[-1] == "hard")
        out = mpremote(board, "exec", "import app, sys; print(app.VERSION, app.__file__)").stdout
        assert out == b"7 /rom/app.py\r\n"
    image = (tmp_path / "app.romfs").read_bytes()
    part = (tmp_path / "partition.bin").read_bytes()
    assert part[:len(image)] == image  # in the host file, kept over power cycles


def test_a_full_flash_refuses_writes_with_enospc(tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(9000))  # three 4 KiB blocks
    with SerialBoard(flash_size=8192) as board:
        assert b"8192        0     8192" in mpremote(board, "df").stdout
        proc = mpremote(board, "fs", "cp", str(tmp_path / "big.bin"), ":big.bin", ok=False)
        assert proc.returncode != 0 and b"No space left on device" in proc.stderr
        assert os.path.getsize(os.path.join(board.flash_dir, "big.bin")) == 8192

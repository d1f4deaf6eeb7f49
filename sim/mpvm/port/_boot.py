"""The serial board's frozen _boot.py: mounts the flash and makes sleeping idle, as on the chip.

Run by sim/mpvm/serial_repl.mjs at every boot, before boot.py (ports/esp32 runs its frozen
_boot.py there to mount the littlefs partition). The VM's own root (Emscripten's MEMFS, lost
with the process, wrong errno numbers) is replaced by the host-backed flash; the host trees
given with --mount are mounted read-only; vfs.rom_ioctl writes the romfs partition
(port/rom_partition.py). `machine` is imported while this directory is importable, so it is
there as a built-in is, and no mount point of ours shows in os.listdir("/"). time.sleep*,
which the VM busy-waits, become host waits that poll the serial line, so a sleeping main.py
costs no CPU and Ctrl-C interrupts it; time.time() and localtime() read machine.RTC, as on
the chip; input() reads the serial line (sys.stdin does not: the VM's is a stub that hangs).
"""

import _chip
import builtins
import hostvfs
import machine  # noqa: F401  (kept in sys.modules)
import os
import rom_partition
import sys
import time
import vfs

vfs.umount("/")
vfs.mount(hostvfs.HostVfs(0), "/")
os.chdir("/")
sys.path.remove("/port")
_spec = _chip.mounts().split("\0")
for _i in range(0, len(_spec) - 1, 2):
    vfs.mount(hostvfs.HostVfs(int(_spec[_i])), _spec[_i + 1], readonly=True)


class _Time:
    """The built-in time, with sleeps that wait on the host and the wall clock on the RTC."""

    @staticmethod
    def time():
        return int(_chip.rtc_time())

    @staticmethod
    def time_ns():
        return int(_chip.rtc_time() * 1000000) * 1000

    @staticmethod
    def gmtime(secs=None):
        return time.gmtime(int(_chip.rtc_time()) if secs is None else secs)

    localtime = gmtime  # the chip has no time zone

    @staticmethod
    def sleep_ms(ms):
        if _chip.sleep_ms(int(ms)):
            raise KeyboardInterrupt

    @staticmethod
    def sleep(s):
        if _chip.sleep_ms(int(s * 1000)):
            raise KeyboardInterrupt

    @staticmethod
    def sleep_us(us):
        if us >= 1000 and _chip.sleep_ms(us // 1000):
            raise KeyboardInterrupt
        time.sleep_us(us % 1000)


class _Vfs:
    """The built-in vfs, with a writable romfs partition."""

    def __getattr__(self, name):
        return getattr(vfs, name)

    rom_ioctl = staticmethod(rom_partition.rom_ioctl)


def _input(prompt=""):
    """input() on the serial line, echoed (the VM's own reads a stub stdin and hangs)."""
    print(prompt, end="")
    line = bytearray()
    while True:
        c = _chip.read_byte()
        if c in (10, 13):
            print()
            return str(line, "utf-8")
        if c in (8, 127):
            if line:
                line = line[:-1]
                print("\b \b", end="")
        elif c >= 0:
            line.append(c)
            print(chr(c), end="")


_time = _Time()
for _name in dir(time):  # the rest as they are, found as fast as in the module
    if not _name.startswith("__") and not hasattr(_Time, _name):
        setattr(_time, _name, getattr(time, _name))
builtins.input = _input
sys.modules["time"] = _time
sys.modules["vfs"] = _Vfs()

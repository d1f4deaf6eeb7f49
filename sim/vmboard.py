"""VMBoard: an emulated board whose firmware runs on the real MicroPython VM (node + WebAssembly).

Same Board protocol as sim.board.LocalBoard (see that module), so the hub, the City and the
demo mix both kinds freely. Each VMBoard owns one long-lived `node sim/mpvm/board.mjs` process
holding MicroPython with protocol/, firmware/, sim/fakes/ and sim/devices/ in its file system;
the fakes are installed as `machine`/`esp32` and sim.devices.pole_board.PoleBoard (the same
board class LocalBoard is) wires the chip models onto them and runs the firmware, so drivers,
MAC and application run with MicroPython's ints, bytes and heap. The transceiver model stays
here (a sim.sim_radio.SimRadio): each radio call of the firmware comes over the pipe, is
carried out on it at the VM's virtual time, and the answer goes back, before the firmware
continues. The wire protocol is in sim/mpvm/board.py.

The firmware's own prints go to a log file (`firmware_output()`), never into the protocol.
"""

import atexit
import json
import os
import shutil
import subprocess
import tempfile

import select

from sim.board import Board, radio_profile, seeded_rng
from sim.mpvm import PACKAGE, ROOT, available, compile_tree
from sim.sim_radio import SimRadio, carry_out

__all__ = ["VMBoard", "VMError", "FirmwareError", "available"]

BOARD_JS = os.path.join(ROOT, "sim", "mpvm", "board.mjs")
MOUNTS = (("protocol", "/lib/protocol"), ("firmware", "/lib/firmware"),
          ("sim/fakes", "/lib/sim/fakes"), ("sim/devices", "/lib/sim/devices"))


_compiled = {}  # package -> tree of .mpy files, compiled once per process
_images = {}  # "firmware" / "sim" -> path of its ROMFS image, built once per process


def _romfs_image(which):
    """The firmware as shipped (fieldkit.image: the import closure of firmware.main), or the
    VM side of the simulator (the closure of sim.mpvm.board in sim/: fakes, chip models, this
    board), as a ROMFS image file; board.mjs keeps both out of the VM's GC heap."""
    if which not in _images:
        from fieldkit import image

        if which == "firmware":
            data = image.build()[1]
        else:
            # the packages without their __init__ (namespace packages: the host's sim/__init__
            # must not run here, and each __init__'s path would be one more qstr on the heap)
            mods = set()
            # the board, and the chip models it imports by name (sim.devices.pole_board)
            for entry in ("sim.mpvm.board", "sim.devices.sx1276", "sim.devices.sx1262"):
                mods.update(m for m in image.closure(entry=entry,
                                                     packages=("protocol", "firmware", "sim"))
                            if m.split(".")[0] == "sim")
            mods = sorted(mods)
            data = image.build_romfs([f for f in image.source_files(mods)
                                      if not f.endswith("__init__.py")])
        fd, path = tempfile.mkstemp(prefix="vmboard-%s-" % which, suffix=".romfs")
        atexit.register(os.unlink, path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _images[which] = path
    return _images[which]


def _mpy_tree(package):
    if package not in _compiled:
        tmp = tempfile.mkdtemp(prefix="vmboard-mpy-")
        atexit.register(shutil.rmtree, tmp, True)
        _compiled[package] = compile_tree(package, tmp)
    return _compiled[package]


class VMError(RuntimeError):
    """The VM process failed or answered something it should not have."""


class FirmwareError(VMError):
    """strict=True: the firmware raised on the VM; the message is MicroPython's traceback."""


class VMBoard(Board):
    """A board on the MicroPython VM (see the module docstring).

    app: "module:function" called as function(machine, esp32, cfg, radio, sleep_ms) inside the
    VM (default the firmware's create()); mounts: extra (host_dir, vm_dir) trees, e.g. a test
    app; strict: re-raise firmware exceptions as FirmwareError instead of counting a crash and
    soft-resetting; romfs (default, as shipped): protocol/ and firmware/ come from the firmware's
    ROMFS image at /rom (fieldkit.image) and sim/fakes, sim/devices and the VM board from a
    second image, both outside the GC heap as flash is, so heap() counts objects, not bytecode;
    romfs=False: the trees are copied into the VM's file system as .py, or with mpy=True as .mpy
    compiled by mpy-cross (mpy=True implies romfs=False unless romfs is given); seed: the
    firmware's rng (join jitter, channel choice) is served from the host, seeded as
    LocalBoard's, so a city replays the same with either kind of board; timeout_s: a request
    the VM does not answer in that long (firmware stuck in a loop) is a VMError, as the
    watchdog would reset the chip;
    radio_fault: a wiring fault of the board's LoRa chip (sim.devices.pole_board.attach_radio).
    """

    def __init__(self, name, dev_eui, cfg, x=0.0, y=0.0, app="firmware.main:create", mounts=(),
                 strict=False, epoch_s=1767225600, seed=0, mpy=False, heapsize=2 * 1024 * 1024,
                 timeout_s=120.0, radio_fault=None, romfs=None):
        if not available():
            raise VMError("node or %s is missing (run `npm ci`)" % os.path.relpath(PACKAGE, ROOT))
        self.name = name
        self.dev_eui = dev_eui.upper()
        self.cfg = dict(cfg)
        self.x, self.y = float(x), float(y)
        self.strict = strict
        self.epoch_s = epoch_s
        self.radio = SimRadio(name)
        self.now_ms = 0
        self._wake_ms = None
        self.counters = {"boots": 0, "soft_resets": 0, "wdt_resets": 0, "power_cuts": 0,
                         "crashes": 0}
        self.errors = []
        self.round_trips = 0  # host <-> VM messages answered, for the benchmarks
        self.timeout_s = timeout_s
        self._inbuf = b""
        self._rng = seeded_rng(seed, self.dev_eui)
        args = ["node", BOARD_JS, "--heapsize", str(int(heapsize))]
        self.romfs = (not mpy) if romfs is None else bool(romfs)
        tree_mounts = MOUNTS
        if self.romfs:
            args += ["--romfs", _romfs_image("firmware"), "--simrom", _romfs_image("sim")]
            tree_mounts = ()
        for host, vm in tuple(tree_mounts) + tuple(mounts):
            if mpy and host in ("protocol", "firmware"):
                host = _mpy_tree(host)
            args += ["--mount", "%s:%s" % (os.path.join(ROOT, host), vm)]
        self._log = tempfile.NamedTemporaryFile(prefix="vmboard-%s-" % name, suffix=".log")
        self._proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, start_new_session=True)
        try:
            self._request({"op": "init", "dev_eui": self.dev_eui, "cfg": self.cfg, "app": app,
                           "strict": strict, "epoch_s": epoch_s,
                           "rng": app == "firmware.main:create", "radio_fault": radio_fault,
                           "radio": radio_profile(self.cfg)})
        except BaseException:
            self.close()
            raise

    # ---- the pipe ---------------------------------------------------------------------

    def _send(self, msg):
        try:
            self._proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise self._died() from None

    def _died(self):
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        return VMError("%s: the MicroPython VM process stopped (status %s): %s"
                       % (self.name, self._proc.returncode, self.firmware_output()[-2000:]))

    def _request(self, msg):
        if self._proc is None:
            raise VMError("%s: board is closed" % self.name)
        self._send(msg)
        while True:
            line = self._read_line()
            self.round_trips += 1
            reply = json.loads(line)
            if isinstance(reply, list):  # a radio call (sim/mpvm/board.py)
                self._send(self._radio_call(*reply))
                continue
            if "fail" in reply:
                err = FirmwareError if self.strict and msg["op"] in ("boot", "poll", "power_cut") \
                    else VMError
                raise err("%s: %s failed on the VM:\n%s" % (self.name, msg["op"], reply["fail"]))
            self.last_peak = reply.get("peak")
            if "now" in reply:
                self.now_ms = reply["now"]
                self.radio.now_ms = self.now_ms
                self.counters = reply["counters"]
                self.errors.extend(tuple(e) for e in reply["errors"])
            return reply["ok"]

    def _read_line(self):
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._inbuf:
            ready, _, _ = select.select([fd], [], [], self.timeout_s)
            if not ready:
                self._proc.kill()
                raise VMError("%s: the MicroPython VM did not answer within %g s (stopped): %s"
                              % (self.name, self.timeout_s, self.firmware_output()[-2000:]))
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died()
            self._inbuf += chunk
        line, self._inbuf = self._inbuf.split(b"\n", 1)
        return line

    def _radio_call(self, fn, a, now_ms):
        """[value], or the error as a string (the firmware sees an exception from its driver)."""
        if fn == "rng":
            return [self._rng(*a)]
        self.radio.now_ms = now_ms
        return carry_out(self.radio, fn, a)

    # ---- Board protocol ---------------------------------------------------------------

    def boot(self, now_ms):
        self._wake_ms = self._request({"op": "boot", "now": int(now_ms)})
        return self._wake_ms

    def poll(self, now_ms):
        self._wake_ms = self._request({"op": "poll", "now": int(now_ms)})
        return self._wake_ms

    def apply_env(self, env):
        self._request({"op": "env", "env": dict(env)})

    def outputs(self):
        return self._request({"op": "outputs"})

    def power_cut(self, now_ms=None):
        self._wake_ms = self._request({"op": "power_cut",
                                       "now": None if now_ms is None else int(now_ms)})
        return self._wake_ms

    @property
    def measured(self):
        return self._request({"op": "measured"})

    @property
    def energy_counts(self):
        """The BL0942's CF_CNT (true energy pulses since its last reset)."""
        return self._request({"op": "energy"})

    @property
    def kind(self):
        return self.cfg.get("kind", "pole")

    def truth(self):
        """A meter's physical truth (sim.devices.meter_board.MeterPeripherals.truth)."""
        return self._request({"op": "eval", "expr": "board.hardware.truth()"})

    @property
    def nvs_flash(self):
        """The board's committed NVS data; blobs as hex strings, i32 as ["i32", n]."""
        return self._request({"op": "nvs"})

    def heap(self, collect=True):
        """{"alloc", "free"} bytes of the VM's MicroPython heap (after a gc.collect()).

        Collected twice, in two calls into the VM: the first collection still sees some of the
        last poll's garbage as live (the conservative GC finds stale pointers on the
        WebAssembly stack), so one reading wanders by ~10 KB with the timing of the last poll."""
        if collect:
            self._request({"op": "heap", "collect": True})
        alloc, free = self._request({"op": "heap", "collect": collect})
        return {"alloc": alloc, "free": free}

    def poll_peak(self, now_ms):
        """poll(now_ms) -> (wake ms, peak heap bytes): collected first (heap()), then the poll
        runs with the GC disabled, so gc.mem_alloc() at its end bounds its peak from above."""
        self.heap()
        self._wake_ms = self._request({"op": "poll", "now": int(now_ms), "peak": True})
        return self._wake_ms, self.last_peak

    def eval_peak(self, expr):
        """eval(expr) measured as poll_peak measures a poll -> (value, peak heap bytes); for
        what the firmware does outside app.poll (e.g. the Modbus slave's own poll)."""
        self.heap()
        value = self._request({"op": "eval", "expr": expr, "peak": True})
        return value, self.last_peak

    def eval(self, expr):
        """Evaluate a Python expression inside the VM (names: board, app, machine, esp32)."""
        return self._request({"op": "eval", "expr": expr})

    def firmware_output(self):
        """Everything the firmware printed (and the VM's own errors), as text."""
        try:
            with open(self._log.name, errors="replace") as f:
                return f.read()
        except (OSError, ValueError):
            return ""

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

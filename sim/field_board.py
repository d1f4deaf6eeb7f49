"""FieldBoard: one emulated streetgrid board on one pseudo-terminal, as a technician gets it on
the bench: an ESP32 that esptool flashes in download mode, that then runs MicroPython (the real
VM, sim/mpvm/serial_repl.mjs) for mpremote and the field tool, and whose deployed firmware runs
on the board's own chip models, its LoRa radio on the air of a FieldAir (sim/field_air.py).

    with FieldAir(gateway_addr) as air, FieldBoard("pole", "streetgrid-sx1276") as board:
        air.add(board)
        board.reset(boot_held=True)     # download mode: streetgrid-field flash ...
        board.reset()                   # runs what is in flash: deploy, provision, verify ...

What a reset runs (a pty has no DTR/RTS, so the technician's BOOT button is `boot_held`):
- boot_held: the ROM's serial loader (sim.esp_rom_loader) on the port, on this board's flash.
  An ERASE_FLASH (esptool's erase of the whole chip) erases the file system, the romfs
  partition and NVS too: they are partitions of that flash on the chip.
- otherwise, with a MicroPython image at the chip's offset (the 0xE9 magic and this chip's id
  in the image header): MicroPython, whose flash, two romfs partitions (A/B app slots) and NVS
  are files under
  `state_dir` (they outlive resets and power cycles), with the board's peripherals and radio
  installed by sim/devices/free_running_board.py before boot.py.
- with no image (an erased chip, an image for another chip): the ROM's boot error, repeated as
  the chip's boot loop does.

The radio and the NVS partition are on the host: the VM calls them over two pipes
(serial_repl.mjs --radio-link), served by a thread per boot; radio calls go to `radio_handler`
(FieldAir.add sets it; on no air the radio sends into nothing and hears nothing), NVS calls to
the file `nvs.json` in state_dir.
"""

import json
import os
import shutil
import tempfile
import threading
import time

from sim.esp_rom_loader import ERASE_FLASH, EspRomLoader
from sim.mpvm import ROOT
from sim.serial_board import SerialBoard

IMAGE_OFFSET = {"esp32": 0x1000, "esp32s3": 0x0}
IMAGE_CHIP_ID = {"esp32": 0, "esp32s3": 9}  # esptool's IMAGE_CHIP_ID, in the image header
ROM_NO_IMAGE = ("ets Jul 29 2019 12:21:46\r\n\r\nrst:0x10 (RTCWDT_RTC_RESET),boot:0x13 "
                "(SPI_FAST_FLASH_BOOT)\r\ninvalid header: 0xffffffff\r\n")


def _wiring(kind, board, watchdog_everywhere=False):
    """What sim/devices/free_running_board.py solders on: the pins of the board's peripherals
    (the firmware's defaults for its kind: the board's design), its radio profile, and whether
    the watchdog is checked between any two lines (the VM's settrace build) or at sleeps."""
    from firmware import config
    from sim.board import radio_profile

    cfg = config.defaults(kind)
    cfg["board"] = board
    return {"kind": kind, "cfg": cfg, "radio": radio_profile(cfg),
            "watchdog_everywhere": watchdog_everywhere}


class FieldBoard(SerialBoard):
    """kind "pole" | "meter"; board: the radio board's name (firmware/radio_board.py); chip:
    "esp32" | "esp32s3"; x, y: where it stands (metres, for the air); state_dir: where its
    flash lives (None: a temporary directory, removed by close()); watchdog_everywhere: the
    watchdog fires even in a loop that never sleeps, as the silicon's does (the VM's settrace
    build, several times slower: for the tests of such hangs). The board is off until the
    first reset()."""

    def __init__(self, kind="pole", board="streetgrid-sx1276", chip="esp32", name=None,
                 x=0.0, y=0.0, state_dir=None, watchdog_everywhere=False):
        self._power_lock = threading.RLock()
        self.kind = kind
        self.board_name = board
        self.chip = chip
        self.name = name or "%s-bench" % kind
        self.dev_eui = None
        self.x, self.y = x, y
        self.radio = None  # FieldAir.add: the host side of its SimRadio
        self.radio_handler = None  # fn(board, call, args) -> reply, FieldAir.add
        self._lone_radio = None  # the antenna while on no air
        self._own_state = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="field-board-")
        self._paths = {n: os.path.join(self.state_dir, n)
                       for n in ("flash", "romfs0.bin", "romfs1.bin", "nvs.json",
                                 "chip-flash.bin")}
        os.makedirs(self._paths["flash"], exist_ok=True)
        self._loader = EspRomLoader(chip)
        if os.path.exists(self._paths["chip-flash.bin"]):
            with open(self._paths["chip-flash.bin"], "rb") as f:
                self._loader.flash[:] = f.read()
        self._boot_held = False
        self._persona = None  # the thread answering the port while MicroPython does not run
        self._link = None  # (thread, fds) of the radio link of the running VM
        self._hw = tempfile.mkdtemp(prefix="field-board-hw-")
        os.symlink(os.path.join(ROOT, "sim"), os.path.join(self._hw, "sim"))
        frozen = os.path.join(self._hw, "frozen_boot.py")
        with open(frozen, "w") as f:
            f.write("import sys\nsys.path.append('/simhw')\n"
                    "from sim.devices import free_running_board as _fr\n"
                    "_fr.install(%r)\ndel _fr, sys\n" % (json.loads(json.dumps(
                        _wiring(kind, board, watchdog_everywhere))),))
        self._powered = False
        # two romfs partitions: the A/B app slots of streetgrid's partition table
        super().__init__(flash_dir=self._paths["flash"],
                         romfs=[self._paths["romfs0.bin"], self._paths["romfs1.bin"]],
                         romfs_size=512 * 1024, mounts=((self._hw, "/simhw"),),
                         frozen_boot=frozen, settrace=watchdog_everywhere)

    # ---- what runs -----------------------------------------------------------------------

    @property
    def flash(self):
        """The chip's flash (bytearray) as esptool left it."""
        return self._loader.flash

    def has_image(self):
        off = IMAGE_OFFSET[self.chip]
        head = self.flash[off:off + 24]
        return head[0] == 0xE9 and int.from_bytes(head[12:14], "little") == IMAGE_CHIP_ID[
            self.chip]

    def reset(self, boot_held=False, timeout=15.0):
        """Press EN (with BOOT held: download mode). Returns once the chip is up (MicroPython
        started its boot: as a technician waits the second an ESP32 takes)."""
        self._boot_held = boot_held
        self._powered = True
        n = len(self.boots())
        self.power_cycle()
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        while len(self.boots()) <= n:
            if self._proc is None:
                return  # the power went again meanwhile (a test's power cut, in a thread)
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError("the board's VM did not boot: %s" % self.log()[-2000:])
            time.sleep(0.02)

    def power_on(self):
        with self._power_lock:
            self._power_on()

    def _power_on(self):
        if not getattr(self, "_powered", False):
            return  # SerialBoard's constructor: the board stays off until reset()
        if self.running or self._persona is not None:
            return
        if self._boot_held:
            self._loader = self._fresh_loader()
            self._serve(self._answer_loader)
        elif not self.has_image():
            self._serve(self._answer_no_image, tick=0.3)
        else:
            self._start_link()
            super().power_on()

    def power_off(self):
        with self._power_lock:  # a test's power cut (a thread) may race a reset
            self._power_off()

    def _power_off(self):
        super().power_off()
        self._stop_link()
        if self._persona is not None:
            stop, thread = self._persona
            os.write(stop[1], b"x")
            thread.join(5)
            for fd in stop:
                os.close(fd)
            self._persona = None
            if self._boot_held:
                self._after_download()

    @property
    def running(self):
        return super().running or self._persona is not None

    def _fresh_loader(self):
        loader = EspRomLoader(self.chip)
        loader.chip = self._loader.chip  # the same silicon and flash, a new session
        return loader

    def _after_download(self):
        if ERASE_FLASH in self._loader.commands:  # the whole chip: every partition
            shutil.rmtree(self._paths["flash"], ignore_errors=True)
            os.makedirs(self._paths["flash"])
            for n in ("romfs0.bin", "romfs1.bin", "nvs.json"):
                if os.path.exists(self._paths[n]):
                    os.unlink(self._paths[n])
        with open(self._paths["chip-flash.bin"], "wb") as f:
            f.write(self.flash)

    # ---- the port while MicroPython does not run -----------------------------------------

    def _serve(self, answer, tick=1.0):
        """answer(master, data) for each read, and answer(master, b"") every tick s of
        silence."""
        import select

        stop = os.pipe()
        master = self._master

        def run():
            answer(master, None)
            while True:
                ready, _, _ = select.select([master, stop[0]], [], [], tick)
                if stop[0] in ready:
                    return
                data = b""
                if master in ready:
                    try:
                        data = os.read(master, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                answer(master, data)

        thread = threading.Thread(target=run, name="field-board-rom", daemon=True)
        self._persona = (stop, thread)
        thread.start()

    def _answer_loader(self, master, data):
        if data:
            reply = self._loader.receive(data)
            if reply:
                _write_all(master, reply)

    def _answer_no_image(self, master, data):
        # at reset, then again and again: the RTC watchdog restarts the chip within a fraction
        # of a second, so the line never falls silent (a serial reader that waits for a pause
        # waits forever)
        if data is None or not data:
            _write_all(master, ROM_NO_IMAGE.encode())

    # ---- the host's side of the VM (radio, NVS) ------------------------------------------

    def _start_link(self):
        to_vm = os.pipe()
        from_vm = os.pipe()
        self._link_fds = (to_vm, from_vm)
        self._extra = ["--radio-link", "%d,%d" % (to_vm[0], from_vm[1])]
        self._pass_fds = (to_vm[0], from_vm[1])
        thread = threading.Thread(target=self._serve_link, args=(from_vm[0], to_vm[1]),
                                  name="field-board-link", daemon=True)
        self._link = thread
        thread.start()

    def _spawn_args(self):
        return self._args + getattr(self, "_extra", [])

    def _stop_link(self):
        if self._link is None:
            return
        (to_vm, from_vm) = self._link_fds
        os.close(to_vm[1])  # the thread's write end: its next answer fails, it ends
        os.close(from_vm[1])  # EOF for the thread's read once the VM's copy is gone too
        self._link.join(5)
        for fd in (to_vm[0], from_vm[0]):
            os.close(fd)
        self._link = None

    def _serve_link(self, rfd, wfd):
        buf = b""
        while True:
            try:
                chunk = os.read(rfd, 65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                fn, args = json.loads(line)
                try:
                    reply = self._link_call(fn, args)
                except Exception as e:  # noqa: BLE001 - the firmware's driver sees it
                    reply = repr(e)
                try:
                    _write_all(wfd, (json.dumps(reply) + "\n").encode())
                except OSError:
                    return

    def _link_call(self, fn, args):
        if fn == "nvs_load":
            if not os.path.exists(self._paths["nvs.json"]):
                return [None]
            with open(self._paths["nvs.json"]) as f:
                return [json.load(f)]
        if fn == "nvs_save":
            tmp = self._paths["nvs.json"] + ".tmp"
            with open(tmp, "w") as f:
                json.dump(args[0], f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._paths["nvs.json"])
            return [None]
        if self.radio_handler is None:  # on no air: it sends into nothing, hears nothing
            from sim.sim_radio import SimRadio, carry_out

            if self._lone_radio is None:
                self._lone_radio = SimRadio(self.name)
            self._lone_radio.now_ms = int(time.monotonic() * 1000)
            return carry_out(self._lone_radio, fn, args)
        return self.radio_handler(self, fn, args)

    def nvs(self):
        """The committed NVS partition ({namespace: {key: [kind, value]}}, blobs in hex)."""
        if not os.path.exists(self._paths["nvs.json"]):
            return {}
        with open(self._paths["nvs.json"]) as f:
            return json.load(f)

    # ---- the Board protocol bits sim.air.Air uses ----------------------------------------

    def boot(self, now_ms):
        return None

    def poll(self, now_ms):
        """The firmware runs by itself; the air polls only to collect what the radio sent."""
        return None

    def close(self):
        super().close()
        shutil.rmtree(self._hw, ignore_errors=True)
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _write_all(fd, data):
    import select

    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        data = data[n:]

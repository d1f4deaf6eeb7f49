"""An emulated board as the firmware lives on it: virtual time, boot, poll, resets, crashes and
power cuts around its peripherals (a pole's PolePeripherals, or a meter's MeterPeripherals when
cfg kind is "meter"; the name stayed from when only poles existed). Independent of where it
runs.

Why one class: the simulator runs the same board on CPython (sim.board.LocalBoard) and on the
MicroPython VM (sim/mpvm/board.py's VMSide); both are this class plus what differs (where the
fakes and the radio come from, how the host talks to it), so time and reset handling cannot
drift apart between the two kinds of board. MicroPython-compatible; sim/devices/ is mounted into
the VM.

Time: the host speaks absolute virtual ms (ints that never wrap); the firmware gets MicroPython
``ticks_ms`` values (mod 2**30) and its returned wake tick is turned back into absolute ms.
A subclass provides ``app_factory(machine, esp32, cfg, radio, sleep_ms) -> app`` and ``radio``
(the transceiver's link to the medium: SimRadio's firmware-side methods).

The radio: the board carries the register-level model of the chip its config's `board` names
(attach_radio), wired to ``radio`` as its antenna; the firmware gets radio=None and builds its
own driver on the SPI bus and pins, as on the device, so every simulated device runs the real
driver. ``radio_chip`` is the model (None for a Modbus-only meter); it is advanced whenever the
board's time moves, which raises its IRQ lines as the chip would.
"""


def attach_radio(machine, p, link, clock, radio_fault):
    """The model of the LoRa chip that the board profile `p` names (sim/devices/sx1276.py or
    sx1262.py), attached on `machine` (the board's fake module) at p's pins; None when p is
    None (a Modbus-only meter).

    Why a profile from the firmware's own table (firmware.radio_board.profile, looked up by the
    caller: sim.board.radio_profile): the driver the firmware builds and the chip the simulator
    solders on must sit on the same pins, or a wrong pin map in the table would pass every test.
    The VM side gets it from the host, so the VM never loads the table before the firmware's
    boot does. `link` is the chip's antenna: sim.sim_radio.SimRadio on CPython, its proxy to
    the host on the MicroPython VM. radio_fault: a wiring fault to emulate, "absent" (no chip on the
    bus: reads 0xFF), "dead" (an SX1276 whose version register reads 0x00) or "busy_stuck" (an
    SX1262 whose BUSY never falls)."""
    if p is None:
        return None
    machine.set_mcu(p["mcu"])
    if radio_fault == "absent":
        return None
    # the chip's module by its name (sim/devices/sx1276.py, sx1262.py): a board on the VM never
    # interns the other chip's names
    chip = __import__("sim.devices." + p["chip"], None, None, ("attach",))
    model = chip.attach(machine, p, link, clock, radio_fault)
    machine.spi(p["spi_id"]).attach(p["cs"], model)
    return model


REBOOT_MS = 300  # an ESP32 takes a few hundred ms from reset to running main.py


class PoleBoard:
    """machine / esp32: this board's own fake modules; cfg: the firmware config (its pins and
    bus ids wire the peripherals); profile: its board's radio wiring (see attach_radio);
    strict: re-raise firmware exceptions instead of counting a crash and resetting."""

    def __init__(self, machine, esp32, cfg, profile, strict, epoch_s, radio_fault):
        self.machine = machine
        self.esp32 = esp32
        self.cfg = cfg
        self.strict = strict
        self.now_ms = 0  # the board's virtual time: last boot / poll / apply_env instant
        self._slept = 0  # virtual ms the firmware slept inside the current call
        machine.set_clock(self.clock)
        machine.set_epoch(epoch_s)  # virtual UTC (unix seconds) at virtual time 0
        # a pole's sensors and lamp outputs, or a meter's metering chip and relay; a board
        # never loads the other kind's models
        if cfg.get("kind") == "meter":
            from sim.devices.meter_board import MeterPeripherals as parts
        else:
            from sim.devices.pole_peripherals import PolePeripherals as parts
        self.hardware = parts(machine, cfg, self.clock)
        self.radio_chip = attach_radio(machine, profile, self.radio, self.clock, radio_fault)
        self.app = None
        self._wake_ms = None
        self.counters = {"boots": 0, "soft_resets": 0, "wdt_resets": 0, "power_cuts": 0,
                         "crashes": 0}
        self.errors = []  # (now_ms, repr(exception)) of firmware exceptions

    # ---- time

    def clock(self):
        return self.now_ms + self._slept

    def sleep_ms(self, ms):
        """Injected into drivers that must wait (e.g. SHT3x conversion): virtual time passes."""
        if ms > 0:
            self._slept += int(ms)
            self.time_moved()
            if self.radio_chip is not None:
                self.radio_chip.advance()

    def set_now(self, now_ms):
        now_ms = int(now_ms)
        if now_ms < self.clock():
            now_ms = self.clock()  # a board cannot go back in time (it slept inside a poll)
        self.hardware.advance_meter(now_ms)
        self.now_ms = now_ms
        self._slept = 0
        self.time_moved()
        if self.radio_chip is not None:
            self.radio_chip.advance()

    def time_moved(self):
        """Hook: the board's clock() changed."""

    # ---- lifecycle

    def boot(self, now_ms):
        self.set_now(now_ms)
        self.hardware.drive_inputs()
        self.counters["boots"] += 1
        self.app = None
        self._wake_ms = self.now_ms
        try:
            # radio None: the firmware builds its driver on the board's chip (radio_chip)
            self.app = self.app_factory(self.machine, self.esp32, self.cfg, None, self.sleep_ms)
        except self.machine.ResetRequested:
            return self.soft_reset()
        except Exception as e:
            return self.crash(e)
        self._wake_ms = max(self._wake_ms, self.clock())  # the boot itself took time (radio reset)
        return self._wake_ms

    def poll(self, now_ms):
        """Run the firmware at now_ms (absolute); returns the absolute ms it wants to run
        again."""
        self.set_now(now_ms)
        if self.app is None:
            return self.boot(self.now_ms)
        # the firmware's tick arithmetic, imported here: its boot has loaded it, and the VM side
        # holds nothing of the firmware before that
        from firmware.ticks import TICKS_PERIOD, ticks_diff

        t0 = self.now_ms % TICKS_PERIOD  # absolute virtual ms -> MicroPython ticks_ms value
        try:
            wake = self.app.poll(t0)
        except self.machine.ResetRequested:
            return self.soft_reset()
        except Exception as e:
            return self.crash(e)
        if self.machine.wdt_expired():
            self.counters["wdt_resets"] += 1
            return self.soft_reset(self.machine.WDT_RESET)
        self._wake_ms = max(self.now_ms + ticks_diff(wake, t0), self.clock())
        return self._wake_ms

    def soft_reset(self, cause=None):
        self.counters["soft_resets"] += 1
        self.machine.soft_reset(cause or self.machine.SOFT_RESET)
        self.esp32.power_cut()  # NVS handles of the old boot die; committed data stays
        self.app = None
        # The chip restarts after its boot time; the next poll boots the firmware. Booting here
        # directly would recurse without bound when the firmware crashes while booting.
        self._wake_ms = self.clock() + REBOOT_MS
        return self._wake_ms

    def crash(self, exc):
        """A firmware exception escaping app.poll would crash the device's main loop and its
        run() resets: record it, count a crash, soft-reset (strict: re-raise)."""
        self.counters["crashes"] += 1
        self.errors.append((self.now_ms, repr(exc)))
        if self.strict:
            raise exc
        return self.soft_reset()

    def power_cut(self, now_ms=None):
        """Mains lost and back at now_ms: RTC memory, pins, uncommitted NVS writes and the
        chips' state are lost; the firmware boots again (cold)."""
        self.counters["power_cuts"] += 1
        if now_ms is not None:
            self.set_now(now_ms)
        self.machine.power_cut()
        self.esp32.power_cut()
        self.hardware.power_cut()
        if self.radio_chip is not None:
            self.radio_chip.power_cut()
        else:
            self.radio.power_off()
        return self.boot(self.now_ms)

    # ---- physical world

    def apply_env(self, env):
        """Physical truth (PolePeripherals.ENV_KEYS) at env["now_ms"] or now; the energy of
        the previous power is counted up to that instant first."""
        if "now_ms" in env:
            self.set_now(env["now_ms"])
        else:
            self.hardware.advance_meter(self.clock())
        self.hardware.apply_env(env)

    def outputs(self):
        return self.hardware.outputs()

    def last_measured(self):
        """What the firmware last reported about its sensors (None before the first report)."""
        app = self.app
        if app is None:
            return None
        if hasattr(app, "last_report"):  # firmware.pole.PoleApp
            return app.last_report
        return getattr(app, "measured", None)

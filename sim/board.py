"""Emulated boards (street poles and AMI meters): the Board protocol the simulator hub drives,
and LocalBoard.

Time: the hub speaks absolute virtual milliseconds (ints that never wrap). A board turns them
into MicroPython ``ticks_ms`` values (mod 2**30) for the firmware and turns the firmware's
returned wake tick back into absolute ms, so the same firmware code runs on the device.

The Board protocol (``Board`` documents it; ``LocalBoard`` and ``sim.vmboard.VMBoard``
implement it):

    name, dev_eui (16 hex chars, upper case), x, y (metres), cfg (firmware config dict),
    radio            host side of the board's SimRadio (sim/sim_radio.py)
    now_ms           the board's virtual time (last boot/poll/apply_env instant)
    boot(now_ms)     power up / start the firmware at now_ms
    poll(now_ms) -> next_wake_ms
                     run the firmware at now_ms (absolute); returns the absolute ms it wants to
                     be polled again. The hub also wakes it at radio.next_event_ms().
    apply_env(env)   physical truth at now_ms: any of lux, temperature_c, humidity_rh,
                     tilt_deg, azimuth_deg, door_open, power_w, current_a, voltage_v, line_hz
                     (sim.devices.pole_peripherals.ENV_KEYS); a meter board (cfg kind
                     "meter"): power_w, phase_power_w, voltage_v, power_factor, line_hz
                     (sim.devices.meter_board.ENV_KEYS).
                     Energy is integrated at the previous power up to now_ms first.
    outputs() -> {"dimmer_duty_u16": int or None, "relay": 0/1 or None}
                     what the board drives (the world turns it into lamp power; a meter:
                     {"relay"} only)
    kind             cfg kind: "pole" or "meter"
    truth()          a meter's physical truth: import_wh / export_wh that really flowed
                     while it metered, power_w flowing now, voltage_v
    power_cut(now_ms=None)
                     mains lost and back at now_ms: RTC memory, pins, uncommitted NVS writes and
                     the BL0942's counter are lost; the firmware boots again (cold)
    measured         what the firmware last reported about its sensors (dict or None)
    counters         {"boots", "soft_resets", "wdt_resets", "power_cuts", "crashes"}
    errors           list of (now_ms, repr(exception)) for firmware exceptions
    close()          release resources (VMBoard: stop the VM process)

A firmware exception escaping ``app.poll`` is what would crash the device's main loop; the
device's ``run()`` resets then, so the board records it, counts a crash and soft-resets
(``strict=True`` re-raises instead, for tests that want the traceback).
"""

import importlib.util
import os
import random

from firmware.ticks import TICKS_PERIOD, ticks_diff  # noqa: F401 - re-exported for the boards
from sim.devices.pole_board import REBOOT_MS, PoleBoard


_FAKES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")
_instances = 0


def ticks(ms):
    """Absolute virtual ms -> MicroPython ticks_ms value (what PoleBoard hands the firmware)."""
    return ms % TICKS_PERIOD


def load_fake(name, tag, machine=None):
    """A fresh, private copy of sim/fakes/<name>.py (own module object, own state). The machine
    fake's I2C and PWM (machine_i2c_pwm) are loaded the same way when first used, bound to the
    board's copy of machine."""
    path = os.path.join(_FAKES_DIR, name + ".py")
    spec = importlib.util.spec_from_file_location("sim.fakes._%s_%s" % (name, tag), path)
    mod = importlib.util.module_from_spec(spec)
    if machine is not None:
        mod.machine = machine
    spec.loader.exec_module(mod)
    if name == "machine":
        part = []

        def load_part():
            if not part:
                part.append(load_fake("machine_i2c_pwm", tag, machine=mod))
            return part[0]

        mod.load_part = load_part
    return mod


def default_app_factory(machine, esp32, cfg, radio, sleep_ms, rng=None):
    from firmware import main  # the firmware's create(); imported late on purpose
    return main.create(machine, esp32, cfg, radio, sleep_ms, rng=rng)


def radio_profile(cfg):
    """The radio wiring of the board that the (partial) firmware config cfg names, from the
    firmware's own table (firmware.radio_board.profile), or None for a Modbus-only meter: where
    sim.devices.pole_board.attach_radio solders the chip model. Computed on the host, so a
    board on the MicroPython VM gets it over the pipe instead of loading the table itself."""
    from firmware import config, radio_board

    full = config.defaults(cfg.get("kind", "pole"))
    full.update(cfg)
    return radio_board.profile(full["board"]) if radio_board.uses_radio(full) else None


def seeded_rng(seed, dev_eui):
    """The firmware's rng(n) -> 0..n-1 (join jitter, channel choice), per board and seed, so
    a simulation replays identically."""
    r = random.Random("%s/%s" % (seed, dev_eui))
    return lambda n: r.randrange(n) if n > 0 else 0


class Board:
    """The interface the hub uses (see the module docstring). Not usable by itself."""

    name = ""
    dev_eui = ""
    x = 0.0
    y = 0.0
    cfg = None
    radio = None
    now_ms = 0
    measured = None

    def boot(self, now_ms):
        raise NotImplementedError

    def poll(self, now_ms):
        raise NotImplementedError

    def apply_env(self, env):
        raise NotImplementedError

    def outputs(self):
        raise NotImplementedError

    def power_cut(self, now_ms=None):
        raise NotImplementedError

    def close(self):
        pass

    def next_wake_ms(self):
        """min(firmware wake, radio event): when the hub must poll this board next."""
        w = self._wake_ms
        r = self.radio.next_event_ms()
        if r is not None and (w is None or r < w):
            return r
        return w

    _wake_ms = None


class LocalBoard(PoleBoard, Board):
    """Runs the firmware in this CPython process with private copies of the fakes; time,
    lifecycle and hardware are sim.devices.pole_board.PoleBoard's, shared with the VM side.

    app_factory(machine, esp32, cfg, radio, sleep_ms) -> app with poll(now_ticks) -> wake_ticks
    (default: firmware.main.create with an rng seeded by seed and dev_eui). Every board loads
    its own ``machine`` and ``esp32`` module
    objects, so pins, buses, RTC memory and NVS flash are per board. firmware.* and protocol.*
    modules are shared: they keep only caches keyed by key and per-call scratch buffers at
    module level, which is safe single-threaded.
    """

    def __init__(self, name, dev_eui, cfg, x=0.0, y=0.0, app_factory=None, strict=False,
                 epoch_s=1767225600, seed=0, radio_fault=None):
        global _instances
        from sim.sim_radio import SimRadio

        _instances += 1
        tag = "%d" % _instances
        self.name = name
        self.dev_eui = dev_eui.upper()
        self.x, self.y = float(x), float(y)
        self.epoch_s = epoch_s  # virtual UTC (unix seconds) at virtual time 0
        if app_factory is None:
            rng = seeded_rng(seed, self.dev_eui)
            app_factory = lambda *a: default_app_factory(*a, rng=rng)  # noqa: E731
        self.app_factory = app_factory
        machine = load_fake("machine", tag)
        machine.UNIQUE_ID = bytes.fromhex(self.dev_eui)[2:]  # ESP32 base MAC: 6 bytes, per board
        self.radio = SimRadio(name)
        cfg = dict(cfg)
        PoleBoard.__init__(self, machine, load_fake("esp32", tag), cfg, radio_profile(cfg),
                           strict, epoch_s, radio_fault)
        hw = self.hardware  # the chips by name, for tests and the world (same objects for life)
        self.wiring = hw.wiring
        if self.kind == "meter":
            self.chip = hw.chip  # the ATM90E32
        else:
            self.veml, self.sht, self.lis, self.meter = hw.veml, hw.sht, hw.lis, hw.meter

    @property
    def kind(self):
        return self.cfg.get("kind", "pole")

    def time_moved(self):
        self.radio.now_ms = self.clock()

    @property
    def energy_counts(self):
        """A pole's BL0942 CF_CNT (true energy pulses since its last reset)."""
        return self.meter.cf_cnt

    def truth(self):
        """A meter's physical truth: energy that really flowed (Wh floats), the load now."""
        return self.hardware.truth()

    @property
    def measured(self):
        return self.last_measured()

    @property
    def nvs_flash(self):
        """The board's NVS partition (committed data), e.g. for isolation tests."""
        return self.esp32.FLASH.data

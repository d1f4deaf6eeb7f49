"""Emulated street-pole boards: the Board protocol the simulator hub drives, and LocalBoard.

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
                     tilt_deg, azimuth_deg, door_open, power_w, current_a, voltage_v, line_hz.
                     Energy is integrated at the previous power up to now_ms first.
    outputs() -> {"dimmer_duty_u16": int or None, "relay": 0/1 or None}
                     what the board drives (the world turns it into lamp power)
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

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD >> 1
REBOOT_MS = 300  # an ESP32 takes a few hundred ms from reset to running main.py

_FAKES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")
_instances = 0


def ticks(ms):
    """Absolute virtual ms -> MicroPython ticks_ms value."""
    return ms & TICKS_MASK


def ticks_diff(a, b):
    """MicroPython time.ticks_diff(a, b) for ticks_ms values."""
    return ((a - b + _HALF) & TICKS_MASK) - _HALF


def load_fake(name, tag):
    """A fresh, private copy of sim/fakes/<name>.py (own module object, own state)."""
    path = os.path.join(_FAKES_DIR, name + ".py")
    spec = importlib.util.spec_from_file_location("sim.fakes._%s_%s" % (name, tag), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def default_app_factory(machine, esp32, cfg, radio, sleep_ms, rng=None):
    from firmware import main  # the firmware's create(); imported late on purpose
    return main.create(machine, esp32, cfg, radio, sleep_ms, rng=rng)


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


# pin / bus defaults of the contract, used when cfg does not name them
_DEFAULT_WIRING = {"i2c_id": 0, "uart_id": 2, "dimmer_pin": 25, "relay_pin": 26, "door_pin": 27}
_ADDR_VEML = 0x10
_ADDR_SHT = 0x44
_ADDR_LIS = 0x18


class LocalBoard(Board):
    """Runs the firmware in this CPython process with private copies of the fakes.

    app_factory(machine, esp32, cfg, radio, sleep_ms) -> app with poll(now_ticks) -> wake_ticks
    (default: firmware.main.create with an rng seeded by seed and dev_eui). Every board loads
    its own ``machine`` and ``esp32`` module
    objects, so pins, buses, RTC memory and NVS flash are per board. firmware.* and protocol.*
    modules are shared: they keep only caches keyed by key and per-call scratch buffers at
    module level, which is safe single-threaded.
    """

    def __init__(self, name, dev_eui, cfg, x=0.0, y=0.0, app_factory=None, strict=False,
                 epoch_s=1767225600, seed=0):
        global _instances
        from sim.devices.bl0942 import BL0942
        from sim.devices.lis3dh import LIS3DH
        from sim.devices.sht3x import SHT3x
        from sim.devices.veml7700 import VEML7700
        from sim.sim_radio import SimRadio

        _instances += 1
        tag = "%d" % _instances
        self.name = name
        self.dev_eui = dev_eui.upper()
        self.cfg = dict(cfg)
        self.x, self.y = float(x), float(y)
        self.strict = strict
        self.epoch_s = epoch_s  # virtual UTC (unix seconds) at virtual time 0
        if app_factory is None:
            rng = seeded_rng(seed, self.dev_eui)
            app_factory = lambda *a: default_app_factory(*a, rng=rng)  # noqa: E731
        self.app_factory = app_factory
        self.machine = load_fake("machine", tag)
        self.esp32 = load_fake("esp32", tag)
        eui = bytes.fromhex(self.dev_eui)
        self.machine.UNIQUE_ID = eui[2:]  # ESP32 base MAC: 6 bytes, per board
        self.radio = SimRadio(name)
        self.now_ms = 0
        self._slept = 0
        self.machine.set_clock(self._clock)
        if hasattr(self.machine, "set_epoch"):
            self.machine.set_epoch(epoch_s)
        w = dict(_DEFAULT_WIRING)
        for k in w:
            if k in self.cfg:
                w[k] = self.cfg[k]
        self.wiring = w
        self.veml = VEML7700(lux=0.0, clock=self._clock)
        self.sht = SHT3x(clock=self._clock)
        self.lis = LIS3DH()
        self.meter = BL0942()
        bus = self.machine.bus(w["i2c_id"])
        bus.attach(_ADDR_VEML, self.veml)
        bus.attach(_ADDR_SHT, self.sht)
        bus.attach(_ADDR_LIS, self.lis)
        if hasattr(self.machine, "uart"):
            self.machine.uart(w["uart_id"]).attach(self.meter)
        self._meter_ms = 0
        self.door_open = False
        self.app = None
        self._wake_ms = None
        self.counters = {"boots": 0, "soft_resets": 0, "wdt_resets": 0, "power_cuts": 0,
                         "crashes": 0}
        self.errors = []

    # ---- time -------------------------------------------------------------------------

    def _clock(self):
        return self.now_ms + self._slept

    def _sleep_ms(self, ms):
        """Injected into drivers that must wait (e.g. SHT3x conversion): virtual time passes."""
        if ms > 0:
            self._slept += int(ms)
            self.radio.now_ms = self._clock()

    def _set_now(self, now_ms):
        now_ms = int(now_ms)
        if now_ms < self._clock():
            now_ms = self._clock()  # a board cannot go back in time (it slept inside a poll)
        self._advance_meter(now_ms)
        self.now_ms = now_ms
        self._slept = 0
        self.radio.now_ms = now_ms

    def _advance_meter(self, now_ms):
        if now_ms > self._meter_ms:
            self.meter.advance((now_ms - self._meter_ms) / 1000.0)
            self._meter_ms = now_ms

    # ---- lifecycle --------------------------------------------------------------------

    def boot(self, now_ms):
        self._set_now(now_ms)
        self.radio.power_off()  # the firmware initialises the transceiver
        self.drive_door()
        self.counters["boots"] += 1
        self.app = None
        self._wake_ms = self.now_ms
        try:
            self.app = self.app_factory(self.machine, self.esp32, self.cfg, self.radio,
                                        self._sleep_ms)
        except self.machine.ResetRequested:
            return self._soft_reset()
        except Exception as e:
            return self._crash(e)
        return self._wake_ms

    def poll(self, now_ms):
        self._set_now(now_ms)
        if self.app is None:
            return self.boot(self.now_ms)
        t0 = ticks(self.now_ms)
        try:
            wake = self.app.poll(t0)
        except self.machine.ResetRequested:
            return self._soft_reset()
        except Exception as e:
            return self._crash(e)
        if self.machine.wdt_expired():
            self.counters["wdt_resets"] += 1
            return self._soft_reset(self.machine.WDT_RESET)
        self._wake_ms = max(self.now_ms + ticks_diff(wake, t0), self._clock())
        return self._wake_ms

    def _soft_reset(self, cause=None):
        self.counters["soft_resets"] += 1
        self.machine.soft_reset(cause or self.machine.SOFT_RESET)
        self.esp32.power_cut()  # NVS handles of the old boot die; committed data stays
        # The chip restarts after its boot time; the next poll boots the firmware. Booting here
        # directly would recurse without bound when the firmware crashes while booting.
        self.app = None
        self._wake_ms = self._clock() + REBOOT_MS
        return self._wake_ms

    def _crash(self, exc):
        self.counters["crashes"] += 1
        self.errors.append((self.now_ms, repr(exc)))
        if self.strict:
            raise exc
        return self._soft_reset()

    def power_cut(self, now_ms=None):
        self.counters["power_cuts"] += 1
        if now_ms is not None:
            self._set_now(now_ms)
        self.machine.power_cut()
        self.esp32.power_cut()
        self.meter.power_cycle()
        self.veml.__init__(lux=self.veml.lux, clock=self._clock)
        self.sht.__init__(self.sht.temperature, self.sht.humidity, clock=self._clock)
        tilt, az = self.lis.tilt_deg, self.lis.azimuth_deg
        self.lis.__init__(tilt, az)
        return self.boot(self.now_ms)

    # ---- physical world ---------------------------------------------------------------

    def apply_env(self, env):
        if "now_ms" in env:
            self._set_now(env["now_ms"])
        else:
            self._advance_meter(self._clock())
        if "lux" in env:
            self.veml.lux = float(env["lux"])
        if "temperature_c" in env:
            self.sht.temperature = float(env["temperature_c"])
        if "humidity_rh" in env:
            self.sht.humidity = float(env["humidity_rh"])
        if "tilt_deg" in env:
            self.lis.tilt_deg = float(env["tilt_deg"])
        if "azimuth_deg" in env:
            self.lis.azimuth_deg = float(env["azimuth_deg"])
        if "power_w" in env:
            self.meter.power = float(env["power_w"])
        if "current_a" in env:
            self.meter.current = float(env["current_a"])
        if "voltage_v" in env:
            self.meter.voltage = float(env["voltage_v"])
        if "line_hz" in env:
            self.meter.line_hz = float(env["line_hz"])
        if "door_open" in env:
            self.door_open = bool(env["door_open"])
            self.drive_door()

    def drive_door(self):
        # switch opens when the door opens; the pin is pulled up -> 1 = open
        self.machine.drive(self.wiring["door_pin"], 1 if self.door_open else 0)

    def outputs(self):
        relay = self.machine.level(self.wiring["relay_pin"])
        return {"dimmer_duty_u16": self.machine.pwm_duty(self.wiring["dimmer_pin"]),
                "relay": relay}

    @property
    def energy_counts(self):
        """The BL0942's CF_CNT (true energy pulses since its last reset)."""
        return self.meter.cf_cnt

    @property
    def measured(self):
        app = self.app
        if app is None:
            return None
        if hasattr(app, "last_report"):  # firmware.pole.PoleApp
            return app.last_report
        return getattr(app, "measured", None)

    @property
    def nvs_flash(self):
        """The board's NVS partition (committed data), e.g. for isolation tests."""
        return self.esp32.FLASH.data

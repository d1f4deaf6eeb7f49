"""The emulated board inside the MicroPython VM: fakes, chip models and the firmware, driven over
JSON lines by sim/vmboard.py. Runs on MicroPython only (sim/mpvm/board.mjs starts it).

Why a second board implementation: LocalBoard runs the firmware on CPython; this one runs the
same firmware, fakes and register-level chip models on the real MicroPython VM, so integer,
bytes and memory behaviour are MicroPython's. The radio stays on the host: every radio call
the firmware makes goes to the host's SimRadio synchronously, so both boards share one radio
model. Time, chip wiring and resets follow sim.board.LocalBoard exactly.

Lines, one JSON object each (board.mjs reads a request, calls handle(), writes the reply;
`hostlink.call(line)` writes a line and returns the host's answer line, synchronously):
  host -> VM   {"op": NAME, ...}       init, boot, poll, env, power_cut, outputs, measured,
                                       energy, nvs, heap, eval
  VM -> host   {"call": FN, "args": [...], "now": ms}   a radio call at virtual ms `now`;
               the host answers {"ret": value} or {"err": text}
  VM -> host   {"ok": value, "now": ms, "counters": {...}, "errors": [[ms, repr], ...]}
               or {"fail": traceback}  (the op failed; the VM keeps serving)
Bytes travel as hex. The firmware's own prints go to the VM's stdout, which board.mjs keeps
out of this protocol.
"""

import gc
import json
import sys
from binascii import hexlify, unhexlify

import hostlink

import sim.fakes.esp32 as esp32
import sim.fakes.machine as machine

sys.modules["machine"] = machine  # firmware that imports them gets this board's fakes
sys.modules["esp32"] = esp32

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD >> 1

_WIRING = {"i2c_id": 0, "uart_id": 2, "dimmer_pin": 25, "relay_pin": 26, "door_pin": 27}
_ADDR_VEML = 0x10
_ADDR_SHT = 0x44
_ADDR_LIS = 0x18


def ticks_diff(a, b):
    return ((a - b + _HALF) & TICKS_MASK) - _HALF


class HostError(Exception):
    """The host could not carry out a radio call."""


def _host_call(fn, now, args=()):
    line = hostlink.call(json.dumps({"call": fn, "args": args, "now": now}))
    if line is None:
        raise SystemExit  # the host went away in the middle of a call
    reply = json.loads(line)
    if "err" in reply:
        raise HostError(reply["err"])
    return reply.get("ret")


class RadioProxy:
    """The firmware-facing radio driver; the transceiver model lives on the host."""

    def __init__(self, board):
        self._board = board

    def rssi(self, freq_hz):
        return _host_call("rssi", self._board.clock(), [freq_hz])

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data):
        _host_call("transmit", self._board.clock(),
                   [freq_hz, sf, bw_hz, power_dbm, hexlify(bytes(data)).decode()])

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        _host_call("receive", self._board.clock(), [freq_hz, sf, bw_hz, timeout_ms])

    def standby(self):
        _host_call("standby", self._board.clock())

    def poll(self):
        ev = _host_call("poll", self._board.clock())
        if ev is None:
            return None
        if ev[0] == "rx":
            return ("rx", unhexlify(ev[1]), ev[2], ev[3])
        return tuple(ev)


def _load_factory(spec):
    """"package.module:function" -> the function."""
    mod_name, fn = spec.split(":")
    mod = __import__(mod_name)
    for part in mod_name.split(".")[1:]:
        mod = getattr(mod, part)
    return getattr(mod, fn)


class VMSide:
    """One board: LocalBoard's time, wiring, lifecycle and physics, on MicroPython."""

    def __init__(self, msg):
        from sim.devices.bl0942 import BL0942
        from sim.devices.lis3dh import LIS3DH
        from sim.devices.sht3x import SHT3x
        from sim.devices.veml7700 import VEML7700

        self.cfg = msg["cfg"]
        self.strict = msg.get("strict", False)
        self.factory = _load_factory(msg.get("app", "firmware.main:create"))
        self.rng = None
        if msg.get("rng"):  # the host's seeded generator, so a run replays as on LocalBoard
            self.rng = lambda n: _host_call("rng", self.clock(), [n])
        machine.UNIQUE_ID = unhexlify(msg["dev_eui"])[2:]
        self.now_ms = 0
        self._slept = 0
        machine.set_clock(self.clock)
        if hasattr(machine, "set_epoch"):
            machine.set_epoch(msg.get("epoch_s", 1767225600))
        w = dict(_WIRING)
        for k in w:
            if k in self.cfg:
                w[k] = self.cfg[k]
        self.wiring = w
        self.veml = VEML7700(lux=0.0, clock=self.clock)
        self.sht = SHT3x(clock=self.clock)
        self.lis = LIS3DH()
        self.meter = BL0942()
        bus = machine.bus(w["i2c_id"])
        bus.attach(_ADDR_VEML, self.veml)
        bus.attach(_ADDR_SHT, self.sht)
        bus.attach(_ADDR_LIS, self.lis)
        if hasattr(machine, "uart"):
            machine.uart(w["uart_id"]).attach(self.meter)
        self._meter_ms = 0
        self.door_open = False
        self.radio = RadioProxy(self)
        self.app = None
        self.counters = {"boots": 0, "soft_resets": 0, "wdt_resets": 0, "power_cuts": 0,
                         "crashes": 0}
        self.errors = []  # not yet reported to the host

    # ---- time
    def clock(self):
        return self.now_ms + self._slept

    def sleep_ms(self, ms):
        if ms > 0:
            self._slept += int(ms)

    def set_now(self, now_ms):
        now_ms = int(now_ms)
        if now_ms < self.clock():
            now_ms = self.clock()
        self.advance_meter(now_ms)
        self.now_ms = now_ms
        self._slept = 0

    def advance_meter(self, now_ms):
        if now_ms > self._meter_ms:
            self.meter.advance((now_ms - self._meter_ms) / 1000.0)
            self._meter_ms = now_ms

    # ---- lifecycle
    def boot(self, now_ms):
        self.set_now(now_ms)
        _host_call("power_off", self.now_ms)  # the firmware initialises the transceiver
        self.drive_door()
        self.counters["boots"] += 1
        self.app = None
        try:
            if self.rng is None:
                self.app = self.factory(machine, esp32, self.cfg, self.radio, self.sleep_ms)
            else:
                self.app = self.factory(machine, esp32, self.cfg, self.radio, self.sleep_ms,
                                        rng=self.rng)
        except machine.ResetRequested:
            return self.soft_reset()
        except Exception as e:
            return self.crash(e)
        return self.now_ms

    def poll(self, now_ms):
        self.set_now(now_ms)
        if self.app is None:
            return self.boot(self.now_ms)
        t0 = self.now_ms & TICKS_MASK
        try:
            wake = self.app.poll(t0)
        except machine.ResetRequested:
            return self.soft_reset()
        except Exception as e:
            return self.crash(e)
        if machine.wdt_expired():
            self.counters["wdt_resets"] += 1
            return self.soft_reset(machine.WDT_RESET)
        return max(self.now_ms + ticks_diff(wake, t0), self.clock())

    def soft_reset(self, cause=None):
        self.counters["soft_resets"] += 1
        machine.soft_reset(cause or machine.SOFT_RESET)
        esp32.power_cut()  # NVS handles of the old boot die; committed data stays
        return self.boot(self.clock())

    def crash(self, exc):
        self.counters["crashes"] += 1
        self.errors.append([self.now_ms, repr(exc)])
        if self.strict:
            raise exc
        return self.soft_reset()

    def power_cut(self, now_ms=None):
        self.counters["power_cuts"] += 1
        if now_ms is not None:
            self.set_now(now_ms)
        machine.power_cut()
        esp32.power_cut()
        self.meter.power_cycle()
        self.veml.__init__(lux=self.veml.lux, clock=self.clock)
        self.sht.__init__(self.sht.temperature, self.sht.humidity, clock=self.clock)
        self.lis.__init__(self.lis.tilt_deg, self.lis.azimuth_deg)
        return self.boot(self.now_ms)

    # ---- physical world
    def apply_env(self, env):
        if "now_ms" in env:
            self.set_now(env["now_ms"])
        else:
            self.advance_meter(self.clock())
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
        machine.drive(self.wiring["door_pin"], 1 if self.door_open else 0)

    def outputs(self):
        return {"dimmer_duty_u16": machine.pwm_duty(self.wiring["dimmer_pin"]),
                "relay": machine.level(self.wiring["relay_pin"])}

    def measured(self):
        app = self.app
        if app is None:
            return None
        if hasattr(app, "last_report"):  # firmware.pole.PoleApp
            return app.last_report
        return getattr(app, "measured", None)


def _jsonable(value):
    """NVS blobs, tuples and bytes as JSON can carry them (bytes -> hex)."""
    if isinstance(value, (bytes, bytearray)):
        return hexlify(value).decode()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return dict((str(k), _jsonable(v)) for k, v in value.items())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)  # MicroPython's json would write the repr unquoted


def _traceback(exc):
    import io
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue()


def _handle(board, msg):
    op = msg["op"]
    if op == "boot":
        return board.boot(msg["now"])
    if op == "poll":
        return board.poll(msg["now"])
    if op == "env":
        return board.apply_env(msg["env"])
    if op == "power_cut":
        return board.power_cut(msg.get("now"))
    if op == "outputs":
        return _jsonable(board.outputs())
    if op == "measured":
        return _jsonable(board.measured())
    if op == "energy":
        return board.meter.cf_cnt
    if op == "nvs":
        return _jsonable(esp32.FLASH.data)
    if op == "heap":
        if msg.get("collect", True):
            gc.collect()
        return {"alloc": gc.mem_alloc(), "free": gc.mem_free()}
    if op == "eval":  # tests look inside the board
        scope = {"board": board, "app": board.app, "machine": machine, "esp32": esp32}
        return _jsonable(eval(msg["expr"], scope))
    raise ValueError("unknown op %r" % op)


_board = None


def handle(line):
    """Answer one request line with one reply line. board.mjs calls this from JS for every
    request, instead of running one long Python loop, because the WebAssembly port's GC can
    only reclaim objects once control is back in JS: inside a single long call nothing
    allocated would ever be freed."""
    global _board
    try:
        msg = json.loads(line)
        if msg["op"] == "init":
            _board = VMSide(msg)
            value = None
        else:
            value = _handle(_board, msg)
    except BaseException as e:  # noqa: B036 - reported to the host, which decides
        return json.dumps({"fail": _traceback(e)})
    reply = {"ok": value}
    if _board is not None:
        reply["now"] = _board.clock()
        reply["counters"] = _board.counters
        reply["errors"] = _board.errors
        _board.errors = []
    return json.dumps(reply)

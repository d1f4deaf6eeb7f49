"""The emulated board inside the MicroPython VM: fakes, chip models and the firmware, driven over
JSON lines by sim/vmboard.py. Runs on MicroPython only (sim/mpvm/board.mjs starts it).

Why a VM side: LocalBoard runs the firmware on CPython; this one runs the same board class
(firmware, fakes and register-level chip models) on the real MicroPython VM, so integer,
bytes and memory behaviour are MicroPython's. The radio stays on the host: every radio call
the firmware makes goes to the host's SimRadio synchronously, so both boards share one radio
model. Time, lifecycle, resets and the chips are sim.devices.pole_board.PoleBoard, the same
class as LocalBoard's.

Lines, one JSON object each (board.mjs reads a request, calls handle(), writes the reply;
`hostlink.call(line)` writes a line and returns the host's answer line, synchronously):
  host -> VM   {"op": NAME, ...}       init, boot, poll, env, power_cut, outputs, measured,
                                       energy, nvs, heap, eval
  VM -> host   {"call": FN, "args": [...], "now": ms}   a radio call at virtual ms `now`;
               the host answers {"ret": value} or {"err": text}
  VM -> host   {"ok": value, "now": ms, "counters": {...}, "errors": [[ms, repr], ...]}
               or {"fail": traceback}  (the op failed; the VM keeps serving)
Bytes travel as hex, via bytes.hex() / bytes.fromhex(): binascii is frozen Python on the
wasm VM and would hold 7 KB of heap. The firmware's own prints go to the VM's stdout, which
board.mjs keeps out of this protocol.
"""

import gc
import json
import sys

import hostlink

import sim.fakes.esp32 as esp32
import sim.fakes.machine as machine
from sim.devices.pole_board import PoleBoard

sys.modules["machine"] = machine  # firmware that imports them gets this board's fakes
sys.modules["esp32"] = esp32

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
    """The chip model's link to the medium (SimRadio's firmware-side methods); the SimRadio
    lives on the host, the chip model (sim/devices/sx1276.py, sx1262.py) and the firmware's
    driver in here."""

    def __init__(self, board):
        self._board = board

    def rssi(self, freq_hz):
        return _host_call("rssi", self._board.clock(), [freq_hz])

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data, airtime_us=None, lorawan=True):
        _host_call("transmit", self._board.clock(),
                   [freq_hz, sf, bw_hz, power_dbm, bytes(data).hex(), airtime_us,
                    lorawan])

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        _host_call("receive", self._board.clock(), [freq_hz, sf, bw_hz, timeout_ms])

    def standby(self):
        _host_call("standby", self._board.clock())

    def power_off(self):
        """Host side only (the board's boot), not part of the firmware's driver interface."""
        _host_call("power_off", self._board.clock())

    def poll(self):
        ev = _host_call("poll", self._board.clock())
        if ev is None:
            return None
        if ev[0] == "rx":
            return ("rx", bytes.fromhex(ev[1]), ev[2], ev[3])
        return tuple(ev)


def _load_factory(spec):
    """"package.module:function" -> the function."""
    mod_name, fn = spec.split(":")
    mod = __import__(mod_name)
    for part in mod_name.split(".")[1:]:
        mod = getattr(mod, part)
    return getattr(mod, fn)


class VMSide(PoleBoard):
    """One board on MicroPython: sim.devices.pole_board.PoleBoard (time, lifecycle, hardware,
    the same class LocalBoard is) with this VM's fakes and the host's radio and rng."""

    def __init__(self, msg):
        factory = _load_factory(msg.get("app", "firmware.main:create"))
        if msg.get("rng"):  # the host's seeded generator, so a run replays as on LocalBoard
            rng = lambda n: _host_call("rng", self.clock(), [n])  # noqa: E731
            self.app_factory = lambda *a: factory(*a, rng=rng)  # noqa: E731
        else:
            self.app_factory = factory
        machine.UNIQUE_ID = bytes.fromhex(msg["dev_eui"])[2:]
        self.radio = RadioProxy(self)
        PoleBoard.__init__(self, machine, esp32, msg["cfg"], msg.get("strict", False),
                           msg.get("epoch_s", 1767225600), msg.get("radio_fault"))


def _jsonable(value):
    """NVS blobs, tuples and bytes as JSON can carry them (bytes -> hex)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
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
        return _jsonable(board.hardware.outputs())
    if op == "measured":
        return _jsonable(board.last_measured())
    if op == "energy":
        return board.hardware.meter.cf_cnt
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
        if msg.get("peak"):  # nothing is freed until the reply: mem_alloc() then bounds the peak
            gc.disable()
        if msg["op"] == "init":
            _board = VMSide(msg)
            value = None
        else:
            value = _handle(_board, msg)
    except BaseException as e:  # noqa: B036 - reported to the host, which decides
        gc.enable()
        return json.dumps({"fail": _traceback(e)})
    reply = {"ok": value}
    if msg.get("peak"):
        reply["peak"] = gc.mem_alloc()
        gc.enable()
    if _board is not None:
        reply["now"] = _board.clock()
        reply["counters"] = _board.counters
        reply["errors"] = _board.errors
        _board.errors = []
    return json.dumps(reply)

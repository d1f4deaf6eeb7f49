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
  VM -> host   [FN, [args...], ms]      a radio call at virtual ms `ms` (a list: every other
               VM line is an object); the host answers [value], or a string: the error
  VM -> host   {"ok": value, "now": ms, "counters": {...}, "errors": [[ms, repr], ...]}
               or {"fail": traceback}  (the op failed; the VM keeps serving)
The "heap" op answers [alloc, free] (bytes). Bytes travel as hex, via bytes.hex() /
bytes.fromhex(): binascii is frozen Python on the wasm VM and would hold 7 KB of heap. The
firmware's own prints go to the VM's stdout, which board.mjs keeps out of this protocol.
The init request carries the board's radio wiring ("radio", sim.board.radio_profile, looked up
in the firmware's table on the host) and names the app factory, which is imported at the first
boot: before it nothing of the firmware but firmware.ticks is on the VM's heap.
"""

import gc
import json
import sys

import hostlink

import sim.fakes.esp32 as esp32
import sim.fakes.machine as machine
import sim.mpvm.cryptolib as cryptolib
from sim.devices.pole_board import PoleBoard

sys.modules["machine"] = machine  # firmware that imports them gets this board's fakes
sys.modules["esp32"] = esp32
sys.modules["cryptolib"] = cryptolib  # the ESP32's C module (AES on the host, off the heap)


def _host_call(fn, args=()):
    line = hostlink.call(json.dumps([fn, args, _board.clock()]))
    if line is None:
        raise SystemExit  # the host went away in the middle of a call
    reply = json.loads(line)
    if isinstance(reply, str):  # the host could not carry it out: the driver sees an error
        raise RuntimeError(reply)
    return reply[0]


# The chip model's link to the medium (SimRadio's firmware-side methods) is this module: the
# SimRadio lives on the host, the chip model (sim/devices/sx1276.py, sx1262.py) and the
# firmware's driver in here. Functions, not a proxy class: one board per VM, and a class and
# its instance would be heap for nothing.

def rssi(freq_hz):
    return _host_call("rssi", [freq_hz])


def transmit(freq_hz, sf, bw_hz, power_dbm, data, airtime_us=None, lorawan=True):
    _host_call("transmit", [freq_hz, sf, bw_hz, power_dbm, bytes(data).hex(), airtime_us,
                            lorawan])


def receive(freq_hz, sf, bw_hz, timeout_ms):
    _host_call("receive", [freq_hz, sf, bw_hz, timeout_ms])


def standby():
    _host_call("standby")


def power_off():
    """Host side only (the board's boot), not part of the firmware's driver interface."""
    _host_call("power_off")


def poll():
    ev = _host_call("poll")
    if ev is None:
        return None
    if ev[0] == "rx":
        return ("rx", bytes.fromhex(ev[1]), ev[2], ev[3])
    return tuple(ev)


def _find(name):
    """Raise ImportError unless module `name` is on sys.path, without importing it (nor `os`:
    it holds 1.4 KB on this VM)."""
    rel = "/" + name.replace(".", "/")
    for d in sys.path:
        for tail in (".mpy", ".py", "/__init__.mpy", "/__init__.py"):
            try:
                open(d + rel + tail, "rb").close()
                return
            except OSError:
                pass
    raise ImportError("no module named '%s'" % name)


class VMSide(PoleBoard):
    """One board on MicroPython: sim.devices.pole_board.PoleBoard (time, lifecycle, hardware,
    the same class LocalBoard is) with this VM's fakes and the host's radio, radio wiring and
    rng."""

    def __init__(self, msg):
        self._app = msg["app"]
        if not msg["rng"]:
            self._rng = None  # the firmware's own rng
        _find(self._app.split(":")[0])  # a missing app is an init error, not a crash loop
        machine.UNIQUE_ID = bytes.fromhex(msg["dev_eui"])[2:]
        self.radio = sys.modules[__name__]  # the radio link (rssi, transmit, ... above)
        PoleBoard.__init__(self, machine, esp32, msg["cfg"], msg["radio"], msg["strict"],
                           msg["epoch_s"], msg["radio_fault"])

    def app_factory(self, *args):
        """msg["app"] ("package.module:function"), imported at boot as the device's main.py
        imports it, so nothing of the firmware is on the heap before the board boots."""
        name, fn = self._app.split(":")
        mod = __import__(name)
        for part in name.split(".")[1:]:
            mod = getattr(mod, part)
        if self._rng:  # the host's seeded generator, so a run replays as on LocalBoard
            return getattr(mod, fn)(*args, rng=self._rng)
        return getattr(mod, fn)(*args)

    def _rng(self, n):
        return _host_call("rng", [n])


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
        return [gc.mem_alloc(), gc.mem_free()]
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
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        return json.dumps({"fail": buf.getvalue()})
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

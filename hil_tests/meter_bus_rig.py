"""The Modbus bus rig for hil_tests/test_meter_bus.py: one RS-485 bus of pseudo-terminals
(sim.rs485.PtyLink: end 0 is the master's, one end per meter process), emulated meters (the
real firmware slave and metering chain, `python -m sim meter`, several addresses per process on
one line model), and what those meters' truth is.

Why a rig of its own: the pole rig (rig.py) speaks LoRaWAN through forwarders; here the
gateway's serial port is the bus, meters are processes that are started, stopped and asked for
their own counters, and a reading is a Modbus poll (one record group per poll, by URN).
"""

import contextlib
import math
import os
import re
import subprocess
import sys
import time

from protocol.modbus import registers as regmap
from sim.devices.meter_board import VOLTS
from sim.rs485 import PtyLink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FREQUENCY_HZ = 50.0  # the chip model's mains frequency
POWER_FACTOR = 0.95  # the meter board's default load power factor

_STOPPED = re.compile(r"meter (\d+) stopped: (.*)")


class MeterProcess:
    """`python -m sim meter --serial PATH --address A,B.. --baud B --load-w WA,WB..
    --energy-step-wh S [extra]` until stop(); load_w: {address: W}.

    started/ready: monotonic times around the meters' boot (their load starts flowing and the
    energy counting starts between the two). counters: {address: the firmware slave's
    counters, the energy register's and the injected faults}, printed by the process at exit."""

    def __init__(self, path, load_w, baud, step_wh, *extra):
        self.load_w = {a: float(w) for a, w in load_w.items()}
        addresses = self.addresses = tuple(load_w)
        self.step_wh = step_wh
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "meter", "--serial", path,
             "--address", ",".join(str(a) for a in addresses), "--baud", str(baud),
             "--load-w", ",".join(repr(self.load_w[a]) for a in addresses),
             "--energy-step-wh", str(step_wh), *extra],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        for a in addresses:
            line = self.proc.stderr.readline()
            if not line.startswith("meter %d on " % a):
                self.proc.kill()
                raise RuntimeError("meter %d did not start: %r %s" % (a, line,
                                                                     self.proc.stderr.read()))
        self.ready = time.monotonic()
        self.counters = None

    def stop(self):
        """SIGTERM; {address: counters} from the process's last words."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.counters = {}
        for m in _STOPPED.finditer(err or ""):
            self.counters[int(m.group(1))] = {k: int(v) for k, v in
                                              (kv.split("=") for kv in m.group(2).split())}
        return self.counters


class MeterBus:
    """A pty bus: `master_path` for the gateway or another master, meter processes on the
    other ends. close() stops the meters, then the link."""

    def __init__(self, ends):
        self.link = PtyLink(ends)
        self.master_path = self.link.paths[0]
        self._free = list(self.link.paths[1:])
        self.processes = []
        self.meters = {}  # address -> its MeterProcess

    def start_meters(self, load_w, baud, step_wh=1, *extra):
        """One meter process on the next free end: load_w {address: W} (its meters, in
        order, with their constant loads)."""
        p = MeterProcess(self._free.pop(0), load_w, baud, step_wh, *extra)
        self.processes.append(p)
        for a in load_w:
            self.meters[a] = p
        return p

    def stop_meters(self):
        out = {}
        for p in self.processes:
            out.update(p.stop() or {})
        return out

    def close(self):
        try:
            self.stop_meters()
        finally:
            self.link.close()


@contextlib.contextmanager
def lone_meter(address, load_w, baud, step_wh=1, *extra):
    """One meter process alone on a pty pair (a master's own line to one meter): yields
    (the master's pty path, the MeterProcess); stops both at the end."""
    bus = MeterBus(2)
    try:
        yield bus.master_path, bus.start_meters({address: load_w}, baud, step_wh, *extra)
    finally:
        bus.close()


def bus_toml(name, port, baud, meters, **opts):
    """A [[modbus.bus]] table (gateway/modbus/config.py); meters: [(address, points,
    {meter options})]; opts: bus options (timeout_s, retries, poll_interval_s, ...)."""
    out = ["", "[[modbus.bus]]", 'name = "%s"' % name, 'kind = "rtu"', 'port = "%s"' % port,
           "baudrate = %d" % baud]
    out += ["%s = %r" % (k, v) for k, v in opts.items()]
    for address, points, mopts in meters:
        out += ["  [[modbus.bus.meter]]", "  address = %d" % address,
                "  points = [%s]" % ", ".join('"%s"' % p for p in points)]
        out += ["  %s = %r" % (k, v) for k, v in mopts.items()]
    return "\n".join(out) + "\n"


def polls(readings):
    """Every Modbus poll that reached the subscriber, in arrival order: dicts with bn, t (the
    poll's time, UNIX s), modbus (the record extension: bus, address, obis), records
    [(name, unit, value)], at (arrival, monotonic) and seq (the batch's)."""
    out = []
    with readings._lock:
        msgs = list(readings.msgs)
    for at, _topic, b in msgs:
        cur = None
        for r in b["records"]:
            if "modbus" in r:
                cur = {"bn": r[-2], "t": r[-3], "modbus": r["modbus"], "records": [],
                       "at": at, "seq": b["seq"]}
                out.append(cur)
            elif "lora" in r:
                cur = None  # a pole's uplink: not a poll
            if cur is not None:
                cur["records"].append((r[0], r[1], r[2]))
    return out


def expected_records(points):
    """[(SenML name, unit, register)] a poll of `points` carries, in register map order
    (gateway/modbus/readings.py: map order, measured registers only)."""
    want = set(points)
    return [(r.senml_name, r.senml_unit, r) for r in regmap.REGISTERS
            if r.name in want and r.senml_name]


class Truth:
    """What the emulated meter `address` with a constant load (`--load-w W`, split evenly over
    its 3 phases at power factor 0.95) served when it was polled at wall time t.

    Power and voltages are constants of the board. Energy: the load flows from the meter's boot
    (between the process's `started` and `ready`), so by t it drew W x (t - boot) / 3600 Wh;
    the meter serves its *committed* import, which trails that by less than one commit step
    (--energy-step-wh) plus what the chip counted since its last once-a-second metering step
    (run up to ~0.35 s late by the meter process when the line is idle) plus one Wh of
    flooring; and the poll's read of 0x1000 lands at most REPLY_S after the poll's time."""

    STEP_S = 1.0 + 0.35
    REPLY_S = 0.3

    def __init__(self, process, address, wall_minus_mono):
        self.p = process
        self.load_w = process.load_w[address]
        self.offset = wall_minus_mono

    def phase_power_w(self):
        return self.load_w / 3

    def commit_jump_wh(self):
        """Most whole Wh one commit can move the served import by: less than one step plus
        one metering step's energy."""
        return math.ceil(self.p.step_wh + self.load_w / 3600.0 * self.STEP_S)

    def import_wh_range(self, t_wall):
        mono = t_wall - self.offset
        per_s = self.load_w / 3600.0
        lo = per_s * (mono - self.p.ready - self.STEP_S) - self.p.step_wh - 1
        hi = per_s * (mono - self.p.started + self.REPLY_S)
        return max(0.0, lo), hi


def voltage(phase):
    return VOLTS[phase]

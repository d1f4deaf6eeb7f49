"""Emulated AMI meters on a real serial device: each meter's firmware (its Modbus RTU slave and
metering chain) on CPython with its own ESP32 fakes and meter board (sim/devices/meter_board.py),
all of them on one RS-485 line model (sim.rs485.Bus) joined to a pty or serial port, until
SIGTERM / SIGINT.

    python -m sim meter --serial /dev/pts/7 --address 3,4,5 --baud 9600 [--phases 3]
                        [--nvs meters.json] [--load-w 1000]

Typical use: `socat -d -d pty,raw,echo=0 pty,raw,echo=0` prints two pty paths; give one to the
meters and the other to a Modbus master (the gateway, pymodbus, mbpoll).

Why one process for several meters: on a real bus every slave hears every frame, the master's
and the other slaves' replies, and only the addressed one answers; one line model in one
process gives that exactly (separate processes on a relayed pty each re-pace what they
overhear from whenever the relay delivered it).

Each meter is a board of its own: machine and esp32 fakes loaded privately (sim.board.load_fake),
so pins, SPI, UART and NVS flash are per meter. Each runs the real meter firmware, booted by
firmware.main.create (cfg kind "meter", interfaces "modbus"): app.poll(ms) does the metering
step (the ATM90E32 chip model on SPI read by the real driver, EnergyRegister on NVS, the relay
GPIO), app.slave.poll(µs) the Modbus slave; the household load (Load) sets the chip's analogue
truth. Address and baud are provisioned in the config as a technician would; a Modbus write
changes them later and NVS keeps them (a warm boot from --nvs uses the stored ones).

Power cuts: with an NvsFile (--nvs FILE) every NVS commit is on disk atomically before commit()
returns, so SIGKILL is a power cut: the next run boots each meter from what it committed, and
the energy it serves is never below what it served before (EnergyRegister serves only
committed Wh).
"""

import errno
import os
import selectors
import signal
import sys
import termios
import time
import tty

from firmware import main
from firmware.meter_app import FIRMWARE_VERSION  # noqa: F401 - what the meters report
from firmware.ticks import TICKS_PERIOD, ticks_diff
from sim.board import load_fake
from sim.devices.meter_board import MeterPeripherals
from sim.rs485 import Bus, LineFaults, PacedLine
from sim.world import household_power_w

METERING_MS = 1000  # the meter application's step: read the chip, feed the energy register
DEFAULT_TURNAROUND_MS = 5  # processing time before a reply: real meters answer in ~4-45 ms
DEFAULT_ENERGY_STEP_WH = 50  # EnergyRegister commit step (the firmware's default)
SERIAL_BASE = 20260000  # serial number = SERIAL_BASE + the provisioned address
MS_TICKS = 1 << 30  # MicroPython ticks_ms period


class Load:
    """The household behind a meter: `env(t_s)` -> meter_board apply_env keys. constant_w None:
    household_power_w (varies; the default); a number: that net power (W, < 0 = export), split
    evenly over the phases, so a test knows the truth exactly."""

    def __init__(self, phases, constant_w=None):
        self.phases = phases
        self.constant_w = constant_w

    def env(self, t_s):
        if self.constant_w is not None:
            return {"power_w": float(self.constant_w)}
        return {"phase_power_w": household_power_w(t_s, self.phases)}


def meter_cfg(address, baud, phases, energy_step_wh=DEFAULT_ENERGY_STEP_WH):
    """The firmware config of an emulated Modbus meter (kind "meter", interfaces "modbus")."""
    return {"kind": "meter", "interfaces": "modbus", "phases": phases,
            "modbus_address": address, "modbus_baud": baud,
            "serial_number": SERIAL_BASE + address, "energy_step_wh": energy_step_wh}


class EmulatedMeter:
    """One meter: its own fakes, board (MeterPeripherals), firmware app and transceiver
    (PacedLine), on the time of `clock_us` (CPython µs, never wrapping). Put it on a Bus.

    name: its board name in an NvsFile ("meter-<address>"); nvs: an NvsFile or None."""

    _instances = 0

    def __init__(self, address=1, baud=9600, phases=3, turnaround_ms=DEFAULT_TURNAROUND_MS,
                 load=None, clock_us=None, faults=None, energy_step_wh=DEFAULT_ENERGY_STEP_WH,
                 nvs=None, name=None):
        EmulatedMeter._instances += 1
        tag = "meter%d" % EmulatedMeter._instances
        self._clock = clock_us or (lambda: time.monotonic_ns() // 1000)
        self.t = self._clock()  # the firmware's (and the line's) time: catches up with the clock
        self._t0 = self.t
        self.name = name or "meter-%d" % address
        self.machine = machine = load_fake("machine", tag)
        self.esp32 = load_fake("esp32", tag)
        machine.UNIQUE_ID = bytes([0x24, 0x6F, 0x28, 0xE0, address >> 8 & 0xFF, address & 0xFF])
        machine.set_clock(lambda: self.t // 1000)
        self.warm = nvs.attach(self.name, self.esp32.FLASH) if nvs is not None else False
        self.cfg = meter_cfg(address, baud, phases, energy_step_wh)
        self.load = load or Load(phases)
        self.hw = MeterPeripherals(machine, self.cfg, lambda: self.t // 1000)
        self.hw.chip_ms = self.t // 1000
        self.hw.apply_env(self.load.env(0.0))
        de_pin = self.hw.wiring["rs485_de_pin"]
        self.line = PacedLine(lambda: self.t, lambda: machine.level(de_pin) == 1,
                              lambda: (self.slave.line()[0], self.slave.char_bits), faults)
        self.faults = faults
        machine.uart(self.hw.wiring["rs485_uart_id"]).attach(self.line)
        self.app = main.create(machine, self.esp32, self.cfg, None, lambda ms: None)
        self.slave = self.app.slave
        self.slave.reply_delay_us = turnaround_ms * 1000
        self.source = self.app.source
        self._app_wake = None  # absolute ms at which the app wants to run again
        self.app_errors = 0
        self._poll_app(self.t)

    @property
    def address(self):
        return self.slave.address

    def _poll_app(self, t_us):
        now_ms = t_us // 1000
        self.hw.advance_meter(now_ms)
        if self._app_wake is not None and now_ms < self._app_wake:
            return
        self.hw.apply_env(self.load.env((t_us - self._t0) / 1e6))
        tick = now_ms % MS_TICKS
        try:
            wake = ticks_diff(self.app.poll(tick), tick)
        except Exception as e:  # noqa: BLE001 - as firmware.meter_loop.run_meter: log, count,
            self.app_errors += 1  # retry in 1 s; the other meters on the bus go on (a firmware bug)
            sys.stderr.write("meter %d: app.poll failed: %r\n" % (self.address, e))
            wake = METERING_MS
        self._app_wake = now_ms + max(1, wake)

    def ticks(self, now_us):
        return now_us % TICKS_PERIOD

    def poll_at(self, t):
        """Run the firmware at t (µs, >= its time); returns [(start, end, byte)] it put on the
        wire by then."""
        self.t = t
        self._poll_app(t)
        self.slave.poll(self.ticks(t))
        return self.line.take_sent_timed(t)

    def next_due(self):
        """When the firmware or the line next has something to do (None: waiting for bytes;
        the app's once-a-second step is not an event: it runs at the next poll after it is
        due, and run() polls at least every 100 ms). The sim does not poll an idle slave every
        character time as the device's loop (firmware.meter_loop) does: it knows when bytes
        arrive."""
        t = self.line.next_event()
        d = self.slave.due()
        if d is not None:
            d = self.t + (((d - self.ticks(self.t)) + TICKS_PERIOD // 2) % TICKS_PERIOD
                          - TICKS_PERIOD // 2)
            if t is None or d < t:
                t = d
        return t

    def truth(self):
        """What really flowed through this meter so far (Wh floats) and the load now."""
        return self.hw.truth()

    def counters(self):
        c = self.slave.counters()
        c["app_errors"] = self.app_errors
        c["commits"] = self.source.register.commits
        c["energy_import_wh"] = self.source.register.import_wh()
        c["energy_export_wh"] = self.source.register.export_wh()
        if self.faults is not None:
            c.update(injected_noise=self.faults.noisy, injected_silence=self.faults.silenced,
                     injected_garbage=self.faults.garbled)
        return c


def open_serial(path):
    """A raw, non-blocking fd on the serial device at `path` (a pty end or a real port)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # OSError names the path
    if os.isatty(fd):
        tty.setraw(fd, termios.TCSANOW)
    return fd


def build(addresses, baud, phases=3, turnaround_ms=DEFAULT_TURNAROUND_MS, faults=None,
          load_w=None, energy_step_wh=DEFAULT_ENERGY_STEP_WH, nvs=None, seed=0, clock_us=None):
    """A Bus with one EmulatedMeter per address. faults: None, or (noise, silence, garbage)
    rates: each meter gets its own LineFaults seeded from `seed` and its position. load_w:
    None (household loads), or a list of constant powers: one for all, or one per address."""
    meters = []
    for k, a in enumerate(addresses):
        lf = LineFaults(*faults, seed=seed + k) if faults else None
        w = None if load_w is None else load_w[k if len(load_w) > 1 else 0]
        meters.append(EmulatedMeter(a, baud, phases, turnaround_ms, load=Load(phases, w),
                                    clock_us=clock_us, faults=lf,
                                    energy_step_wh=energy_step_wh, nvs=nvs))
    return Bus(meters)


def run(path, addresses, baud, phases=3, turnaround_ms=DEFAULT_TURNAROUND_MS, ready=None,
        faults=None, load_w=None, energy_step_wh=DEFAULT_ENERGY_STEP_WH, nvs_path=None, seed=0):
    """Serve Modbus on `path` until SIGTERM / SIGINT; returns the exit status. `faults`: None
    for a clean line or (noise, silence, garbage) rates per reply."""
    from sim.nvs_file import NvsFile

    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    nvs = NvsFile(nvs_path) if nvs_path else None  # NvsFileError before anything is open
    fd = open_serial(path)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    bus = build(addresses, baud, phases, turnaround_ms, faults, load_w, energy_step_wh, nvs,
                seed)
    clock = bus.meters[0]._clock
    # select(2), not epoll: epoll's timeout is whole milliseconds rounded up, which made each
    # reply's last byte leave 0-1 ms late (measured by bench/modbus_bus.py); select takes µs
    sel = selectors.SelectSelector()
    sel.register(fd, selectors.EVENT_READ)
    pending = b""
    if ready:
        for m in bus.meters:
            ready("meter %d on %s at %d baud, %d phase(s)%s" % (
                m.address, path, m.slave.baud_code * 100, phases,
                ", warm boot from %s" % nvs.path if m.warm else ""))
    try:
        while not stop:
            pending += bus.advance(clock())
            if pending:
                try:
                    n = os.write(fd, pending)
                    pending = pending[n:]
                except BlockingIOError:
                    pass
            nxt = bus.next_due()
            timeout = 0.1 if nxt is None else min(max(0, nxt - clock()), 100000) / 1e6
            if pending:
                timeout = min(timeout, 0.001)
            for _key, _ev in sel.select(timeout):
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno != errno.EIO:  # EIO: the other end of the pty is closed now
                        raise
                    data = b""
                if data:
                    bus.from_host(data, clock())
                else:  # hung up (EIO, or EOF): readable for ever, so do not spin on it
                    time.sleep(0.05)
    finally:
        sel.close()
        os.close(fd)
        for s, h in old.items():
            signal.signal(s, h)
    for m in bus.meters:
        c = m.counters()
        sys.stderr.write("meter %d stopped: %s\n" % (m.address, " ".join(
            "%s=%d" % (k, c[k]) for k in sorted(c))))
    return 0

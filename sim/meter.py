"""One emulated AMI meter on a real serial device: the firmware's Modbus slave
(firmware/modbus_slave.py) on CPython with the ESP32 fakes, its UART wired through a paced
RS-485 line model (sim/rs485.py) to a pty or serial port, until SIGTERM / SIGINT.

    python -m sim meter --serial /dev/pts/7 --address 3 --baud 9600 [--phases 3]

Typical use: `socat -d -d pty,raw,echo=0 pty,raw,echo=0` prints two pty paths; give one to the
meter and the other to a Modbus master (the gateway, pymodbus, mbpoll).

Values come from the meter firmware's own chain: firmware.meter_source.MeterSource over the
ATM90E32 driver (SPI, on the chip's register model sim.devices.atm90e32) and the
EnergyRegister (NVS), stepped once a second; a simulated household load (household_power_w)
sets the chip's analogue truth, and the relay GPIO disconnects it. StandInMeterSource (a load
integrated in Python, no chip) remains for tests that want values without the chip.
"""

import errno
import math
import os
import selectors
import signal
import sys
import termios
import time
import tty

from firmware.drivers.atm90e32 import ATM90E32
from firmware.energy_register import EnergyRegister
from firmware.meter_source import MeterSource
from firmware.modbus_slave import ModbusSlave
from firmware.nvs_store import NvsStore
from firmware.ticks import TICKS_PERIOD
from protocol.modbus import registers as M
from sim.devices.atm90e32 import ATM90E32 as ATM90E32Chip
from sim.fakes import esp32, machine
from sim.rs485 import LineFaults, PacedLine

UART_ID = 1
UART_TX, UART_RX, DE_PIN = 17, 16, 4
SPI_ID, CS_PIN, RELAY_PIN = 2, 5, 26
VOLTS = (231.5, 233.0, 234.5)
METERING_MS = 1000  # the meter application's step: read the chip, feed the energy register
FIRMWARE_VERSION = (0, 4, 0)
DEFAULT_TURNAROUND_MS = 5  # processing time before a reply: real meters answer in ~4-45 ms


def household_power_w(t_s, phases, base_w=(800, 450, 300)):
    """Net active power per phase (W, < 0 = export) at t_s seconds: a slow swing plus a
    20 s ripple; L3 has rooftop PV that exports at times."""
    out = []
    for i in range(phases):
        base = base_w[i]
        p = base * (1.0 + 0.3 * math.sin(t_s / 600.0 + i) + 0.1 * math.sin(t_s / 20.0 + 2 * i))
        if i == 2:
            p -= 600 * max(0.0, math.sin(t_s / 900.0))
        out.append(p)
    return out


class ChipMetering:
    """The meter firmware's metering chain on the emulated board: the ATM90E32 register model on
    SPI, the real driver, EnergyRegister on NVS and MeterSource (the slave's data source),
    plus the household load that sets the chip's truth (zero while the relay is open)."""

    def __init__(self, phases, now_ms):
        self.phases = phases
        self.model = machine.spi(SPI_ID).attach(CS_PIN, ATM90E32Chip(voltage=VOLTS))
        chip = ATM90E32(machine.SPI(SPI_ID, 200000, polarity=1, phase=1),
                        machine.Pin(CS_PIN, machine.Pin.OUT), {"phases": phases})
        chip.configure()
        relay = machine.Pin(RELAY_PIN, machine.Pin.OUT, value=1)
        self.source = MeterSource(chip, EnergyRegister(esp32.NVS("energy")), relay)
        self._t0 = self._last = now_ms
        self._set_load(now_ms)
        self.source.update(now_ms % (1 << 30))

    def _set_load(self, now_ms):
        closed = machine.level(RELAY_PIN) == 1
        powers = household_power_w((now_ms - self._t0) / 1000.0, self.phases)
        for i in range(3):
            p = powers[i] if closed and i < self.phases else 0.0
            pf = 0.95 if p >= 0 else -0.97
            self.model.pf[i] = pf
            self.model.current[i] = abs(p) / (VOLTS[i] * abs(pf))

    def step(self, now_ms):
        """Advance the chip to now_ms and, once per METERING_MS, run the application's step."""
        if now_ms - self._last < METERING_MS:
            return
        self.model.advance((now_ms - self._last) / 1000.0)  # the last interval's load
        self._last = now_ms
        self._set_load(now_ms)  # the load now (the relay may have switched)
        self.source.update(now_ms % (1 << 30))


class StandInMeterSource:
    """A data source without the chip (household_power_w integrated in Python): W x ms summed in
    integers, Wh = sum // 3_600_000, split into import and export per phase."""

    def __init__(self, phases=3, clock_ms=None):
        self.phases = phases
        self._clock = clock_ms or (lambda: int(time.monotonic() * 1000))
        self._last = self._clock()
        self._t0 = self._last
        self._imp_wms = 0
        self._exp_wms = 0
        self._relay = True

    def _power_w(self, t_ms):
        if not self._relay:
            return [0] * self.phases
        return [int(p) for p in household_power_w((t_ms - self._t0) / 1000.0, self.phases)]

    def update(self, now_ms=None):
        now = self._clock() if now_ms is None else now_ms
        dt = now - self._last
        if dt > 0:
            for p in self._power_w(now):
                if p > 0:
                    self._imp_wms += p * dt
                else:
                    self._exp_wms -= p * dt
            self._last = now

    def measurements(self):
        self.update()
        powers = self._power_w(self._last)
        v = {"frequency": 50.0}
        total = 0.0
        for i, p in enumerate(powers):
            n = i + 1
            volts = 230.0 + 1.5 * n
            pf = 0.95 if p >= 0 else -0.97
            amps = abs(p) / (volts * abs(pf))
            v["voltage_l%d" % n] = volts
            v["current_l%d" % n] = round(amps, 3)
            v["power_l%d" % n] = float(p)
            v["power_factor_l%d" % n] = pf
            v["apparent_power_l%d" % n] = volts * amps
            total += p
        v["power"] = total
        v["power_factor"] = 0.95
        v["energy_import_wh"] = self._imp_wms // 3600000
        v["energy_export_wh"] = self._exp_wms // 3600000
        return v

    def relay_closed(self):
        return self._relay

    def set_relay(self, closed):
        self.update()
        self._relay = bool(closed)


class EmulatedMeter:
    """The meter's firmware slave + fakes + paced line, driven by a real (monotonic) clock.

    Address and baud are provisioned into the meter's NVS before boot, as a technician would;
    Modbus writes change them afterwards as on the device."""

    def __init__(self, address=1, baud=9600, phases=3, turnaround_ms=DEFAULT_TURNAROUND_MS,
                 source=None, clock_us=None, serial=None, faults=None):
        self._clock = clock_us or (lambda: time.monotonic_ns() // 1000)
        self.t = self._clock()  # the firmware's (and the line's) time: catches up with the clock
        store = NvsStore(esp32.NVS("modbus"))
        store.save("mb_addr", address)
        store.save("mb_baud", baud // 100)
        self.metering = None
        if source is None:
            self.metering = ChipMetering(phases, self.t // 1000)
            source = self.metering.source
        self.source = source
        self.line = PacedLine(lambda: self.t, lambda: machine.level(DE_PIN) == 1,
                              lambda: (self.slave.line()[0], self.slave.char_bits), faults)
        machine.uart(UART_ID).attach(self.line)
        uart = machine.UART(UART_ID, baud, tx=UART_TX, rx=UART_RX)
        de = machine.Pin(DE_PIN, machine.Pin.OUT, value=0)
        self.slave = ModbusSlave(uart, de, self.source, store=store,
                                 serial=serial if serial is not None else 20260000 + address,
                                 firmware=FIRMWARE_VERSION, reply_delay_us=turnaround_ms * 1000)

    def ticks(self, now_us):
        return now_us % TICKS_PERIOD

    def _poll_at(self, t):
        self.t = t
        if self.metering is not None:
            self.metering.step(t // 1000)
        self.slave.poll(self.ticks(t))
        return self.line.take_sent(t)

    def next_due(self):
        """When the firmware or the line next has something to do (None: waiting for bytes).
        The sim does not poll an idle slave every character time as the device's serve() does:
        it knows when bytes arrive."""
        t = self.line.next_event()
        d = self.slave.due()
        if d is not None:
            d = self.t + (((d - self.ticks(self.t)) + TICKS_PERIOD // 2) % TICKS_PERIOD
                          - TICKS_PERIOD // 2)
            if t is None or d < t:
                t = d
        return t

    def advance(self, now_us):
        """Run the firmware through every event up to now_us, each polled at its own instant
        (a byte's arrival, the end of t3.5, the end of a reply, DE's drop), so its timing is the
        wire's even when this process was scheduled late; returns the bytes it put on the wire."""
        out = bytearray()
        while True:
            t = self.next_due()
            if t is None or t > now_us:
                break
            out += self._poll_at(max(t, self.t))
        out += self._poll_at(max(now_us, self.t))
        return bytes(out)


def open_serial(path):
    """A raw, non-blocking fd on the serial device at `path` (a pty end or a real port)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # OSError names the path
    if os.isatty(fd):
        tty.setraw(fd, termios.TCSANOW)
    return fd


def run(path, address, baud, phases=3, turnaround_ms=DEFAULT_TURNAROUND_MS, ready=None,
        faults=None):
    """Serve Modbus on `path` until SIGTERM / SIGINT; returns the exit status. `faults`: a
    sim.rs485.LineFaults, or None for a clean line."""
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    fd = open_serial(path)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    meter = EmulatedMeter(address, baud, phases, turnaround_ms, faults=faults)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    pending = b""
    if ready:
        ready("meter %d on %s at %d baud, %d phase(s)" % (address, path, baud, phases))
    try:
        while not stop:
            pending += meter.advance(meter._clock())
            if pending:
                try:
                    n = os.write(fd, pending)
                    pending = pending[n:]
                except BlockingIOError:
                    pass
            nxt = meter.next_due()
            timeout = 0.1 if nxt is None else min(max(0, nxt - meter._clock()), 100000) / 1e6
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
                    time.sleep(0.05)
                    continue
                if data:
                    meter.line.from_host(data, meter._clock())
    finally:
        sel.close()
        os.close(fd)
        for s, h in old.items():
            signal.signal(s, h)
    c = meter.slave.counters()
    if faults is not None:
        c.update(injected_noise=faults.noisy, injected_silence=faults.silenced,
                 injected_garbage=faults.garbled)
    sys.stderr.write("meter %d stopped: %s\n" % (meter.slave.address, " ".join(
        "%s=%d" % (k, c[k]) for k in sorted(c))))
    return 0

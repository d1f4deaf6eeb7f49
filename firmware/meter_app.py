"""MeterApp: the AMI meter's application, poll-driven (`poll(now_ms) -> next_wake_ms`).

Metering. Every _STEP_MS (1 s: the ATM90E32's 16-bit read-clear energy registers must be read
well within their wrap) MeterSource.update reads the chip and moves the energy into the
EnergyRegister, which commits to NVS by step or period. Everything that leaves the meter -
Modbus 0x1000/0x1004, the LoRaWAN report - is the register's *committed* Wh, so after a power
cut at any instant the meter restarts at or above every value it ever gave out.

Alarms (fPort 21, confirmed, sent as soon as the bitmap changes, repeated every alarm_repeat_s
while unacknowledged; protocol METER_ALARMS), from what this board can tell:
  voltage_low / voltage_high  any phase outside voltage_low_v..voltage_high_v (cleared 4 V inside)
  load_limit   net import above load_limit_w (> 0) for _TRIP_STEPS consecutive seconds (not an
               inrush): the relay opens and stays open until a close command (fPort 70 or
               Modbus); the alarm clears when the relay closes
  relay_failure  the relay is open (and has been for _RELAY_SETTLE_STEPS) but a phase still
               carries current: welded contacts, the disconnect does not disconnect
  meter_error  the chip does not answer or cannot be configured (absent at boot, SPI fault);
               readings are then "not available" in frames, the committed energy is still served
  counter_reset  the chip lost its configuration while the ESP32 ran (brown-out): what it
               counted before is lost (bounded by one step). An event: held until an alarm frame
               carrying it was acknowledged (at once without LoRaWAN), then cleared.
power_failure cannot be told (the board dies with the supply). A relay change (any source) also
sends an alarm frame (its status carries relay_closed) without changing the bitmap.
The relay state (closed, open, open by the load limit) is kept in NVS: a power cut does not
reconnect a customer the utility disconnected (build_meter sets the pin from it at boot).

Reports (fPort 20) every report_interval_s +- report_jitter_s (firmware.report_timer); every
confirmed_report_every-th confirmed, as on the pole. Commands 60 reboot, 61 config, 70 relay,
71 meter_config, acked on fPort 22 with seq de-dup (firmware.command_port). Settings the network
changed are saved as JSON in NVS and restored at boot.
"""

from firmware.command_port import BAD_VALUE, FAILED, OK, PORT_CONFIG, PORT_REBOOT
from firmware.device_app import DeviceApp, encode_uplink
from firmware.ticks import Monotonic, ticks_add, ticks_diff
from firmware.voltage_alarm import voltage_alarm

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x

FIRMWARE_VERSION = (0, 4, 0)  # served at Modbus 0x2000 (identity)
_PORT_REPORT = const(20)
_PORT_ALARM = const(21)
_PORT_ACK = const(22)
_PORT_RELAY = const(70)
_PORT_METER_CONFIG = const(71)
COMMAND_PORTS = (PORT_REBOOT, PORT_CONFIG, _PORT_RELAY, _PORT_METER_CONFIG)
_STEP_MS = const(1000)
_TRIP_STEPS = const(5)  # seconds over the load limit before the relay opens (motor starts, inrush)
_RELAY_SETTLE_STEPS = const(2)  # the chip's RMS current needs a step to show an opened relay
_WELDED_MA = const(100)  # current through an open relay above this: relay_failure

# alarm bits (protocol/payload/layouts.py METER_ALARMS)
_A_VOLTAGE_LOW = const(1 << 1)
_A_VOLTAGE_HIGH = const(1 << 2)
_A_RELAY_FAILURE = const(1 << 8)
_A_LOAD_LIMIT = const(1 << 9)
_A_METER_ERROR = const(1 << 10)
_A_COUNTER_RESET = const(1 << 11)

# status bits (METER_STATUS)
_S_RELAY_CLOSED = const(1 << 0)
_S_VOLTAGE_LOW = const(1 << 3)
_S_VOLTAGE_HIGH = const(1 << 4)
_S_LOAD_LIMITED = const(1 << 5)
_S_METER_ERROR = const(1 << 6)
_S_ALARM = const(1 << 7)

# the relay state kept in NVS ("relay")
RELAY_OPEN = 0
RELAY_CLOSED = 1
_RELAY_LIMITED = const(2)  # opened by the load limit

_NEED_READING = const(_A_VOLTAGE_LOW | _A_VOLTAGE_HIGH | _A_RELAY_FAILURE)
_RTC_MAGIC = const(b"SGM1")


class MeterApp(DeviceApp):
    def __init__(self, hw, cfg, source, clock=None, rng=None, reset=None):
        DeviceApp.__init__(self, "meter", hw, cfg, COMMAND_PORTS, _RTC_MAGIC, clock, rng, reset)
        self.source = source
        self.slave = None  # main.create: ModbusSlave unless interfaces == "lorawan"
        self.voltage_low_mv = cfg["voltage_low_v"] * 1000
        self.voltage_high_mv = cfg["voltage_high_v"] * 1000
        self.load_limit_w = cfg["load_limit_w"]
        self.load_settings()
        stored = self._store.load("relay") if self._store is not None else None
        self.load_limited = stored == _RELAY_LIMITED and not source.relay_closed()
        self.relay_closed = source.relay_closed()
        self._relay_steps = _RELAY_SETTLE_STEPS  # steps since the relay last switched
        self._over = 0  # consecutive steps over the load limit
        self.meter_failed = False
        self._ok_before = False  # the previous step read the chip
        self._have_reading = False
        self.v_alarm = 0
        self._events = 0  # event alarms raised and not yet delivered
        self._events_sent = 0  # those in the last alarm frame queued
        self.v_min_mv = None  # lowest / highest phase voltage since the last report
        self.v_max_mv = None
        self._next_step = 0
        self.steps = 0
        self.step_errors = 0

    # -- persistence -----------------------------------------------------------------------

    def restore_settings(self, s):
        self.voltage_low_mv = s.get("v_low_mv", self.voltage_low_mv)
        self.voltage_high_mv = s.get("v_high_mv", self.voltage_high_mv)
        self.load_limit_w = s.get("load_w", self.load_limit_w)

    def own_settings(self):
        return {"v_low_mv": self.voltage_low_mv, "v_high_mv": self.voltage_high_mv,
                "load_w": self.load_limit_w}

    # -- relay -----------------------------------------------------------------------------

    def _watch_relay(self):
        """Notice a relay change from any source (a command, the load limit, a Modbus write):
        keep it in NVS, send an alarm frame with the new status, end a load-limit trip."""
        closed = self.source.relay_closed()
        if closed == self.relay_closed:
            return
        self.relay_closed = closed
        self._relay_steps = 0
        self._over = 0
        if closed:
            self.load_limited = False
        print("meter: relay %s%s" % ("closed" if closed else "open",
                                     " (load limit)" if self.load_limited else ""))
        if self._store is not None:
            self._store.save("relay", RELAY_CLOSED if closed else
                             _RELAY_LIMITED if self.load_limited else RELAY_OPEN)
        self.alarm.due = True

    def _load_limit(self):
        chip = self.hw.chip
        if (not self.load_limit_w or self.hw.relay is None or not self.relay_closed
                or chip.total_mw <= self.load_limit_w * 1000):
            self._over = 0
            return
        self._over += 1
        if self._over >= _TRIP_STEPS:
            print("meter: %d W over the load limit of %d W: relay opened"
                  % (chip.total_mw // 1000, self.load_limit_w))
            self.load_limited = True
            self.source.set_relay(False)
            self._watch_relay()

    # -- metering --------------------------------------------------------------------------

    def _step(self, now_ms):
        """Read the chip into the register (MeterSource), then judge the alarms."""
        chip = self.hw.chip
        resets = chip.resets
        self.steps += 1
        try:
            self.source.update(now_ms)
        except (OSError, ValueError) as e:
            if not self.meter_failed:
                print("meter: chip not readable: %s" % (e,))
            self.meter_failed = True
            self._ok_before = False
            self._have_reading = False
            self.step_errors += 1
            self.hw.register.poll(now_ms)  # energy waiting for its period still gets committed
        else:
            self.meter_failed = False
            # a chip found reset in this step was read before it was configured again: its
            # readings are not measurements (the next step's are)
            self._have_reading = chip.resets == resets
            if self._have_reading:
                self._track_voltage()
            elif self._ok_before:
                self._events |= _A_COUNTER_RESET  # the chip reset while we ran: counts were lost
            self._ok_before = True
        self._watch_relay()
        if self._relay_steps < _RELAY_SETTLE_STEPS:
            self._relay_steps += 1
        if self._have_reading:
            self._load_limit()
        self._evaluate_alarms()

    def _track_voltage(self):
        chip = self.hw.chip
        lo = hi = chip.mv[0]
        for i in range(1, chip.phases):
            v = chip.mv[i]
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        if self.v_min_mv is None or lo < self.v_min_mv:
            self.v_min_mv = lo
        if self.v_max_mv is None or hi > self.v_max_mv:
            self.v_max_mv = hi
        self.v_alarm = voltage_alarm(self.v_alarm, lo, hi, self.voltage_low_mv,
                                     self.voltage_high_mv, _A_VOLTAGE_LOW, _A_VOLTAGE_HIGH)

    def _evaluate_alarms(self):
        a = self._events
        if self.meter_failed:
            # what needs a reading keeps its state while there is none
            a |= _A_METER_ERROR | (self.alarm.bits & _NEED_READING)
        else:
            a |= self.v_alarm
            if not self.relay_closed and self._relay_steps >= _RELAY_SETTLE_STEPS:
                chip = self.hw.chip
                for i in range(chip.phases):
                    if chip.ma[i] > _WELDED_MA:
                        a |= _A_RELAY_FAILURE
        if self.load_limited:
            a |= _A_LOAD_LIMIT
        self.alarm.update(a)

    def status(self):
        s = 0
        if self.relay_closed:
            s |= _S_RELAY_CLOSED
        a = self.alarm.bits
        if a & _A_VOLTAGE_LOW:
            s |= _S_VOLTAGE_LOW
        if a & _A_VOLTAGE_HIGH:
            s |= _S_VOLTAGE_HIGH
        if self.load_limited:
            s |= _S_LOAD_LIMITED
        if self.meter_failed:
            s |= _S_METER_ERROR
        if a:
            s |= _S_ALARM
        return s

    # -- frames ----------------------------------------------------------------------------

    def _reading(self):
        """(voltage L1 V, net power W, power factor, Hz) of the last step, None if unavailable."""
        if not self._have_reading:
            return None, 0, None, None
        chip = self.hw.chip
        va = 0.0
        for i in range(chip.phases):
            va += chip.mv[i] * chip.ma[i] / 1e6
        pf = None if va < 1.0 else chip.total_mw / 1000 / va
        return chip.mv[0] / 1000, chip.total_mw / 1000, pf, chip.centi_hz / 100

    def _send_report(self):
        reg = self.hw.register
        v, p, pf, hz = self._reading()
        f = {"status": self.status(), "import_energy": reg.import_wh(),
             "export_energy": reg.export_wh(), "active_power": p, "voltage": v,
             "power_factor": pf, "frequency": hz}
        port, data = encode_uplink("meter", "report", f)
        self.queue_report(port, data, f)
        self.v_min_mv = self.v_max_mv = None  # the alarm's min/max are "since the last report"

    def _send_alarm(self):
        v, p, _, _ = self._reading()
        chip = self.hw.chip
        amps = None
        if self._have_reading:
            ma = 0
            for i in range(chip.phases):
                if chip.ma[i] > ma:
                    ma = chip.ma[i]
            amps = ma / 1000
        f = {"alarms": self.alarm.bits, "alarm_count": self.alarm.count,
             "status": self.status(), "voltage": v,
             "voltage_min": None if self.v_min_mv is None else self.v_min_mv / 1000,
             "voltage_max": None if self.v_max_mv is None else self.v_max_mv / 1000,
             "current": amps, "active_power": p}
        port, data = encode_uplink("meter", "alarm", f)
        if self.alarm.send(self.mac, port, data):
            self._events_sent = self.alarm.bits & self._events
            self.last_alarm = f

    def _on_result(self, tag, acked):
        DeviceApp._on_result(self, tag, acked)
        if tag == "alarm" and acked and self._events_sent:
            self._events &= ~self._events_sent  # delivered: the event alarm clears
            self._events_sent = 0
            self._evaluate_alarms()

    # -- commands --------------------------------------------------------------------------

    def execute_command(self, port, f):
        mono = self._mono.ms
        if port == _PORT_RELAY:
            if self.hw.relay is None:
                return FAILED  # a board without a disconnect relay (relay_pin null)
            self.source.set_relay(f["action"] == "close")
            self._watch_relay()
            self._evaluate_alarms()
        elif port == _PORT_METER_CONFIG:
            lo, hi = f["voltage_low"], f["voltage_high"]
            lo = self.voltage_low_mv if lo is None else int(lo * 1000 + 0.5)
            hi = self.voltage_high_mv if hi is None else int(hi * 1000 + 0.5)
            if lo >= hi:
                return BAD_VALUE
            self.voltage_low_mv, self.voltage_high_mv = lo, hi
            if f["load_limit"] is not None:
                self.load_limit_w = f["load_limit"]
            self.save_settings()
        elif port == PORT_CONFIG:
            self.config_command(f, mono)
        elif port == PORT_REBOOT:
            self.reboot_command(f, mono)
        return OK

    # -- the loop --------------------------------------------------------------------------

    def poll(self, now_ms):
        clock = self._clock
        clock.start(now_ms)
        if self._mono is None:
            self._mono = Monotonic(now_ms)
        mono = self._mono.update(now_ms)
        self._supervise(mono)
        if mono >= self._next_step:
            self._step(now_ms)
            self._next_step += _STEP_MS
            if self._next_step <= mono:
                self._next_step = mono + _STEP_MS  # steps missed (a long block): no catching up
        if self.mac is None:
            self.alarm.due = False  # Modbus only: the state is kept, there is no uplink
            self._events = 0
        else:
            if self.alarm.poll(mono):
                self._send_alarm()
            if self.report_timer.due(mono):
                self._send_report()
                self.report_timer.schedule(mono)
        if self._reboot.due(mono, self.mac):
            self._reset()  # machine.reset() does not return
        # the chip reads took time: the MAC transmits and opens its windows at true instants
        now_ms = clock.now()
        mono = self._mono.update(now_ms)
        best = None
        if self.mac is not None:
            best = self.mac.poll(now_ms)
        wake = self.network_wake(mono, self._next_step, self.mac is not None)
        if wake <= mono:
            wake = mono + 1
        w = self._mono.to_ticks(wake, now_ms)
        if best is None or ticks_diff(w, best) < 0:
            best = w
        if ticks_diff(best, now_ms) <= 0:
            best = ticks_add(now_ms, 1)
        return best

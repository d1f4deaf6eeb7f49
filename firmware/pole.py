"""PoleApp: the smart street pole's application, poll-driven (`poll(now_ms) -> next_wake_ms`).

Safe state. The lamp is switched ON at default_level in the constructor, before the radio,
the sensors or the network can fail: a dark street is the unsafe failure, a lamp burning for
one sample interval in daylight costs a few watt-hours. From the first sample on, the
photocell decides until a schedule and the wall clock are both available; if the light sensor
fails the pole counts it as dark (lamp on) and raises light_sensor_failure.

Who decides the level, first match wins:
  1. override (fPort 52) until it expires or is cancelled;
  2. the schedule (fPort 51) when the wall clock is known (RTC year >= 2020; the MAC asks the
     network's time - DeviceTimeReq - after a join, while it is unknown, e.g. after a power
     cut on a board without RTC battery, and once a day) and every anchor
     it uses resolves: an entry holds from its time until the next entry's (cyclic over the
     local day); fixed entries are local minutes (UTC + utc_offset), sunset/sunrise entries are
     offsets from the solar calculation (firmware/solar.py) when latitude/longitude are set,
     else from the dusk/dawn this photocell last observed (transitions after a state that held
     for 2 h); entries are checked at each poll,
     so transitions happen within one sample interval;
  3. the photocell with hysteresis: dark below photocell_on, light above photocell_off;
     dark -> default_level, light -> off.
A dim command (fPort 50) replaces that level until the deciding source moves on (the next
schedule entry, the photocell flipping, an override). Changes use default_fade unless the
command brings its own fade.

The network side (reports with jitter, alarm frames and their repetition, commands acked once
with seq de-dup, reboot, fPort 61 config, settings in NVS) is firmware/device_app.py's, shared
with the meter (firmware/meter_app.py).

Commands are acknowledged on fPort 12 with the echoed seq and a result code. The last
(seq, result) per fPort is kept in RTC memory (it survives machine.reset(), so a repeated
reboot command cannot reboot the pole twice): a repeat is acked with the stored result and
not executed again. Settings changed by the network (pole_config, config, schedule) are saved
as JSON in NVS namespace "pole" and restored at boot.

Reports (fPort 10) every report_interval_s +- report_jitter_s (uniform, the jitter at most half
the interval; each gap drawn anew, so the mean interval holds), the first one right after boot
(the MAC sends it 0..first_uplink_jitter_s after its join or resumed session). The jitter comes
from the device's random generator (the MAC's: seeded by the DevEUI and, on the ESP32,
hardware entropy), so poles whose schedules happen to line up do not collide on every
report. Every
confirmed_report_every-th one is confirmed, so a session the network has lost (the pole keeps
its session across reboots) ends in failed confirmed uplinks and a new join. Sampling every
sample_interval_s. Lamp energy is the BL0942 accumulator on top of the total saved in NVS;
the total is saved before each report that carries a new value, so a reported energy never
goes backwards across power cuts (energy since the last save may be lost, undercounted, never
double counted).

Alarms (fPort 11, confirmed, sent as soon as the bitmap changes, raised or cleared): tilted
(above tilt_threshold, 1 deg hysteresis), door_open (debounced), lamp_failure (the lamp is
commanded on, settled for lamp_settle_s, and draws under lamp_fail_ma; kept through a level
change while it settles, cleared when the lamp is switched off), day_burner (the lamp
is lit - commanded on or drawing current - while the light sensor reads at least
day_burner_lux and no override or dim asked for light), light_sensor_failure, meter_failure,
voltage_low / voltage_high (the supply outside voltage_low_v..voltage_high_v, defaults 207 and
253 V = 230 V +-10 % as EN 50160; cleared 4 V inside), power_low / power_high (the lamp,
commanded on and settled, draws under power_low_pct or over power_high_pct of what its level
should draw, lamp_rated_w x level; cleared 5 points inside; power_low not while lamp_failure
says the lamp draws nothing; lamp_rated_w 0 = no power alarms). A threshold alarm keeps its
state while the meter cannot tell (meter failure, lamp fading or settling); power alarms
clear when the lamp is switched off.
While the last alarm frame is unacknowledged by the network it is resent every
alarm_repeat_s (0 = never).

Every report and alarm is one snapshot of the lamp: its dim_level and status lamp_on are the
level the lamp was at when the meter reading it carries (lamp_power, lamp_current,
supply_voltage) was taken, and that reading was taken with the lamp steady at that level. A
frame that falls due while the lamp changes (in the poll whose sample flips the photocell, after
a dim command, during a fade) waits until the lamp is steady - lamp_settle_s after the change
and its fade for a lit level (a driver's soft start, an HID strike), 1 s after switching off
(the relay stops the current at once; the BL0942 updates its RMS every 800 ms) - then the meter
is read again, the alarms judged on that reading, and the frame sent. So a dashboard never sees
"off" with the watts of the moment before, and the report describes the lamp as it is now, not
as it was before a decision. The wait ends at the steady instant of the change that delayed the
frame: if the lamp changes again meanwhile the frame goes then, with the last reading and the
level it was taken at (consistent, only not settled). The boot's safe state is not waited for
(there is no earlier state to mix with; the first reading may show the lamp still warming up).
Energy is cumulative and read with every reading, so it is unaffected.
"""

from firmware.device_app import DeviceApp, encode_uplink
from firmware.ticks import Monotonic, ticks_add, ticks_diff
from firmware.utc_date import datetime_tuple, day_of_year
from firmware.voltage_alarm import voltage_alarm

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_PORT_REPORT = const(10)
_PORT_ALARM = const(11)
_PORT_ACK = const(12)
_PORT_DIM = const(50)
_PORT_SCHEDULE = const(51)
_PORT_OVERRIDE = const(52)
_PORT_POLE_CONFIG = const(53)
_PORT_REBOOT = const(60)
_PORT_CONFIG = const(61)
COMMAND_PORTS = (_PORT_DIM, _PORT_SCHEDULE, _PORT_OVERRIDE, _PORT_POLE_CONFIG, _PORT_REBOOT,
                 _PORT_CONFIG)

# alarm bits (protocol/payload/layouts.py POLE_ALARMS)
_A_LAMP_FAILURE = const(1 << 0)
_A_DAY_BURNER = const(1 << 3)
_A_DOOR_OPEN = const(1 << 7)
_A_TILTED = const(1 << 8)
_A_VOLTAGE_LOW = const(1 << 10)
_A_VOLTAGE_HIGH = const(1 << 11)
_A_POWER_LOW = const(1 << 12)
_A_POWER_HIGH = const(1 << 13)
_A_LIGHT_SENSOR = const(1 << 14)
_A_METER = const(1 << 15)

# status bits (POLE_STATUS)
_S_LAMP_ON = const(1 << 0)
_S_OVERRIDE = const(1 << 1)
_S_DARK = const(1 << 2)
_S_DOOR_OPEN = const(1 << 3)
_S_TILTED = const(1 << 4)
_S_LAMP_FAILURE = const(1 << 5)
_S_DAY_BURNER = const(1 << 6)
_S_ALARM = const(1 << 7)

_RTC_MAGIC = const(b"SGP1")
_TILT_HYST = const(100)  # centidegrees
# a power alarm clears 5 points (% of the expected power) inside its threshold
_P_HYST_PCT = const(5)
_PI_CDEG = const(18000)
# who decided the level: an override, the photocell, or a schedule entry index
_KEY_OVERRIDE = const(-1)
_KEY_DARK = const(-2)
_KEY_LIGHT = const(-3)
# switched off, the current stops at once: one BL0942 RMS update (800 ms)
_OFF_STEADY_MS = const(1000)


class PoleApp(DeviceApp):
    def __init__(self, hw, cfg, reset=None, clock=None, rng=None):
        # the safe state, before anything that can fail
        hw.dimmer.set(cfg["default_level"])
        DeviceApp.__init__(self, "pole", hw, cfg, COMMAND_PORTS, _RTC_MAGIC, clock, rng, reset)
        self.default_level = cfg["default_level"]
        self.on_mlx = cfg["photocell_on_lux"] * 1000
        self.off_mlx = cfg["photocell_off_lux"] * 1000
        self.tilt_threshold_cdeg = cfg["tilt_threshold_cdeg"]
        self.latitude = cfg["latitude"]
        self.longitude = cfg["longitude"]
        self.fade_ms = cfg["default_fade_ms"]
        self.schedule = None  # [(anchor index, minute, level)], None = no schedule
        self.load_settings()
        self.dark = True
        self.lux_mlx = None
        self.temp_c100 = None
        self.rh_c100 = None
        self.tilt_cdeg = None
        self.mv = self.ma = self.dw = None
        self.light_failed = hw.light is None
        self.meter_failed = False
        self.tilted = False
        self.v_alarm = 0  # _A_VOLTAGE_LOW / _A_VOLTAGE_HIGH / 0, kept between samples (hysteresis)
        self.p_alarm = 0  # _A_POWER_LOW / _A_POWER_HIGH / 0
        self.dusk_utc_min = None  # observed by the photocell
        self.dawn_utc_min = None
        self._state_since = None  # when the photocell state last changed (None: first sample)
        self._energy_base = 0
        self._energy_saved = None
        if self._store is not None:
            self._energy_base = self._store.load("energy_mwh") or 0
            self._energy_saved = self._energy_base
        self._override = None  # (level, until mono or None)
        self._dim = None  # (level, key of the source it replaced)
        self._source = None
        self._changed_at = 0  # for the alarms the safe-state switch-on is a change at mono 0
        self._steady_at = 0  # from then on the meter reads what the lamp's level draws
        self._meter_level = hw.dimmer.level  # the lamp level the last meter reading was taken at
        self._meter_fresh = False  # frames may carry that reading: the lamp has not changed since
        self._boot_state = True  # no change since the safe state (frames need not wait for it)
        self._hold_until = None  # a due report/alarm waits for the lamp until then
        self._next_sample = 0
        self.sample_errors = 0
        self.time_sets = 0  # wall clock set from the network (DeviceTimeAns)

    def attach(self, mac):
        DeviceApp.attach(self, mac)
        mac.on_time = self._set_time
        mac.time_known = self.clock_known

    # -- persistence -----------------------------------------------------------------------

    def restore_settings(self, s):
        self.default_level = s.get("default_level", self.default_level)
        self.on_mlx = s.get("on_mlx", self.on_mlx)
        self.off_mlx = s.get("off_mlx", self.off_mlx)
        self.tilt_threshold_cdeg = s.get("tilt_cdeg", self.tilt_threshold_cdeg)
        self.latitude = s.get("lat", self.latitude)
        self.longitude = s.get("lon", self.longitude)
        self.fade_ms = s.get("fade_ms", self.fade_ms)
        sch = s.get("schedule")
        self.schedule = None if sch is None else [tuple(e) for e in sch]
        if self.hw.dimmer.target != self.default_level:
            self.hw.dimmer.set(self.default_level)

    def own_settings(self):
        return {"default_level": self.default_level, "on_mlx": self.on_mlx,
             "off_mlx": self.off_mlx, "tilt_cdeg": self.tilt_threshold_cdeg,
             "lat": self.latitude, "lon": self.longitude, "fade_ms": self.fade_ms,
             "schedule": None if self.schedule is None else [list(e) for e in self.schedule]}

    # -- time ------------------------------------------------------------------------------

    def wall_clock(self):
        """(day of year, UTC minute of the day) or None when the RTC was never set."""
        try:
            dt = self.hw.rtc.datetime()
        except Exception:
            return None
        if dt[0] < 2020:
            return None
        return day_of_year(dt[0], dt[1], dt[2]), dt[4] * 60 + dt[5]

    def clock_known(self):
        return self.wall_clock() is not None

    def _set_time(self, unix_ms):
        """The network's time (DeviceTimeAns, already advanced to now by the MAC) -> the RTC."""
        known = self.clock_known()
        self.hw.rtc.datetime(datetime_tuple(unix_ms))
        self.time_sets += 1
        if not known:
            print("pole: wall clock set from the network: %d ms" % unix_ms)

    def _sun(self, doy):
        """(sunrise, sunset) in UTC minutes, or None."""
        if self.latitude is not None and self.longitude is not None:
            # only a pole given its position loads the (float) solar calculation
            from firmware.solar import sun_times_utc

            return sun_times_utc(doy, self.latitude, self.longitude)
        if self.dawn_utc_min is not None and self.dusk_utc_min is not None:
            return self.dawn_utc_min, self.dusk_utc_min
        return None

    def _schedule_level(self):
        """(level, entry index) from the schedule now, or None when it cannot decide."""
        if not self.schedule:
            return None
        wc = self.wall_clock()
        if wc is None:
            return None
        doy, utc_min = wc
        sun = None
        local = (utc_min + self.utc_offset_min) % 1440
        best = None
        last = None
        for i in range(len(self.schedule)):
            anchor, minute, level = self.schedule[i]
            if anchor == 0:
                t = minute % 1440
            else:
                if sun is None:
                    sun = self._sun(doy)
                    if sun is None:
                        return None
                base = sun[1] if anchor == 1 else sun[0]
                t = (base + self.utc_offset_min + minute) % 1440
            if t <= local and (best is None or t >= best[0]):
                best = (t, i, level)
            if last is None or t >= last[0]:
                last = (t, i, level)
        e = best or last
        return e[2], e[1]

    # -- lamp --------------------------------------------------------------------------------

    def _decide(self, mono):
        """(level, source key, asked_for_light) without a dim command."""
        ov = self._override
        if ov is not None:
            if ov[1] is not None and mono >= ov[1]:
                self._override = None
            else:
                return ov[0], _KEY_OVERRIDE, True
        s = self._schedule_level()
        if s is not None:
            return s[0], s[1], False  # the entry index is the key
        if self.dark or self.light_failed:
            return self.default_level, _KEY_DARK, False
        return 0, _KEY_LIGHT, False

    def _update_lamp(self, now, mono, fade_ms=None):
        level, key, _ = self._decide(mono)
        if self._dim is not None:
            if self._dim[1] == key:
                level = self._dim[0]
            else:
                self._dim = None
        self._source = key
        d = self.hw.dimmer
        if level != d.target:
            fade = self.fade_ms if fade_ms is None else fade_ms
            d.set(level, fade, now)
            # the meter's last reading shows the old state: no frame may carry it with the new
            self._meter_fresh = False
            self._boot_state = False
            self._changed_at = mono
            # a lit lamp draws its level's power lamp_settle_s after the fade (a driver's soft
            # start, an HID lamp's strike); an open relay stops the current at once
            wait = self.cfg["lamp_settle_s"] * 1000 if level else _OFF_STEADY_MS
            self._steady_at = mono + (fade if d.fading() else 0) + wait

    def _steady(self, mono):
        """The meter now reads what the lamp draws at its level (no fade running)."""
        return mono >= self._steady_at and not self.hw.dimmer.fading()

    def override_active(self):
        return self._override is not None

    # -- sampling --------------------------------------------------------------------------

    def _sample(self, now, mono):
        hw = self.hw
        if hw.light is not None:
            try:
                self.lux_mlx = hw.light.lux_milli()
                self.light_failed = False
            except (OSError, ValueError):
                self.lux_mlx = None
                self.light_failed = True
                self.sample_errors += 1
        if hw.climate is not None:
            try:
                self.temp_c100, self.rh_c100 = hw.climate.measure()
            except (OSError, ValueError):
                self.temp_c100 = self.rh_c100 = None
                self.sample_errors += 1
        if hw.accel is not None:
            try:
                self.tilt_cdeg = hw.accel.tilt_centideg()
            except (OSError, ValueError):
                self.tilt_cdeg = None
                self.sample_errors += 1
        self._read_meter(mono)
        lux = self.lux_mlx
        if lux is not None:
            was = self.dark
            if self.dark and lux >= self.off_mlx:
                self.dark = False
            elif not self.dark and lux <= self.on_mlx:
                self.dark = True
            if was != self.dark:
                # a dusk/dawn estimate needs a real transition: not the boot assumption, and
                # not headlights or a passing cloud (the previous state must have held 2 h)
                if self._state_since is not None and mono - self._state_since >= 7200000:
                    wc = self.wall_clock()
                    if wc is not None:
                        if self.dark:
                            self.dusk_utc_min = wc[1]
                        else:
                            self.dawn_utc_min = wc[1]
                self._state_since = mono
            elif self._state_since is None:
                self._state_since = mono

    def _read_meter(self, mono):
        """Read the BL0942 and remember the lamp level it was read at: a frame carries the
        reading together with that level. A reading taken settled (or in the boot's safe state,
        which had no earlier state to mix with) may go out; one taken while the lamp still
        settles into a change may not."""
        hw = self.hw
        self._meter_level = hw.dimmer.level
        self._meter_fresh = self._boot_state or self._steady(mono)
        try:
            self.mv, self.ma, self.dw, cf = hw.meter.read()
            hw.energy.update(cf, hw.meter.chip_was_reset())
            self.meter_failed = False
        except (OSError, ValueError):
            self.mv = self.ma = self.dw = None
            self.meter_failed = True
            self.sample_errors += 1

    def energy_wh(self):
        return (self._energy_base + self.hw.energy.milli_wh()) // 1000

    # -- alarms ----------------------------------------------------------------------------

    def _evaluate_alarms(self, mono):
        a = 0
        if self.hw.door.is_open:
            a |= _A_DOOR_OPEN
        t = self.tilt_cdeg
        if t is not None:
            if self.tilted:
                self.tilted = t > self.tilt_threshold_cdeg - _TILT_HYST
            else:
                self.tilted = t > self.tilt_threshold_cdeg
        if self.tilted:
            a |= _A_TILTED
        d = self.hw.dimmer
        on = d.target > 0
        fail_ma = self.cfg["lamp_fail_ma"]
        # right after a level change the current still shows the old state (and HID lamps
        # take minutes to strike): judge the lamp only once it has settled
        settled = not d.fading() and mono - self._changed_at >= self.cfg["lamp_settle_s"] * 1000
        if self.meter_failed:
            a |= _A_METER
        elif on and settled and self.ma is not None and self.ma < fail_ma:
            a |= _A_LAMP_FAILURE
        elif on and not settled:
            a |= self.alarm.bits & _A_LAMP_FAILURE  # a level change cannot tell: keep (no flapping)
        self._supply_alarms(on, settled, a & _A_LAMP_FAILURE)
        a |= self.v_alarm | self.p_alarm
        if self.light_failed:
            a |= _A_LIGHT_SENSOR
        elif settled and self.lux_mlx is not None and self.lux_mlx >= self.cfg["day_burner_lux"] * 1000:
            lit = on or (self.ma is not None and self.ma >= fail_ma)
            asked = self._override is not None or self._dim is not None
            if lit and not asked:
                a |= _A_DAY_BURNER
        self.alarm.update(a)

    def _supply_alarms(self, on, settled, lamp_failed):
        """voltage_low/high and power_low/high with hysteresis (self.v_alarm, self.p_alarm)."""
        cfg = self.cfg
        mv = self.mv
        if mv is not None and not self.meter_failed:
            self.v_alarm = voltage_alarm(self.v_alarm, mv, mv, cfg["voltage_low_v"] * 1000,
                                         cfg["voltage_high_v"] * 1000, _A_VOLTAGE_LOW, _A_VOLTAGE_HIGH)
        rated = cfg["lamp_rated_w"]
        level = self.hw.dimmer.target
        if not rated or not on:
            self.p_alarm = 0
            return
        if not settled or self.dw is None or self.meter_failed:
            return  # cannot tell now: keep
        # dW * 1000 against rated W * level % * threshold %: both sides are dW * 1000
        dw = self.dw * 1000
        full = rated * level
        low, high = cfg["power_low_pct"], cfg["power_high_pct"]
        p = self.p_alarm
        if lamp_failed:
            p = 0  # lamp_failure says it more precisely
        elif dw < full * low or (p == _A_POWER_LOW and dw < full * (low + _P_HYST_PCT)):
            p = _A_POWER_LOW
        elif dw > full * high or (p == _A_POWER_HIGH and dw > full * (high - _P_HYST_PCT)):
            p = _A_POWER_HIGH
        else:
            p = 0
        self.p_alarm = p

    def status(self, level=None):
        """The status bits now; level: the lamp level for _S_LAMP_ON (default: the lamp's now)."""
        s = 0
        if (self.hw.dimmer.level if level is None else level) > 0:
            s |= _S_LAMP_ON
        if self._override is not None:
            s |= _S_OVERRIDE
        if self.dark:
            s |= _S_DARK
        if self.hw.door.is_open:
            s |= _S_DOOR_OPEN
        if self.tilted:
            s |= _S_TILTED
        if self.alarm.bits & _A_LAMP_FAILURE:
            s |= _S_LAMP_FAILURE
        if self.alarm.bits & _A_DAY_BURNER:
            s |= _S_DAY_BURNER
        if self.alarm.bits:
            s |= _S_ALARM
        return s

    def _send_alarm(self, mono):
        lvl = self._meter_level  # the level the carried reading was taken at
        f = {"alarms": self.alarm.bits, "alarm_count": self.alarm.count, "status": self.status(lvl),
             "dim_level": lvl,
             "tilt_angle": None if self.tilt_cdeg is None else self.tilt_cdeg * 3.14159265 / _PI_CDEG,
             "supply_voltage": (self.mv or 0) / 1000, "lamp_current": (self.ma or 0) / 1000,
             "lamp_power": max(self.dw or 0, 0) / 10,
             "temperature": None if self.temp_c100 is None else self.temp_c100 / 100}
        port, data = encode_uplink("pole", "alarm", f)
        if self.alarm.send(self.mac, port, data):
            self.last_alarm = f

    # -- reports ---------------------------------------------------------------------------

    def _send_report(self):
        wh = self.energy_wh()
        if self._store is not None and wh * 1000 != self._energy_saved:
            total = self._energy_base + self.hw.energy.milli_wh()
            self._store.save("energy_mwh", total)
            self._energy_saved = wh * 1000
        lvl = self._meter_level  # the level the carried reading was taken at
        f = {"status": self.status(lvl), "dim_level": lvl,
             "lamp_power": max(self.dw or 0, 0) / 10, "lamp_energy": wh,
             "ambient_light": None if self.lux_mlx is None else self.lux_mlx / 1000,
             "temperature": None if self.temp_c100 is None else self.temp_c100 / 100,
             "humidity": None if self.rh_c100 is None else self.rh_c100 / 100}
        port, data = encode_uplink("pole", "report", f)
        self.queue_report(port, data, f)

    # -- commands --------------------------------------------------------------------------

    def execute_command(self, port, f):
        now = self._now
        mono = self._mono.ms
        if port == _PORT_DIM:
            if not 0 <= f["level"] <= 100:
                return 4
            _, key, _ = self._decide(mono)
            self._dim = (f["level"], key)
            self._update_lamp(now, mono, int(f["fade"] * 1000))
        elif port == _PORT_SCHEDULE:
            entries = []
            for e in f["entries"]:
                a = ("fixed", "sunset", "sunrise").index(e["anchor"])  # the schedule's anchor index
                if not 0 <= e["level"] <= 100 or (a == 0 and not 0 <= e["minute"] < 1440):
                    return 4
                entries.append((a, e["minute"], e["level"]))
            self.schedule = entries or None
            self._dim = None
            self.save_settings()
            self._update_lamp(now, mono)
        elif port == _PORT_OVERRIDE:
            if not 0 <= f["level"] <= 100:
                return 4
            dur = f["duration"]
            if dur == 0:
                self._override = None
            else:
                self._override = (f["level"], None if dur is None else mono + dur * 60000)
            self._dim = None
            self._update_lamp(now, mono, int(f["fade"] * 1000))
        elif port == _PORT_POLE_CONFIG:
            on = self.on_mlx if f["photocell_on"] is None else int(f["photocell_on"] * 1000)
            off = self.off_mlx if f["photocell_off"] is None else int(f["photocell_off"] * 1000)
            lvl = f["default_level"]
            if on > off or (lvl is not None and not 0 <= lvl <= 100):
                return 4
            self.on_mlx, self.off_mlx = on, off
            if lvl is not None:
                self.default_level = lvl
            if f["tilt_threshold"] is not None:
                self.tilt_threshold_cdeg = int(f["tilt_threshold"] * _PI_CDEG / 3.14159265 + 0.5)
            if f["latitude"] is not None:
                self.latitude = f["latitude"]
            if f["longitude"] is not None:
                self.longitude = f["longitude"]
            if f["default_fade"] is not None:
                self.fade_ms = int(f["default_fade"] * 1000)
            self.save_settings()
            self._update_lamp(now, mono)
        elif port == _PORT_CONFIG:
            self.config_command(f, mono)
            self._update_lamp(now, mono)
        elif port == _PORT_REBOOT:
            self.reboot_command(f, mono)
        return 0

    # -- the loop --------------------------------------------------------------------------

    def _hold(self, mono):
        """True while a due report/alarm must wait for the lamp to settle. Once settled, a
        reading taken before (or during) the change is replaced by a fresh one (and the alarms
        judged on it), so the frame shows the lamp's new state with what it draws in it. The
        wait is bounded by the settle instant of the change that delayed the frame: if the lamp
        changes again meanwhile, the frame goes then with the last reading and the level it was
        taken at (still one consistent snapshot, only not a settled one)."""
        if self._meter_fresh:
            return False
        if self._hold_until is None:
            self._hold_until = self._steady_at
        if self._steady(mono):
            self._read_meter(mono)
            self._evaluate_alarms(mono)
            return False
        return mono < self._hold_until

    def poll(self, now_ms):
        clock = self._clock
        clock.start(now_ms)
        self._now = now_ms
        if self._mono is None:
            self._mono = Monotonic(now_ms)
        mono = self._mono.update(now_ms)
        self._supervise(mono)
        hw = self.hw
        hw.dimmer.poll(now_ms)  # a fade's step due now first: the meter is read after it
        door = hw.door.is_open
        door_wake = hw.door.poll(now_ms)
        ov = self._override
        if mono >= self._next_sample:
            self._sample(now_ms, mono)
            self._next_sample += self.cfg["sample_interval_s"] * 1000
            if self._next_sample <= mono:
                self._next_sample = mono + self.cfg["sample_interval_s"] * 1000
            self._update_lamp(now_ms, mono)
            self._evaluate_alarms(mono)
        elif door != hw.door.is_open or (ov is not None and ov[1] is not None and mono >= ov[1]):
            # between samples only what can change without one (idle polls allocate nothing)
            self._update_lamp(now_ms, mono)
            self._evaluate_alarms(mono)
        alarm_due = self.alarm.poll(mono)
        report_due = self.report_timer.due(mono)
        if (alarm_due or report_due) and self._hold(mono):
            pass  # the lamp is changing: the frames wait for it (poll wakes at _hold_until)
        else:
            self._hold_until = None
            if self.alarm.due:  # (_hold's fresh reading may have changed the alarms)
                self._send_alarm(mono)
            if report_due:
                self._send_report()
                self.report_timer.schedule(mono)
        if self._reboot.due(mono, self.mac):
            self._reset()  # machine.reset() does not return
        # the sensor reads may have blocked (sleep_ms): from here on the time is what the
        # board's clock shows now, so the MAC transmits and opens RX windows at true instants
        now_ms = clock.now()
        self._now = now_ms
        mono = self._mono.update(now_ms)
        best = None
        if self.mac is not None:
            best = self.mac.poll(now_ms)
        # the app's own deadlines after the MAC's poll: its callbacks may have moved them
        # (a held report wakes the poll at _hold_until)
        wake = self.network_wake(mono, self._next_sample, self._hold_until is None)
        t = self._hold_until
        if t is not None and t < wake:
            wake = t
        if self._override is not None:
            t = self._override[1]
            if t is not None and t < wake:
                wake = t
        if wake <= mono:
            wake = mono + 1
        w = self._mono.to_ticks(wake, now_ms)
        if best is None or ticks_diff(w, best) < 0:
            best = w
        w = hw.dimmer.poll(now_ms)
        if w is not None and ticks_diff(w, best) < 0:
            best = w
        if door_wake is not None and ticks_diff(door_wake, best) < 0:
            best = door_wake
        if ticks_diff(best, now_ms) <= 0:
            best = ticks_add(now_ms, 1)
        return best

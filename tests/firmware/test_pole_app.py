"""PoleApp with the real drivers on the fake machine, the sim/devices chip models mounted at the
board's pins and addresses, and the real MAC talking to a CPython network server."""

import pytest
from hypothesis import given, settings, strategies as st

from firmware import main
from protocol import payload
from sim.devices.bl0942 import BL0942
from sim.devices.lis3dh import LIS3DH
from sim.devices.sht3x import SHT3x
from sim.devices.veml7700 import VEML7700
from sim.fakes import esp32, machine
from tests.firmware.scripted_network import CFG, NetworkServer, ScriptedRadio, run

EPOCH_2026 = 1767225600  # 2026-01-01 00:00 UTC


class Pole:
    """One emulated pole: fake machine + chip models + scripted network, time in ms."""

    def __init__(self, lux=5.0, power=60.0, current=0.27, epoch=None, light=True,
                 rng=lambda n: 0, **cfg):
        self.t = 0
        self.rng = rng  # None: the firmware's own per-device generator
        self.slept = 0
        machine.set_clock(lambda: self.t)
        machine.set_epoch(epoch)
        self.light = VEML7700(lux=lux)
        if light:
            machine.bus(0).attach(0x10, self.light)
        self.climate = machine.bus(0).attach(0x44, SHT3x(temperature=12.5, humidity=70.0))
        self.accel = machine.bus(0).attach(0x18, LIS3DH(tilt_deg=0.5))
        self.meter = machine.uart(2).attach(BL0942(voltage=230.0, current=current, power=power))
        self.lamp = (current, power)  # at 100 %; the meter follows the relay and the PWM
        self.fault = None  # "dead" lamp (draws nothing) or "stuck" relay (always full power)
        machine.drive(27, 0)  # door shut
        self.ns = NetworkServer()
        # no report jitter unless a test asks (with rng 0 every gap would be interval - jitter)
        c = dict(CFG, report_interval_s=300, report_jitter_s=0, sample_interval_s=10,
                 lamp_settle_s=5)
        c.update(cfg)
        self.cfg = c
        self.boot()

    def boot(self):
        self.radio = ScriptedRadio(on_uplink=self.ns.on_uplink)
        self.resets = []
        self.app = main.create(machine, esp32, self.cfg, self.radio, self._sleep_ms,
                               rng=self.rng)
        self.app._reset = lambda: self.resets.append(self.t)
        self.start = self.t
        self._meter_t = self.t

    def _sleep_ms(self, ms):
        """The drivers' measurement waits: the board's time (and the radio's) moves on."""
        self.slept += ms
        self.t += ms
        self.radio.now = self.t

    def _advance(self, t):
        self.meter.advance((t - self._meter_t) / 1000.0)
        duty = machine.pwm_duty(25) or 0
        k = 0.0 if self.fault == "dead" or not (machine.level(26) or self.fault == "stuck") else (
            1.0 if self.fault == "stuck" else duty / 65535)
        self.meter.current, self.meter.power = self.lamp[0] * k, self.lamp[1] * k
        self._meter_t = t
        self.t = t

    def run(self, seconds, polls=None):
        self.t = run(self.app, self.radio, self.t + seconds * 1000, self.t, polls=polls,
                     offset=-self.start, advance=self._advance, clock=lambda: self.t)

    def level(self):
        duty = machine.pwm_duty(25)
        return None if duty is None else round(duty * 100 / 65535)

    def relay(self):
        return machine.level(26)

    def uplinks(self, port):
        return [(o, payload.decode_uplink(port, o.payload)["fields"])
                for o in self.ns.uplinks if o.frame.fport == port]

    def command(self, name, fields):
        port, data = payload.encode_downlink("pole", name, fields)
        self.ns.downlink = (port, data, False)
        return port

    def raw_command(self, port, data):
        self.ns.downlink = (port, data, False)


@pytest.fixture(autouse=True)
def fresh_board(monkeypatch):
    monkeypatch.setattr(esp32, "FLASH", esp32.Flash())
    machine._buses.clear()
    machine._uarts.clear()
    machine.power_cut()
    yield
    machine._buses.clear()
    machine._uarts.clear()
    esp32.power_cut()


# -- lamp ---------------------------------------------------------------------------------

def test_lamp_on_at_default_level_from_construction():
    pole = Pole(lux=20000.0, default_level=80)
    assert pole.level() == 80 and pole.relay() == 1  # before the first poll: safe side
    pole.run(1)
    assert pole.level() == 0 and pole.relay() == 0  # the photocell sees daylight


def test_photocell_hysteresis():
    pole = Pole(lux=100.0, photocell_on_lux=20, photocell_off_lux=50)
    steps = [(100.0, 0), (30.0, 0), (19.0, 100), (30.0, 100), (49.0, 100), (51.0, 0), (21.0, 0)]
    seen = []
    for lux, _ in steps:
        pole.light.lux = lux
        pole.run(12)
        seen.append(pole.level())
    assert seen == [want for _, want in steps]


def test_light_sensor_missing_keeps_the_lamp_on_and_raises_an_alarm():
    pole = Pole(lux=20000.0, light=False)
    pole.run(30)
    assert pole.level() == 100
    (o, f), = pole.uplinks(11)[:1]
    assert o.frame.confirmed and f["alarms/light_sensor_failure"]


def test_schedule_with_fixed_times_and_the_clock():
    # 2026-01-01 20:00 UTC, local time UTC+1 -> 21:00
    pole = Pole(lux=5.0, epoch=EPOCH_2026 + 20 * 3600, utc_offset_min=60)
    pole.run(20)
    pole.command("schedule", {"seq": 1, "entries": [
        {"anchor": "fixed", "minute": 7 * 60, "level": 0},
        {"anchor": "fixed", "minute": 21 * 60 + 30, "level": 40},
        {"anchor": "sunset", "minute": 0, "level": 100}]})
    pole.run(400)  # the next report carries the command's RX window
    acks = [f for _, f in pole.uplinks(12)]
    assert acks and acks[0]["port"] == 51 and acks[0]["result"] == "ok"
    # no position and no observed dusk: a sunset anchor cannot resolve -> photocell decides
    assert pole.level() == 100
    pole.command("pole_config", {"seq": 2, "latitude": 52.52, "longitude": 13.40})
    pole.run(300)
    # Berlin sunset on 1 January is 15:02 UTC = 16:02 local: at 21:12 local the sunset entry
    # holds; from 21:30 local the 40 % entry
    assert pole.t < 1800 * 1000 and pole.level() == 100
    pole.run(1200)
    assert pole.t > 1800 * 1000 and pole.level() == 40


def test_schedule_ignored_until_the_wall_clock_is_known():
    pole = Pole(lux=5.0, epoch=None)  # RTC never set: it reads year 2000
    pole.run(20)
    pole.command("schedule", {"seq": 1, "entries": [{"anchor": "fixed", "minute": 0, "level": 10}]})
    pole.run(400)
    assert pole.level() == 100  # photocell fallback: dark -> default level
    machine.set_epoch(EPOCH_2026)
    pole.run(20)
    assert pole.level() == 10


# -- timing -------------------------------------------------------------------------------

def test_rx_windows_count_the_time_sensor_reads_blocked_the_poll():
    """In daylight the VEML7700 auto-ranges (105 ms per step) and the SHT3x waits 16 ms, in the
    same poll that transmits: the radio starts the frame that much later than the poll began,
    and each RX window must still open RxDelay after the frame's real end."""
    pole = Pole(lux=20000.0, report_interval_s=60)
    pole.run(20)
    pole.command("dim", {"seq": 1, "level": 30})
    pole.run(200)
    mac = pole.app.mac
    assert mac.joined and mac.join_attempts == 1 and mac.downlinks >= 1
    sent, windows = pole.radio.sent, pole.radio.windows
    # the first poll (at pole.start) transmitted the join-request after two auto-range steps
    # and a humidity measurement
    assert sent[0].t - pole.start >= 200
    for opened, *_ in windows:
        tx = [x for x in sent if x.t < opened][-1]
        rx1 = 5000 if tx is sent[0] else 1000
        late = opened - tx.end + 5  # windows open 5 ms early
        assert rx1 - 1 <= late <= rx1 + 1 or rx1 + 999 <= late <= rx1 + 1001, (tx.t, opened)
    # the join-accept and the dim command were caught in RX1: no RX2 was needed for them
    assert len([w for w in windows if w[0] < sent[1].t]) == 1
    assert pole.level() == 30 and pole.uplinks(12)[0][1]["result"] == "ok"


def rtc_unix_ms():
    import datetime

    y, mo, d, _, h, mi, sec, us = machine.RTC().datetime()
    t = datetime.datetime(y, mo, d, h, mi, sec, us, tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1000)


def test_wall_clock_from_the_network_after_a_power_cut_without_rtc_battery():
    """The RTC reads 2000-01-01 after a power cut: the schedule is ignored (photocell) until the
    MAC's DeviceTimeReq is answered; then the RTC holds the network's UTC and the schedule
    rules again."""
    utc_at_0 = (EPOCH_2026 + 20 * 3600) * 1000  # 2026-01-01 20:00 UTC at test time 0
    pole = Pole(lux=5.0, epoch=EPOCH_2026 + 20 * 3600)
    pole.ns.utc_ms = lambda ms: utc_at_0 + ms
    pole.run(20)
    pole.command("schedule", {"seq": 1, "entries": [{"anchor": "fixed", "minute": 0, "level": 10}]})
    pole.run(310)
    assert pole.level() == 10 and len(pole.ns.time_requests) == 1  # asked after the join
    machine.power_cut()  # no backup battery: the RTC's time is gone
    esp32.power_cut()
    pole.meter.power_cycle()
    assert machine.RTC().datetime()[0] == 2000
    pole.boot()
    pole.run(0.5)
    assert pole.app.wall_clock() is None and pole.level() == 100  # photocell: dark
    pole.run(20)  # the session was resumed: the first report asks the time, RX1 answers it
    assert len(pole.ns.time_requests) == 2 and pole.app.time_sets == 1
    assert abs(rtc_unix_ms() - (utc_at_0 + pole.t)) <= 10
    assert pole.level() == 10  # the schedule again (settings came back from NVS)


# -- commands -------------------------------------------------------------------------------

def test_dim_acked_and_duplicate_seq_not_executed_again():
    pole = Pole(lux=5.0)
    pole.run(20)
    pole.command("dim", {"seq": 7, "level": 30})
    pole.run(310)
    assert pole.level() == 30
    pole.command("dim", {"seq": 7, "level": 90})  # the same seq again: acked, not executed
    pole.run(310)
    assert pole.level() == 30
    acks = [f for _, f in pole.uplinks(12)]
    assert [(a["port"], a["seq"], a["result"]) for a in acks] == [(50, 7, "ok"), (50, 7, "ok")]
    assert pole.app.command_port.duplicates == 1
    pole.command("dim", {"seq": 8, "level": 90, "fade": 2.0})
    pole.run(310)
    assert pole.level() == 90


def test_bad_commands_get_result_codes():
    pole = Pole(lux=5.0)
    pole.run(20)
    results = []
    for port, data in ((70, b"\x01\x05\x00"), (50, b"\x02\x06\x10\x00\x00"), (50, b"\x01\x07"),
                       (50, b"\x01\x08\xc8\x00\x00")):
        pole.raw_command(port, data)
        pole.run(310)
        f = pole.uplinks(12)[-1][1]
        results.append((f["port"], f["seq"], f["result"]))
    assert results == [(70, 5, "unknown_port"), (50, 6, "bad_version"), (50, 7, "bad_length"),
                       (50, 8, "bad_value")]
    assert pole.level() == 100  # none of them changed the lamp


def test_override_with_duration_then_back_to_photocell():
    pole = Pole(lux=5.0)
    pole.run(20)
    pole.command("override", {"seq": 1, "level": 20, "duration": 10})
    pole.run(310)
    assert pole.level() == 20 and pole.app.status() & 2  # override bit
    pole.run(600)
    assert pole.level() == 100


def test_config_changes_report_interval_and_reboot_once():
    pole = Pole(lux=5.0)
    pole.run(20)
    pole.command("config", {"seq": 3, "report_interval": 60})
    pole.run(310)
    n = len(pole.uplinks(10))
    pole.run(600)
    assert 9 <= len(pole.uplinks(10)) - n <= 11
    pole.command("reboot", {"seq": 4, "delay": 2})
    pole.run(120)
    assert len(pole.resets) == 1
    ack = pole.uplinks(12)[-1][1]
    assert (ack["port"], ack["seq"], ack["result"]) == (60, 4, "ok")
    assert pole.uplinks(12)[-1][0].airtime_t < pole.resets[0]  # acked before the reset
    # the soft reset keeps RTC memory: a repeated reboot command is acked, not executed
    machine.soft_reset()
    esp32.power_cut()
    pole.boot()
    pole.run(20)
    pole.command("reboot", {"seq": 4, "delay": 0})
    pole.run(120)
    assert pole.resets == [] and pole.uplinks(12)[-1][1]["seq"] == 4
    assert pole.app.report_timer.interval_s == 60  # settings survived the reboot (NVS)


def test_pole_config_photocell_thresholds_and_bad_hysteresis_refused():
    pole = Pole(lux=40.0)
    pole.run(20)
    assert pole.level() == 100  # 40 lx: still "dark" (below 50 lx)
    pole.command("pole_config", {"seq": 1, "photocell_on": 10, "photocell_off": 30})
    pole.run(310)
    assert pole.level() == 0
    pole.command("pole_config", {"seq": 2, "photocell_on": 60, "photocell_off": 30})
    pole.run(310)
    assert pole.uplinks(12)[-1][1]["result"] == "bad_value"
    assert pole.app.on_mlx == 10000


# -- alarms ---------------------------------------------------------------------------------

def alarm_frames(pole):
    return pole.uplinks(11)


@pytest.mark.parametrize("name", ["door_open", "tilted", "lamp_failure", "day_burner"])
def test_each_alarm_raised_and_cleared_as_confirmed_uplinks(name):
    pole = Pole(lux=5.0)
    pole.run(60)
    assert alarm_frames(pole) == []
    if name == "door_open":
        machine.drive(27, 1)
    elif name == "tilted":
        pole.accel.tilt_deg = 15.0
    elif name == "lamp_failure":
        pole.fault = "dead"
    else:  # a stuck relay: commanded off in daylight but the lamp draws current
        pole.light.lux = 20000.0
        pole.run(15)
        assert pole.level() == 0 and alarm_frames(pole) == []
        pole.fault = "stuck"
    pole.run(30)
    frames = alarm_frames(pole)
    assert frames, "no alarm sent"
    o, f = frames[-1]
    assert o.frame.confirmed and f["alarms/" + name] and f["status/alarm"]
    assert f["alarm_count"] == 1
    if name in ("door_open", "tilted"):
        assert f["status/" + name]
    if name == "tilted":
        assert abs(f["tilt_angle"] - 0.26) <= 0.01
    # clear it: a new alarm frame without the bit, the transition counted
    if name == "door_open":
        machine.drive(27, 0)
    elif name == "tilted":
        pole.accel.tilt_deg = 0.5
    else:
        pole.fault = None
    pole.run(30)
    o, f = alarm_frames(pole)[-1]
    assert o.frame.confirmed and not f["alarms/" + name] and f["alarm_count"] == 2


VOLTAGE_LOW, VOLTAGE_HIGH, POWER_LOW, POWER_HIGH = 1 << 10, 1 << 11, 1 << 12, 1 << 13


def test_supply_voltage_alarms_with_hysteresis():
    pole = Pole(lux=5.0)  # defaults: 207..253 V, cleared 4 V inside
    pole.run(60)
    assert alarm_frames(pole) == [] and pole.app.alarm.bits == 0
    seen = []
    for volts in (200.0, 208.0, 212.0, 260.0, 250.0, 248.0, 230.0):
        pole.meter.voltage = volts
        pole.run(15)
        seen.append(pole.app.alarm.bits & (VOLTAGE_LOW | VOLTAGE_HIGH))
    assert seen == [VOLTAGE_LOW, VOLTAGE_LOW, 0, VOLTAGE_HIGH, VOLTAGE_HIGH, 0, 0]
    frames = [f for _, f in alarm_frames(pole)]
    assert [(f["alarms/voltage_low"], f["alarms/voltage_high"]) for f in frames] == [
        (True, False), (False, False), (False, True), (False, False)]  # raised, cleared, ...
    assert abs(frames[0]["supply_voltage"] - 200.0) <= 0.2 and frames[-1]["alarm_count"] == 4


def test_supply_voltage_thresholds_from_the_config():
    pole = Pole(lux=5.0, voltage_low_v=100, voltage_high_v=127)  # a 110 V supply
    pole.meter.voltage = 110.0
    pole.run(60)
    assert pole.app.alarm.bits == 0
    pole.meter.voltage = 230.0
    pole.run(15)
    assert pole.app.alarm.bits == VOLTAGE_HIGH


def test_lamp_power_alarms_against_the_rated_power_at_the_level():
    pole = Pole(lux=5.0, power=60.0, current=0.27, lamp_rated_w=60)  # 50 % .. 130 %, 5 points
    pole.run(60)
    assert pole.app.alarm.bits == 0
    seen = []
    for share in (0.4, 0.53, 0.56, 1.4, 1.27, 1.2):  # of the rated 60 W, at level 100
        pole.lamp = (0.27 * share, 60.0 * share)
        pole.run(15)
        seen.append(pole.app.alarm.bits & (POWER_LOW | POWER_HIGH))
    assert seen == [POWER_LOW, POWER_LOW, 0, POWER_HIGH, POWER_HIGH, 0]
    o, f = alarm_frames(pole)[0]
    assert o.frame.confirmed and f["alarms/power_low"] and abs(f["lamp_power"] - 24.0) <= 0.2
    # dimmed to 30 %: 18 W is what that level should draw, no alarm; full power at 30 % is
    pole.lamp = (0.27, 60.0)
    pole.command("dim", {"seq": 1, "level": 30})
    pole.run(320)
    assert pole.level() == 30 and pole.app.alarm.bits == 0
    pole.fault = "stuck"  # the lamp burns at full power whatever the dimmer says
    pole.run(60)
    assert pole.app.alarm.bits == POWER_HIGH
    # a lamp that draws nothing is a lamp_failure, not also power_low
    pole.fault = "dead"
    pole.run(60)
    assert pole.app.alarm.bits & (POWER_LOW | POWER_HIGH) == 0 and pole.app.alarm.bits & 1


def test_unacknowledged_alarm_repeated():
    pole = Pole(lux=5.0, alarm_repeat_s=120, confirmed_retries=2, rejoin_after_failures=0)
    pole.run(30)
    pole.ns.ack_confirmed = False
    machine.drive(27, 1)
    pole.run(20)
    first = len(alarm_frames(pole))
    pole.run(400)
    assert len(alarm_frames(pole)) >= first + 2 * 2  # repeated (each sent twice by the MAC)
    pole.ns.ack_confirmed = True
    pole.run(200)
    n = len(alarm_frames(pole))
    pole.run(600)
    assert len(alarm_frames(pole)) == n  # acknowledged: no more repeats


# -- reports --------------------------------------------------------------------------------

def test_report_values_match_the_models():
    pole = Pole(lux=5.0, power=60.0, current=0.27)
    pole.climate.temperature, pole.climate.humidity = -7.3, 81.2
    pole.run(3 * 3600)
    reports = [f for _, f in pole.uplinks(10)]
    assert len(reports) >= 30
    f = reports[-1]
    assert f["status/lamp_on"] and f["status/dark"] and not f["status/alarm"]
    assert f["dim_level"] == 100
    assert abs(f["lamp_power"] - 60.0) <= 0.1
    assert abs(f["temperature"] + 7.3) <= 0.5 and abs(f["humidity"] - 81.2) <= 0.5
    assert abs(f["ambient_light"] - 5.0) <= 0.1
    # 60 W for (3 h minus one report interval): energy as integer Wh, within a CF count
    elapsed_h = (pole.uplinks(10)[-1][0].airtime_t - pole.uplinks(10)[0][0].airtime_t) / 3600000
    assert abs(f["lamp_energy"] - 60.0 * elapsed_h) <= 1.5
    energies = [r["lamp_energy"] for r in reports]
    assert energies == sorted(energies)


def report_times(dev_eui, hours, **cfg):
    """(join-accept end, [report transmission starts]) of a pole with its own random generator."""
    esp32.FLASH = esp32.Flash()
    machine.power_cut()
    pole = Pole(lux=5.0, rng=None, dev_eui=dev_eui, **cfg)
    pole.run(hours * 3600)
    joined = pole.radio.sent[0].end + 5000  # the join-accept in RX1
    return joined, [o.airtime_t for o, _ in pole.uplinks(10)]


def test_reports_are_jittered_per_device_within_the_bound():
    """Two poles that join at the same instant (a power cut ended) with the same schedule:
    without jitter every report of one collides with the other's."""
    interval, jitter = 900, 60
    runs = [report_times(eui, 6, report_interval_s=interval, report_jitter_s=jitter)
            for eui in ("0004a30b001c0530", "0004a30b001c0531")]
    for joined, times in runs:
        assert len(times) >= 22
        assert 0 <= times[0] - joined <= jitter * 1000 + 100  # the first: 0..jitter after join
        gaps = [b - a for a, b in zip(times, times[1:])]
        # the app schedules the second report from when it handed the first to the MAC, which
        # held that one 0..first_uplink_jitter_s (60 s) after the join: the first gap is shorter
        assert (interval - jitter - 60) * 1000 - 50 <= gaps[0] <= (interval + jitter) * 1000 + 50
        assert all((interval - jitter) * 1000 - 50 <= g <= (interval + jitter) * 1000 + 50
                   for g in gaps[1:]), gaps
        assert len({g // 1000 for g in gaps}) >= len(gaps) // 2  # drawn anew each time
    a, b = runs[0][1], runs[1][1]
    assert a[:3] != b[:3]
    close = [t for t in a if any(abs(t - u) < 200 for u in b)]  # a frame is ~60 ms at DR5
    assert len(close) <= 1, close


def test_report_jitter_is_at_most_half_the_interval():
    joined, times = report_times("0004a30b001c0532", 1, report_interval_s=60, report_jitter_s=600)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and all(30000 - 50 <= g <= 90000 + 50 for g in gaps), gaps


def test_dimmed_lamp_draws_less_and_reports_it():
    pole = Pole(lux=5.0, power=60.0, current=0.27)
    pole.run(20)
    pole.command("dim", {"seq": 1, "level": 50})
    pole.run(600)
    f = pole.uplinks(10)[-1][1]
    assert f["dim_level"] == 50 and abs(f["lamp_power"] - 30.0) <= 0.1


def test_energy_never_goes_backwards_across_power_cuts():
    pole = Pole(lux=5.0, power=500.0, current=2.2)
    reported = []
    for cut in range(3):
        pole.run(3600)
        reported += [f["lamp_energy"] for _, f in pole.uplinks(10)]
        pole.ns.uplinks.clear()
        machine.power_cut()
        esp32.power_cut()
        pole.meter.power_cycle()
        pole.boot()
    pole.run(1200)
    reported += [f["lamp_energy"] for _, f in pole.uplinks(10)]
    assert reported == sorted(reported)
    assert reported[-1] >= 1400  # ~3 h at 500 W, minus what each cut lost


def test_daytime_boot_raises_no_alarm():
    """The lamp is on for the first instant of a daytime boot (safe state), and the meter still
    shows its current in the first sample: no day-burner alarm for that."""
    pole = Pole(lux=20000.0)
    pole.run(120)
    assert pole.level() == 0 and alarm_frames(pole) == [] and pole.app.alarm.bits == 0


def test_lost_network_session_leads_to_a_rejoin():
    """The network forgets the session (e.g. its store was replaced): every confirmed_report_every-th
    report is confirmed, their failures make the MAC join again, and reports flow once more."""
    pole = Pole(lux=5.0, report_interval_s=60, confirmed_report_every=2, confirmed_retries=2,
                rejoin_after_failures=2)
    pole.run(120)
    assert pole.app.mac.joins == 1
    pole.ns.ack_confirmed = False  # as if it could not open the frames any more
    pole.run(600)
    assert pole.app.mac.failed >= 2 and pole.app.mac.joins >= 2
    assert pole.ns.nonces == sorted(set(pole.ns.nonces))
    joins = pole.app.mac.joins
    pole.ns.ack_confirmed = True
    n = len(pole.uplinks(10))
    pole.run(600)
    assert pole.app.mac.joins == joins and len(pole.uplinks(10)) >= n + 9


def test_sunset_anchor_from_the_dusk_and_dawn_the_photocell_saw():
    start = 12 * 3600  # 2026-01-01 12:00 UTC, no position configured
    pole = Pole(lux=1000.0, epoch=EPOCH_2026 + start, sample_interval_s=60)

    def until(hours):
        pole.run(hours * 3600 - start - pole.t / 1000)

    pole.run(20)
    pole.command("schedule", {"seq": 1, "entries": [
        {"anchor": "sunset", "minute": 30, "level": 70},
        {"anchor": "sunrise", "minute": -30, "level": 0}]})
    until(16)
    assert pole.level() == 0  # light, and no dusk seen yet: the photocell decides
    pole.light.lux = 5.0
    until(16.1)
    assert pole.app.dusk_utc_min == 16 * 60 and pole.level() == 100  # no dawn yet: photocell
    pole.light.lux = 1000.0  # headlights for two minutes: not a dawn
    until(16.15)
    pole.light.lux = 5.0
    until(16.4)
    assert pole.app.dawn_utc_min is None
    until(24 + 7)
    pole.light.lux = 1000.0  # dawn at 07:00
    until(24 + 7.1)
    assert pole.app.dawn_utc_min == 7 * 60 and pole.level() == 0
    until(24 + 16)
    pole.light.lux = 5.0
    until(24 + 16.25)
    assert pole.level() == 0  # the schedule rules now: its sunrise - 30 min entry holds until dusk + 30
    until(24 + 16.6)
    assert pole.level() == 70


@settings(max_examples=150, deadline=None)
@given(cmds=st.lists(st.tuples(st.sampled_from([50, 51, 52, 53, 60, 61, 70, 99]),
                               st.binary(max_size=12)), max_size=20))
def test_any_command_bytes_get_exactly_one_ack_and_never_crash(cmds):
    esp32.FLASH = esp32.Flash()
    machine._buses.clear()
    machine._uarts.clear()
    machine.power_cut()
    pole = Pole(lux=5.0)
    sent = []

    class Mac:
        joined = False  # what the app reads of a MAC besides its methods (boot health)
        uplinks = 0

        def send(self, port, data, confirmed=False, tag=None):
            sent.append((port, data))
            return True

        def poll(self, now):
            return now + 1000

        def busy(self):
            return False

        def queued(self):
            return 0

    pole.app.attach(Mac())
    pole.run(1)
    for port, data in cmds:
        before = len(sent)
        pole.app._on_downlink(port, data)
        acks = [payload.decode_uplink(12, d)["fields"] for p, d in sent[before:] if p == 12]
        assert len(acks) == 1
        assert acks[0]["port"] == port and acks[0]["seq"] == (data[1] if len(data) > 1 else 0)
        pole.run(1)
        assert 0 <= pole.app.hw.dimmer.target <= 100


# -- consistent snapshots: a frame's lamp state is the one its measurement was taken in ------

def consistent(f, rated_w=60.0, rated_a=0.27):
    """The lamp state a frame carries matches what it says the lamp drew (the Pole's model
    draws rated x duty): lamp_on iff a level, and the power (and current) of that level."""
    want = rated_w * f["dim_level"] / 100
    ok = f["status/lamp_on"] == (f["dim_level"] > 0) and abs(f["lamp_power"] - want) <= 0.5
    if "lamp_current" in f:
        ok = ok and abs(f["lamp_current"] - rated_a * f["dim_level"] / 100) <= 0.005
    return ok


def test_daytime_boot_first_report_shows_the_lamp_off_and_drawing_nothing():
    """The safe state lights the lamp at construction; the first sample switches it off in
    daylight. The first report must not say "off" with the watts of the moment before."""
    pole = Pole(lux=20000.0)
    polls = []
    pole.run(120, polls)
    reports = [f for _, f in pole.uplinks(10)]
    assert reports, "no report"
    assert polls[0] < 100  # the held report woke the board once, it did not spin until then
    f = reports[0]
    assert f["dim_level"] == 0 and not f["status/lamp_on"] and f["lamp_power"] <= 0.1, f
    assert all(consistent(r) for r in reports), reports
    assert pole.app.alarm.bits == 0  # and still no day-burner alarm for the boot instant


def test_report_at_a_dusk_transition_carries_the_new_state_measured_in_it():
    """A report falls due in the very poll whose sample flips the photocell: it waits until
    the lamp settled in its new state and carries a reading taken then."""
    pole = Pole(lux=1000.0, report_interval_s=10, sample_interval_s=10)
    pole.run(60)
    assert pole.level() == 0
    before = len(pole.uplinks(10))
    pole.light.lux = 5.0  # dusk
    pole.run(60)
    assert pole.level() == 100
    after = [f for _, f in pole.uplinks(10)[before:]]
    assert after and after[-1]["dim_level"] == 100 and after[-1]["status/lamp_on"]
    assert all(consistent(f) for _, f in pole.uplinks(10)), [f for _, f in pole.uplinks(10)]
    pole.light.lux = 1000.0  # dawn
    pole.run(60)
    assert pole.level() == 0
    assert all(consistent(f) for _, f in pole.uplinks(10)), [f for _, f in pole.uplinks(10)]


def test_report_after_a_dim_command_carries_the_dimmed_power():
    """A dim command (in the RX window after a report) changes the lamp between samples; the
    reports after it, instant or faded, show the level together with what it draws."""
    pole = Pole(lux=5.0, report_interval_s=20, sample_interval_s=60)
    pole.run(30)
    pole.command("dim", {"seq": 1, "level": 30})
    pole.run(100)
    assert pole.level() == 30
    reports = [f for _, f in pole.uplinks(10)]
    assert any(f["dim_level"] == 30 and abs(f["lamp_power"] - 18.0) <= 0.5 for f in reports)
    assert all(consistent(f) for f in reports), reports
    pole.command("dim", {"seq": 2, "level": 90, "fade": 30.0})  # a fade spans reports
    pole.run(150)
    assert pole.level() == 90
    reports = [f for _, f in pole.uplinks(10)]
    assert reports[-1]["dim_level"] == 90
    assert all(consistent(f) for f in reports), reports
    assert [f["result"] for _, f in pole.uplinks(12)] == ["ok", "ok"]


def test_alarm_frames_carry_the_lamp_state_their_reading_was_taken_in():
    """A door opened during a daytime boot (the alarm is due in the first poll, when the lamp
    just went off), and power_high cleared because dawn switched the lamp off: both frames
    show the lamp off, drawing nothing."""
    pole = Pole(lux=20000.0)
    machine.drive(27, 1)  # a technician has the door open as the pole boots
    pole.run(30)
    (o, f), = alarm_frames(pole)[:1]
    assert f["alarms/door_open"] and f["dim_level"] == 0 and not f["status/lamp_on"], f
    assert consistent(f), f
    # night, a lamp drawing 140 % of its rating: power_high; dawn switches it off and clears it
    machine.drive(27, 0)
    pole.light.lux = 5.0
    pole.lamp = (0.27 * 1.4, 60.0 * 1.4)
    pole.run(60)
    assert pole.level() == 100 and pole.app.alarm.bits & POWER_HIGH
    n = len(alarm_frames(pole))
    pole.light.lux = 20000.0
    pole.run(60)
    assert pole.level() == 0 and not pole.app.alarm.bits & POWER_HIGH
    cleared = [f for _, f in alarm_frames(pole)[n:]]
    assert cleared and not cleared[0]["alarms/power_high"]
    for f in cleared:
        assert f["dim_level"] == 0 and not f["status/lamp_on"] and f["lamp_power"] <= 0.1, f
    assert all(consistent(f) for _, f in alarm_frames(pole) if not f["alarms/power_high"])


def test_lamp_failure_is_not_cleared_by_a_level_change_while_the_lamp_settles():
    """A dead lamp at night, then a dim command: while the lamp settles the current cannot tell,
    so the alarm stays raised (no "cleared" frame followed by "raised" again)."""
    pole = Pole(lux=5.0, lamp_settle_s=30)  # samples every 10 s: some fall inside the settling
    pole.run(60)
    pole.fault = "dead"
    pole.run(30)
    assert pole.app.alarm.bits & 1 and pole.app.alarm.count == 1
    pole.command("dim", {"seq": 1, "level": 50})
    pole.run(400)
    assert pole.level() == 50 and pole.uplinks(12)[-1][1]["result"] == "ok"
    frames = [f for _, f in alarm_frames(pole)]
    assert all(f["alarms/lamp_failure"] for f in frames), frames
    assert pole.app.alarm.bits & 1 and pole.app.alarm.count == 1
    pole.light.lux = 20000.0  # dawn: switched off, nothing to judge, cleared
    pole.run(60)
    assert not pole.app.alarm.bits & 1 and pole.app.alarm.count == 2

"""Dimmer, door switch, config validation, ticks arithmetic, and the fake machine's UART and RTC."""

import datetime
import json

import pytest
from hypothesis import given, settings, strategies as st

from firmware import config
from firmware.drivers.dimmer import Dimmer, level_to_duty
from firmware.drivers.door import Door
from firmware.ticks import Monotonic, ticks_add, ticks_diff
from sim.devices.bl0942 import BL0942 as BL0942Model
from sim.fakes import machine


@pytest.fixture(autouse=True)
def fresh_board():
    machine._uarts.clear()
    machine.power_cut()
    yield
    machine._uarts.clear()


def dimmer(invert=False):
    pwm = machine.PWM(machine.Pin(25, machine.Pin.OUT))
    relay = machine.Pin(26, machine.Pin.OUT, value=0)
    return Dimmer(pwm, relay, invert)


def test_dimmer_levels_relay_and_inversion():
    d = dimmer()
    d.set(100)
    assert machine.pwm_duty(25) == 65535 and machine.level(26) == 1
    d.set(0)
    assert machine.pwm_duty(25) == 0 and machine.level(26) == 0  # relay cuts the driver
    d = dimmer(invert=True)
    d.set(25)
    assert machine.pwm_duty(25) == 65535 - level_to_duty(25) and machine.level(26) == 1
    with pytest.raises(ValueError):
        d.set(101)


def test_dimmer_fade_is_linear_and_ends_on_target():
    d = dimmer()
    d.set(100)
    d.set(0, fade_ms=1000, now_ms=5000)
    assert machine.level(26) == 1  # still lit while fading down
    duties = []
    t = 5000
    wake = d.poll(t)
    while wake is not None:
        duties.append(machine.pwm_duty(25))
        t = wake
        wake = d.poll(t)
    assert duties == sorted(duties, reverse=True) and len(duties) == 10
    assert abs(duties[5] - 65535 // 2) <= 1  # halfway at 500 ms
    assert machine.pwm_duty(25) == 0 and machine.level(26) == 0 and d.level == 0


def test_dimmer_fade_across_the_ticks_wrap():
    d = dimmer()
    start = (1 << 30) - 300
    d.set(80, fade_ms=600, now_ms=start)
    t, wake = start, d.poll(start)
    while wake is not None:
        t, wake = wake, d.poll(wake)
    assert ticks_diff(t, start) == 600 and d.level == 80


def test_door_debounce():
    pin = machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_UP)
    machine.drive(27, 0)
    door = Door(pin, debounce_ms=50)
    assert not door.is_open
    machine.drive(27, 1)  # a bounce: open for 20 ms only
    assert door.poll(1000) == 1050
    machine.drive(27, 0)
    assert door.poll(1020) is None and not door.is_open
    machine.drive(27, 1)
    wake = door.poll(2000)
    assert door.poll(2030) == wake and not door.is_open
    assert door.poll(wake) is None and door.is_open
    machine.drive(27, None)  # a cut wire reads open through the pull-up
    assert door.is_open and door.poll(3000) is None


@settings(max_examples=300)
@given(a=st.integers(0, (1 << 30) - 1), d=st.integers(-(1 << 29) + 1, (1 << 29) - 1))
def test_ticks_match_micropython_semantics(a, d):
    b = ticks_add(a, d)
    assert 0 <= b < 1 << 30 and ticks_diff(b, a) == d


def test_monotonic_survives_wraps():
    t = (1 << 30) - 10
    m = Monotonic(t)
    for _ in range(5):
        t = ticks_add(t, 300000000)
        m.update(t)
    assert m.ms == 1500000000


def test_config_defaults_and_errors(tmp_path):
    assert config.merge()["data_rate"] == 5
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"dev_eui": "0004A30B001C0530", "region": "KR920", "data_rate": 2}))
    cfg = config.load(str(p))
    assert cfg["region"] == "KR920" and cfg["report_interval_s"] == 900
    assert config.load(str(tmp_path / "missing.json")) == config.defaults("pole")
    for bad, msg in (({"app_key": "00"}, "app_key"), ({"region": "US915"}, "US915"),
                     ({"data_rate": 7, "region": "KR920"}, "data rate"),
                     ({"photocell_on_lux": 60}, "hysteresis"), ({"report_interval_s": "x"}, "integer"),
                     ({"colour": 1}, "unknown key"), ({"kind": "water"}, "kind"),
                     ({"kind": "meter", "door_pin": 27}, "door_pin for kind meter")):
        with pytest.raises(config.ConfigError, match=msg):
            config.merge(bad)
    p.write_text("{not json")
    with pytest.raises(config.ConfigError, match="JSON"):
        config.load(str(p))


def test_fake_rtc_follows_clock_and_epoch():
    now = [0]
    machine.set_clock(lambda: now[0])
    machine.set_epoch(None)
    assert machine.RTC().datetime()[:3] == (2000, 1, 1)  # never set, as after power-up
    machine.set_epoch(1767225600)
    now[0] = 90061500
    want = datetime.datetime(2026, 1, 2, 1, 1, 1)
    assert machine.RTC().datetime() == (2026, 1, 2, want.weekday(), 1, 1, 1, 500000)
    machine.soft_reset()  # machine.reset(): the RTC domain stays powered
    assert machine.RTC().datetime()[:3] == (2026, 1, 2)
    machine.power_cut()  # no backup battery: the time is gone, it counts from 2000 again
    assert machine.RTC().datetime()[:7] == (2000, 1, 1, 5, 0, 0, 0)
    now[0] += 61000
    assert machine.RTC().datetime()[:7] == (2000, 1, 1, 5, 0, 1, 1)
    machine.RTC().datetime((2030, 6, 15, 0, 12, 0, 0, 0))
    now[0] += 60000
    assert machine.RTC().datetime()[:7] == (2030, 6, 15, 5, 12, 1, 0)
    machine.set_rtc_battery(True)  # a battery-backed RTC keeps it
    machine.power_cut()
    assert machine.RTC().datetime()[:7] == (2030, 6, 15, 5, 12, 1, 0)
    machine.set_rtc_battery(False)


def test_fake_uart_talks_to_a_model():
    u = machine.UART(2, 4800, tx=17, rx=16, timeout=200)
    assert u.read(4) is None and u.readinto(bytearray(4)) is None  # nothing wired
    model = machine.uart(2).attach(BL0942Model(power=10.0))
    u.write(b"\x58\xaa")
    assert u.any() == 23
    buf = bytearray(23)
    assert u.readinto(buf) == 23 and buf[0] == 0x55 and u.any() == 0
    assert model.packets == 1
    with pytest.raises(ValueError):
        machine.UART(3)


def test_solar_times_against_published_tables():
    from firmware.solar import sun_times_utc
    from firmware.utc_date import day_of_year

    # Berlin (52.52 N, 13.40 E), timeanddate.com: 2025-06-21 sunrise 04:43 / sunset 21:33 CEST,
    # 2025-12-21 sunrise 08:15 / sunset 15:54 CET
    rise, set_ = sun_times_utc(day_of_year(2025, 6, 21), 52.52, 13.40)
    assert abs(rise - (2 * 60 + 43)) <= 3 and abs(set_ - (19 * 60 + 33)) <= 3
    rise, set_ = sun_times_utc(day_of_year(2025, 12, 21), 52.52, 13.40)
    assert abs(rise - (7 * 60 + 15)) <= 3 and abs(set_ - (14 * 60 + 54)) <= 3
    assert sun_times_utc(day_of_year(2025, 6, 21), 80.0, 0.0) is None  # midnight sun
    assert day_of_year(2024, 3, 1) == 61 and day_of_year(2025, 3, 1) == 60

"""firmware.meter_loop on CPython, on a virtual clock: who is polled when, how long the loop
sleeps, and the failure policy (the same loop runs on the MicroPython VM in
test_on_micropython.py, on real time, against a real slave and app)."""

import pytest

from firmware import meter_loop
from firmware.ticks import TICKS_PERIOD, ticks_add


class Reset(Exception):
    pass


class Clock:
    """Microseconds on the ticks circle; ms ticks are derived from them, as on the board."""

    def __init__(self, start_us=0):
        self.us = start_us
        self.sleeps = []

    def ticks_us(self):
        return self.us % TICKS_PERIOD

    def ticks_ms(self):
        return (self.us // 1000) % TICKS_PERIOD

    def sleep_us(self, us):
        assert 0 < us <= 1000000, us  # never a busy wait, never longer than a second
        self.sleeps.append(us)
        self.us += us


class App:
    def __init__(self, clock, period_ms=1000, slave=None, fail_from=None, stop_after=20):
        self.clock, self.period, self.slave = clock, period_ms, slave
        self.fail_from, self.stop_after = fail_from, stop_after
        self.polls = []

    def poll(self, now_ms):
        self.polls.append(now_ms)
        if len(self.polls) > self.stop_after:
            raise SystemExit  # ends the test's loop (not an Exception: not caught as a bug)
        if self.fail_from is not None and len(self.polls) >= self.fail_from:
            raise ValueError("bug")
        return ticks_add(now_ms, self.period)


class Slave:
    def __init__(self, clock, wake_after_us=1042, fail_at=None):
        self.clock, self.wake_after, self.fail_at = clock, wake_after_us, fail_at
        self.polls = []

    def poll(self, now_us):
        self.polls.append(now_us)
        if self.fail_at is not None and len(self.polls) == self.fail_at:
            raise RuntimeError("UART gone")
        return (now_us + self.wake_after) % TICKS_PERIOD


def run(clock, app, resets):
    def reset():
        resets.append(clock.us)
        raise Reset

    with pytest.raises((Reset, SystemExit)):
        meter_loop.run_meter(app, clock.ticks_ms, clock.ticks_us, clock.sleep_us, reset)


def test_without_a_slave_the_app_is_polled_when_it_asked_and_the_loop_sleeps_between():
    clock = Clock()
    app = App(clock, period_ms=300, stop_after=5)
    run(clock, app, [])
    assert app.polls == [0, 300, 600, 900, 1200, 1500]
    assert clock.sleeps == [300000] * 5


def test_a_long_wake_is_slept_a_second_at_a_time():
    clock = Clock()
    app = App(clock, period_ms=2500, stop_after=2)
    run(clock, app, [])
    assert app.polls == [0, 2500, 5000]
    assert clock.sleeps == [1000000, 1000000, 500000] * 2


def test_the_slave_is_polled_at_its_own_pace_between_app_polls():
    clock = Clock()
    slave = Slave(clock, wake_after_us=1042)  # one character at 9600 baud
    app = App(clock, period_ms=1000, slave=slave, stop_after=3)
    run(clock, app, [])
    assert app.polls == [0, 1000, 2000, 3000]  # the slave's polls do not delay the app's
    gaps = [b - a for a, b in zip(slave.polls, slave.polls[1:])]
    assert max(gaps) <= 1042 and len(slave.polls) >= 3000000 // 1042


def test_the_loop_survives_the_ticks_wrap():
    clock = Clock(start_us=(TICKS_PERIOD - 1500) * 1000)  # ms ticks wrap 1.5 s in
    app = App(clock, period_ms=1000, stop_after=3)
    run(clock, app, [])
    assert len(app.polls) == 4 and clock.sleeps == [1000000] * 3


def test_a_failing_app_is_retried_every_second_then_resets_the_board_while_modbus_serves(capsys):
    clock = Clock()
    slave = Slave(clock)
    app = App(clock, period_ms=1000, slave=slave, fail_from=2)
    resets = []
    run(clock, app, resets)
    assert app.polls == [0, 1000, 2000, 3000]  # one good poll, then 3 failures a second apart
    assert len(resets) == 1 and 3000000 <= resets[0] < 3001100  # at the third failure
    assert capsys.readouterr().out.count("main: meter poll") == 3
    assert len(slave.polls) > 2000  # Modbus kept being served meanwhile


def test_a_good_poll_clears_the_failure_count():
    clock = Clock()

    class Flaky(App):
        def poll(self, now_ms):
            self.polls.append(now_ms)
            if len(self.polls) > 8:
                raise SystemExit
            if len(self.polls) % 3:  # two failures, one success, ...
                raise ValueError("flaky")
            return ticks_add(now_ms, 1000)

    resets = []
    run(clock, Flaky(clock), resets)
    assert resets == []  # never 3 in a row


def test_a_slave_that_raises_resets_the_board_at_once(capsys):
    clock = Clock()
    slave = Slave(clock, fail_at=5)
    app = App(clock, slave=slave)
    resets = []
    run(clock, app, resets)
    assert len(resets) == 1 and len(slave.polls) == 5
    assert "main: Modbus slave failed: RuntimeError('UART gone')" in capsys.readouterr().out

"""LocalBoard: private fakes per board, ticks conversion, resets and power cuts, radio events."""

import pytest
from hypothesis import given, settings, strategies as st

from sim.board import REBOOT_MS, LocalBoard, ticks, ticks_diff, TICKS_PERIOD
from sim.sim_radio import SimRadio


class StandInApp:
    """A tiny firmware stand-in: reads the VEML7700 ALS register, keeps a boot counter in NVS
    (committed) and a scratch value (uncommitted), transmits a frame every 10 s."""

    def __init__(self, machine, esp32, cfg, radio, sleep_ms):
        if radio is None:  # the board's own chip, through the firmware's real driver
            from firmware.radio_board import DEFAULT, build_radio

            radio = build_radio(machine, {"board": cfg.get("board", DEFAULT)}, sleep_ms)
        self.machine, self.radio, self.sleep_ms = machine, radio, sleep_ms
        self.i2c = machine.I2C(0)
        self.i2c.writeto_mem(0x10, 0x00, b"\x00\x00")  # ALS on, gain x1, 100 ms
        self.nvs = esp32.NVS("app")
        try:
            self.boots = self.nvs.get_i32("boots") + 1
        except OSError:
            self.boots = 1
        self.nvs.set_i32("boots", self.boots)
        self.nvs.commit()
        self.nvs.set_i32("scratch", 7)  # never committed
        self.next = None
        self.measured = None
        self.events = []
        self.polls = []

    def poll(self, now):
        self.polls.append(now)
        ev = self.radio.poll()
        if ev:
            self.events.append((now, ev))
        if self.next is None:
            self.next = now
        if ticks_diff(now, self.next) >= 0:
            self.sleep_ms(120)  # wait for the integration, as a driver would
            raw = self.i2c.readfrom_mem(0x10, 0x04, 2)
            self.measured = {"als": raw[0] | raw[1] << 8}
            self.radio.transmit(868100000, 7, 125000, 14, b"x" * 20)
            self.next = (self.next + 10000) % TICKS_PERIOD
        return self.next


def make(name, eui, **kw):
    return LocalBoard(name, eui, {"kind": "pole"}, app_factory=StandInApp, strict=True, **kw)


def test_ticks_helpers_wrap_like_micropython():
    assert ticks(TICKS_PERIOD + 5) == 5
    assert ticks_diff(3, TICKS_PERIOD - 2) == 5
    assert ticks_diff(TICKS_PERIOD - 2, 3) == -5


def test_two_boards_share_no_state():
    a, b = make("a", "70B3D57ED0000001"), make("b", "70B3D57ED0000002")
    assert a.machine is not b.machine and a.esp32 is not b.esp32
    a.apply_env({"lux": 50.0})
    b.apply_env({"lux": 500.0})
    a.boot(0)
    b.boot(0)
    a.poll(0)
    b.poll(0)
    assert a.measured["als"] != b.measured["als"]
    assert abs(a.measured["als"] * 0.0576 - 50) < 1 and abs(b.measured["als"] * 0.0576 - 500) < 1
    a.power_cut(20000)
    assert a.app.boots == 2 and b.app.boots == 1  # NVS flash per board
    assert a.nvs_flash["app"]["boots"] == ("i32", 2)
    assert b.nvs_flash["app"]["boots"] == ("i32", 1)
    assert a.machine.unique_id() != b.machine.unique_id()


def test_power_cut_loses_uncommitted_nvs_and_counts_a_cold_boot():
    a = make("a", "70B3D57ED0000001")
    a.boot(0)
    a.poll(0)
    assert a.app.nvs.get_i32("scratch") == 7
    a.machine.RTC().memory(b"keep")
    a.power_cut()
    assert "scratch" not in a.nvs_flash.get("app", {})
    assert a.machine.RTC().memory() == b""
    assert a.machine.reset_cause() == a.machine.PWRON_RESET
    assert a.counters["power_cuts"] == 1 and a.counters["boots"] == 2


def test_machine_reset_soft_resets_and_keeps_rtc_memory():
    class Resetting(StandInApp):
        def poll(self, now):
            if self.boots == 1 and ticks_diff(now, 5000) >= 0:
                self.machine.RTC().memory(b"state")
                self.machine.reset()
            return super().poll(now)

    a = LocalBoard("a", "70B3D57ED0000001", {}, app_factory=Resetting, strict=True)
    a.boot(0)
    a.poll(0)
    wake = a.poll(6000)
    assert a.counters["soft_resets"] == 1
    assert a.app is None and wake == 6000 + REBOOT_MS  # the chip takes its boot time
    a.poll(wake)
    assert a.app.boots == 2
    assert a.machine.reset_cause() == a.machine.SOFT_RESET
    assert a.machine.RTC().memory() == b"state"


def test_crash_is_recorded_and_board_reboots():
    class Crashing(StandInApp):
        def poll(self, now):
            if self.boots == 1:
                raise ValueError("boom")
            return super().poll(now)

    a = LocalBoard("a", "70B3D57ED0000001", {}, app_factory=Crashing)
    a.boot(0)
    wake = a.poll(0)
    assert a.counters["crashes"] == 1 and a.errors[0][1] == "ValueError('boom')"
    a.poll(wake)
    assert a.app.boots == 2


def test_firmware_that_crashes_while_booting_reboots_in_a_loop_without_recursion():
    def broken(*args):
        raise ImportError("no module named 'firmware.pole'")

    a = LocalBoard("a", "70B3D57ED0000001", {}, app_factory=broken)
    wake = a.boot(0)
    for _ in range(2000):  # far more than Python's recursion limit would have allowed
        wake = a.poll(wake)
    assert a.app is None
    assert a.counters["crashes"] == 2001 and a.counters["boots"] == 2001
    assert wake == 2001 * REBOOT_MS  # each reset costs the chip's boot time


def test_poll_converts_ticks_across_the_wrap():
    a = make("a", "70B3D57ED0000001")
    start = TICKS_PERIOD - 3000
    first = a.boot(start)
    assert first == start + 7  # the radio driver's boot: 1 ms reset pulse + 6 ms before SPI
    wake = a.poll(start)  # the board is already 7 ms further: its poll runs then
    # the app slept 120 ms in the poll; its next slot is 10 s after its first poll, past the wrap
    assert wake == first + 10000
    assert a.app.polls[-1] == ticks(first)
    a.poll(wake)
    assert a.app.polls[-1] == ticks(first + 10000) == 7007


def test_sleep_ms_moves_the_board_clock_and_the_radio_reports_tx_done():
    a = make("a", "70B3D57ED0000001")
    t = a.boot(1000)
    a.poll(t)
    (tx,) = a.radio.pending_tx()
    assert tx[0] == t + 120 and tx[5] == b"x" * 20  # transmitted after the 120 ms sleep
    end = a.radio.next_event_ms()
    assert end == t + 120 + 57  # SF7 20-byte frame: 56.576 ms, rounded up
    assert a.next_wake_ms() == end
    a.poll(end)
    assert a.app.events == [(ticks(end), ("tx_done",))]


def test_outputs_and_door_pin():
    def factory(machine, esp32, cfg, radio, sleep_ms):
        class App:
            def __init__(self):
                self.door = machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_UP)
                self.pwm = machine.PWM(machine.Pin(25), duty_u16=32768)
                self.relay = machine.Pin(26, machine.Pin.OUT, value=1)

            def poll(self, now):
                self.measured = {"door": self.door.value()}
                return now + 1000
        return App()

    a = LocalBoard("a", "70B3D57ED0000001", {}, app_factory=factory, strict=True)
    a.boot(0)
    a.poll(0)
    assert a.outputs() == {"dimmer_duty_u16": 32768, "relay": 1}
    assert a.measured == {"door": 0}
    a.apply_env({"door_open": True})
    a.poll(1000)
    assert a.measured == {"door": 1}
    a.power_cut(1500)
    a.poll(1500)
    assert a.measured == {"door": 1}  # still open after the reboot


def test_meter_integrates_energy_between_env_changes():
    a = make("a", "70B3D57ED0000001")
    a.boot(0)
    a.apply_env({"power_w": 100.0})
    a.poll(3600 * 1000)  # one hour at 100 W = 0.1 kWh
    assert 533 <= a.energy_counts <= 535  # 5347.3 counts/kWh


def test_sim_radio_rx_window_catch_and_timeout():
    r = SimRadio("r")
    r.now_ms = 1000
    r.receive(868100000, 7, 125000, 20)
    assert r.rx_window() == (868100000, 7, 125000, 1000, 1020)
    assert not r.catches(868300000, 7, 125000, 1000000)  # wrong channel
    assert not r.catches(868100000, 8, 125000, 1000000)  # wrong SF
    assert not r.catches(868100000, 7, 125000, 1021000)  # starts after the timeout
    assert r.catches(868100000, 7, 125000, 999000)  # window opened 1 ms into the preamble
    assert not r.catches(868100000, 7, 125000, 990000)  # too little preamble left
    r.deliver(b"down", -80, 7.5, 1040)
    r.now_ms = 1020
    assert r.poll() is None  # locked on a preamble: no timeout
    assert r.next_event_ms() == 1040
    r.now_ms = 1040
    assert r.poll() == ("rx", b"down", -80, 7.5)
    assert r.poll() is None
    r.receive(869525000, 12, 125000, 30)
    r.now_ms = 1070
    assert r.poll() == ("rx_timeout",)
    assert r.poll() is None
    with pytest.raises(RuntimeError):
        r.deliver(b"x", -80, 5, 1100)


def test_rssi_sees_a_neighbours_frame_for_listen_before_talk():
    from sim.air import Air
    from sim.clock import VirtualClock
    from sim.radio import Medium, path_loss_db

    air = Air(Medium(), VirtualClock(speed=None))
    a, b = make("a", "70B3D57ED0000001", x=0.0), make("b", "70B3D57ED0000002", x=50.0)
    air.add_board(a)
    air.add_board(b)
    a.boot(0)
    air.wake(a, 0)
    air.step(0)  # a samples for 120 ms, then transmits until ~177 ms
    b.radio.now_ms = 150
    assert b.radio.rssi(868100000) == round(14 - path_loss_db(50.0))
    assert b.radio.rssi(868500000) == -120  # another channel: idle
    b.radio.now_ms = 200
    assert b.radio.rssi(868100000) == -120  # the frame has ended


def test_real_firmware_boards_are_isolated():
    cfg = {"join_eui": "70B3D57ED0000000", "app_key": "2B7E151628AED2A6ABF7158809CF4F3C",
           "join_jitter_s": 0}
    a = LocalBoard("a", "70B3D57ED0000001", dict(cfg, dev_eui="70B3D57ED0000001"), strict=True)
    b = LocalBoard("b", "70B3D57ED0000002", dict(cfg, dev_eui="70B3D57ED0000002"), strict=True)
    a.apply_env({"lux": 3.0, "temperature_c": 4.0, "humidity_rh": 90.0})
    b.apply_env({"lux": 800.0, "temperature_c": 21.0, "humidity_rh": 40.0})
    for board in (a, b):
        w = board.boot(0)
        for _ in range(3):
            w = board.poll(w)
    (ta,), (tb,) = a.radio.pending_tx() or [None], b.radio.pending_tx() or [None]
    assert ta[5][0] == tb[5][0] == 0x00  # both sent a join-request ...
    assert ta[5][9:17] != tb[5][9:17]  # ... with their own DevEUI
    assert a.measured["temperature"] == 4.0 and b.measured["temperature"] == 21.0
    assert a.measured["ambient_light"] < 10 < 500 < b.measured["ambient_light"]
    assert a.outputs()["dimmer_duty_u16"] == 65535  # dark: lamp on
    assert a.nvs_flash is not b.nvs_flash and a.nvs_flash and b.nvs_flash


def test_rtc_reads_the_virtual_utc():
    a = make("a", "70B3D57ED0000001", epoch_s=1767225600)  # 2026-01-01T00:00:00Z
    a.boot(0)
    a.poll(86_400_000 + 3_723_000)  # one day, 1 h 2 min 3 s later
    assert a.machine.RTC().datetime()[:7] == (2026, 1, 2, 4, 1, 2, 3)


# -- SimRadio as a state machine: every event exactly once, in a sane order ---------------

_ops = st.lists(st.one_of(
    st.tuples(st.just("tx"), st.integers(1, 60)),
    st.tuples(st.just("rx"), st.integers(0, 50)),
    st.tuples(st.just("deliver"), st.integers(0, 80)),
    st.tuples(st.just("standby"), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 300))), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_sim_radio_reports_each_operation_once_unless_aborted(ops):
    r = SimRadio("r")
    now = 0
    started = aborted = 0
    events = []

    def drain():
        e = r.poll()
        while e is not None:
            events.append(e)
            e = r.poll()

    for op, n in ops:
        r.now_ms = now
        drain()  # the MAC looks at its radio first
        if op in ("tx", "rx", "standby") and r.busy():
            aborted += 1  # the new operation (or standby) cuts the running one short
        if op == "tx":
            r.transmit(868100000, 7, 125000, 14, bytes(n))
            started += 1
        elif op == "rx":
            r.receive(868100000, 7, 125000, n)
            started += 1
        elif op == "deliver" and r.rx_window() is not None:
            r.deliver(b"d", -80, 5.0, now + n)
        elif op == "standby":
            r.standby()
        elif op == "wait":
            now += n
    while r.next_event_ms() is not None:
        now = max(now, r.next_event_ms())
        r.now_ms = now
        drain()
    assert r.poll() is None and not r.busy()
    assert len(events) == started - aborted
    assert all(e[0] in ("tx_done", "rx", "rx_timeout") for e in events)
    assert all(e == ("rx", b"d", -80, 5.0) for e in events if e[0] == "rx")


def test_a_new_operation_aborts_the_running_one_without_an_event():
    r = SimRadio("r")
    r.receive(868100000, 7, 125000, 100)
    r.now_ms = 10
    r.transmit(868100000, 7, 125000, 14, bytes(10))  # RX aborted
    r.now_ms = 20
    r.standby()  # TX aborted (the frame is already on the air for the hub)
    r.now_ms = 500
    assert r.poll() is None and r.next_event_ms() is None
    assert len(r.pending_tx()) == 1

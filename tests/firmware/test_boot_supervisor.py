"""The boot supervisor (issue #11): the watchdog resets a board whose driver hangs, N boots in a
row that fail before the application is healthy give a safe mode (lamp safe, radio quiet),
safe mode lets the application try again later, and none of it loses provisioning, counters or
energy. The real firmware (main.create) on emulated boards; faults injected where a real board
would have them (a driver that blocks, a bug that crashes every poll)."""

import sys

import pytest

import sim.mpvm
from firmware import main
from firmware.nvs_store import NvsStore
from firmware.safe_mode import HOLD_MS, SafeMode
from sim.board import LocalBoard

EUI = "70B3D57ED00000B1"
POLE = {"kind": "pole", "dev_eui": EUI, "join_eui": "70b3d57ed0000000",
        "app_key": "2b7e151628aed2a6abf7158809cf4f3c", "join_jitter_s": 0}
MINUTE = 60000


def run_until(board, t, end_ms, stop=None):
    while t < end_ms and not (stop and stop()):
        t = board.poll(t)
    return t


def boot_fails(board):
    return NvsStore(board.esp32.NVS("pole")).load("boot_fails")


def durable(board):
    """Every committed NVS value except the supervisor's own keys."""
    out = {}
    for ns, keys in board.nvs_flash.items():
        for k, v in keys.items():
            if k not in ("boot_fails", "safe_modes", "safe_told"):
                out[(ns, k)] = bytes(v) if isinstance(v, (bytes, bytearray)) else v
    return out


COUNTERS = ("devnonce", "fcnt_up", "alarm_count")  # they move on at a boot, never back


def assert_nothing_lost(before, after):
    for (ns, k), v in before.items():
        assert (ns, k) in after, "%s/%s was wiped" % (ns, k)
        if k in COUNTERS:
            old, new = (int.from_bytes(x[1], "little") for x in (v, after[(ns, k)]))
            assert new >= old, "%s/%s went back: %d -> %d" % (ns, k, old, new)
        else:
            assert after[(ns, k)] == v, "%s/%s changed" % (ns, k)


def test_a_driver_that_hangs_is_reset_by_the_watchdog_and_a_slow_one_is_not():
    b = LocalBoard("wdt", EUI, POLE)
    t = run_until(b, b.boot(0), 2 * MINUTE)
    app = b.app
    assert app.wdt is not None and b.counters["wdt_resets"] == 0
    real = app.hw.light.lux_milli

    def slow():  # the light sensor holds the I2C bus for 20 s: well inside the 30 s timeout
        b.sleep_ms(20000)
        return real()

    app.hw.light.lux_milli = slow
    t = run_until(b, t, t + 3 * MINUTE)
    assert b.counters["wdt_resets"] == 0 and b.app is app

    def hung():  # now for 45 s: the watchdog is not fed, the board resets
        b.sleep_ms(45000)
        return real()

    app.hw.light.lux_milli = hung
    before = durable(b)
    t = run_until(b, t, t + 3 * MINUTE, stop=lambda: b.counters["wdt_resets"])
    assert b.counters["wdt_resets"] == 1 and b.counters["crashes"] == 0
    t = run_until(b, t, t + MINUTE)
    assert b.app is not app and b.machine.reset_cause() == b.machine.WDT_RESET
    assert b.counters["wdt_resets"] == 1  # the new boot's drivers answer: no second reset
    assert_nothing_lost(before, durable(b))


def crashing_factory(crashes):
    """main.create, with a bug that crashes every poll for the first `crashes` boots."""
    left = [crashes]

    def create(machine, esp32, cfg, radio, sleep_ms):
        app = main.create(machine, esp32, cfg, radio, sleep_ms, rng=lambda n: 0)
        if not app.safe_mode and left[0]:
            left[0] -= 1

            def poll(now_ms):
                raise RuntimeError("a bug in this image")

            app.poll = poll
        return app

    return create, left


def with_network(board, t, end_ms, stop=None, net=None):
    """run_until, with a network server answering the join (bench.firmware_heap.Network, or
    net)."""
    from bench.firmware_heap import Network

    net = net or Network(board)
    while t < end_ms and not (stop and stop()):
        for tx in board.radio.pending_tx():
            net.on_tx(tx)
        net.offer()
        t = board.next_wake_ms()
        board.poll(t)
    return t


def test_five_failed_boots_give_a_safe_mode_then_the_application_again_and_nothing_is_wiped():
    factory, left = crashing_factory(0)
    b = LocalBoard("safe", EUI, dict(POLE, default_level=80), app_factory=factory)
    t = with_network(b, b.boot(0), 12 * MINUTE)
    assert b.app.mac.joined and boot_fails(b) == 0 and not b.app.safe_mode
    before = durable(b)
    assert ("lorawan", "session") in before and ("lorawan", "fcnt_up") in before

    left[0] = 5  # the next five boots crash at their first poll (a bad update, say)
    b.power_cut(t)
    t = run_until(b, t, t + 10 * MINUTE, stop=lambda: isinstance(b.app, SafeMode))
    assert b.counters["crashes"] == 5 and isinstance(b.app, SafeMode)
    assert boot_fails(b) == 0  # cleared by the safe mode: its reset tries the app again
    assert NvsStore(b.esp32.NVS("pole")).load("safe_modes") == 1
    # lamp at its safe level (80 %), radio quiet for the whole hold
    assert b.outputs()["dimmer_duty_u16"] == 80 * 65535 // 100
    tx = b.radio.counters["tx"]
    t = run_until(b, t, t + HOLD_MS - MINUTE)
    assert isinstance(b.app, SafeMode) and b.radio.counters["tx"] == tx
    assert_nothing_lost(before, durable(b))
    # after the hold: a reset, and the (now working) application boots again, on the session
    # it had: no join, its counters where they were
    t = run_until(b, t, t + 2 * MINUTE, stop=lambda: b.app is not None and not b.app.safe_mode)
    assert not b.app.safe_mode and b.app.mac.joined
    b.radio.pending_tx()
    t = with_network(b, t, t + 11 * MINUTE)
    assert boot_fails(b) == 0 and b.counters["crashes"] == 5
    assert b.app.mac.joins == 0  # resumed, never joined again
    assert_nothing_lost(before, durable(b))  # (provisioning is the config file: never written)


def acking_network(board):
    """bench.firmware_heap.Network that also opens every uplink, keeps (fport, decoded fields)
    in .frames, and acknowledges confirmed ones in RX1, as any network server does (unless
    .ack is False)."""
    from bench.firmware_heap import Network
    from protocol import payload
    from protocol.lorawan import frame, session

    class Acking(Network):
        def __init__(self, board):
            super().__init__(board)
            self.frames = []
            self.fcnt_down = 0
            self.ack = True

        def on_tx(self, tx):
            phy = tx[5]
            up = phy[0] >> 5
            super().on_tx(tx)
            if up not in (frame.UNCONFIRMED_UP, frame.CONFIRMED_UP):
                return
            o = session.open_data_frame(phy, self.keys[0], self.keys[1], backend="cryptography")
            assert o.mic_ok
            if o.frame.fport:
                self.frames.append((o.frame.fport,
                                    payload.decode_uplink(o.frame.fport, o.payload)["fields"]))
            if up == frame.CONFIRMED_UP and self.ack:
                end = tx[0] + -(-self.toa(len(phy), tx[2], tx[3]) // 1000)
                ack = session.build_data_frame(frame.UNCONFIRMED_DOWN, o.frame.dev_addr,
                                               self.fcnt_down, None, b"", self.keys[0],
                                               self.keys[1], ack=True, backend="cryptography")
                self.fcnt_down += 1
                self.pending = (end + 1000, tx[1], tx[2], tx[3], ack)

    return Acking(board)


def boot_frames(net):
    return [f for port, f in net.frames if port == 13]


def test_the_first_uplink_after_a_safe_mode_reports_it_until_the_network_acknowledges_it(capsys):
    """The boot frame (fPort 13): first of the recovery boot's uplinks, with the safe mode
    flagged; kept flagged while no boot frame that carries it is acknowledged; then a plain
    power-on says nothing and a reset says what reset the board."""
    factory, left = crashing_factory(0)
    b = LocalBoard("told", EUI, POLE, app_factory=factory)
    net = acking_network(b)
    t = with_network(b, b.boot(0), 12 * MINUTE, net=net)
    assert b.app.mac.joined and net.frames and not boot_frames(net)  # a power-on: no boot frame
    left[0] = 5
    b.power_cut(t)
    t = run_until(b, t, t + 10 * MINUTE, stop=lambda: isinstance(b.app, SafeMode))
    # the safe mode's reset; the recovery boot resumes its session and reports before anything
    sent = len(net.frames)
    t = run_until(b, t, t + HOLD_MS + 2 * MINUTE,
                  stop=lambda: b.app is not None and not b.app.safe_mode)
    assert b.machine.reset_cause() == b.machine.SOFT_RESET
    b.radio.pending_tx()  # (nothing was listening for the TX queued while run_until ran)
    t = with_network(b, t, t + 11 * MINUTE, net=net)
    recovery = net.frames[sent:]
    assert recovery[0][0] == 13, "the boot frame is not the first uplink: %r" % recovery[:2]
    f = recovery[0][1]
    assert f["events/safe_mode"] is True and f["safe_modes"] == 1
    assert f["reset_cause"] == "soft" and f["failed_boots"] == 0
    assert [p for p, _ in recovery[1:]].count(13) == 0 and 10 in [p for p, _ in recovery]
    assert NvsStore(b.esp32.NVS("pole")).load("safe_told") == 1  # acknowledged
    from fieldkit.verify import Console  # what the technician's verify shows of it

    console = Console()
    for line in capsys.readouterr().out.splitlines():
        console.feed(line)
    assert console.boot_frame == "reset 5, 0 failed boots before, 1 safe modes (one not " \
                                 "reported yet)"
    # a power cut after healthy boots, everything told: no boot frame
    sent = len(net.frames)
    b.power_cut(t)
    t = with_network(b, t, t + 11 * MINUTE, net=net)
    assert len(net.frames) > sent and not [p for p, _ in net.frames[sent:] if p == 13]
    # a driver that hangs: the watchdog's reset gets a boot frame; the safe mode is old news
    sent = len(net.frames)
    real = b.app.hw.light.lux_milli

    def hung():
        b.sleep_ms(45000)
        return real()

    b.app.hw.light.lux_milli = hung
    t = with_network(b, t, t + 11 * MINUTE, net=net)
    assert b.counters["wdt_resets"] == 1
    f = [f for port, f in net.frames[sent:] if port == 13]
    assert len(f) == 1 and f[0]["reset_cause"] == "watchdog"
    assert f[0]["events/safe_mode"] is False and f[0]["safe_modes"] == 1


def test_a_boot_frame_the_network_never_acknowledges_is_sent_again_at_the_next_boot():
    factory, left = crashing_factory(0)
    b = LocalBoard("untold", EUI, POLE, app_factory=factory)
    net = acking_network(b)
    net.ack = False
    t = with_network(b, b.boot(0), 12 * MINUTE, net=net)
    left[0] = 5
    b.power_cut(t)
    t = run_until(b, t, t + 10 * MINUTE, stop=lambda: isinstance(b.app, SafeMode))
    t = run_until(b, t, t + HOLD_MS + 2 * MINUTE,
                  stop=lambda: b.app is not None and not b.app.safe_mode)
    b.radio.pending_tx()
    sent = len(net.frames)
    t = with_network(b, t, t + 11 * MINUTE, net=net)  # the boot frame's retries go unanswered
    told = [f for port, f in net.frames[sent:] if port == 13]
    assert told and all(f["events/safe_mode"] for f in told)
    store = NvsStore(b.esp32.NVS("pole"))
    assert store.load("safe_modes") == 1 and store.load("safe_told") is None
    net.ack = True
    sent = len(net.frames)
    b.power_cut(t)  # a power-on, but a safe mode is still untold: told again, acknowledged now
    t = with_network(b, t, t + 11 * MINUTE, net=net)
    told = [f for port, f in net.frames[sent:] if port == 13]
    assert len(told) == 1 and told[0]["events/safe_mode"] and told[0]["reset_cause"] == "power_on"
    assert store.load("safe_told") == 1


def test_power_cuts_before_the_device_is_healthy_are_not_failed_boots():
    """Flickering mains (a storm): eight power cuts, each a minute into the boot."""
    b = LocalBoard("storm", EUI, POLE)
    t = b.boot(0)
    for _ in range(8):
        t = run_until(b, t, t + MINUTE)
        b.power_cut(t)
        assert boot_fails(b) == 1 and not b.app.safe_mode
    assert b.counters["power_cuts"] == 8


def test_fewer_failed_boots_than_the_limit_do_not_give_a_safe_mode():
    factory, left = crashing_factory(4)
    b = LocalBoard("four", EUI, POLE, app_factory=factory)
    t = run_until(b, b.boot(0), 10 * MINUTE, stop=lambda: b.counters["crashes"] == 4 and b.app)
    t = run_until(b, t, t + 11 * MINUTE)
    assert b.counters["crashes"] == 4 and not b.app.safe_mode
    assert boot_fails(b) == 0  # the fifth boot proved itself healthy
    assert NvsStore(b.esp32.NVS("pole")).load("safe_modes") is None


def updated_board(name, factory=None):
    """A pole whose MicroPython firmware was just updated over the air: the other OTA slot is
    set to boot, and the board reset into it (sim.fakes.esp32_ota)."""
    from sim.fakes import esp32_ota

    b = LocalBoard(name, EUI, POLE, app_factory=factory)
    ota = esp32_ota.attach(b.machine, b.esp32)
    part = b.esp32.Partition
    part(part.RUNNING).get_next_update().set_boot()  # what an OTA updater does last
    b.power_cut(0)  # (a reset the same way: the bootloader starts the new image)
    assert ota.running == "ota_1" and ota.pending
    return b, ota


def test_a_joined_device_is_healthy_after_its_first_uplink_and_keeps_its_new_firmware():
    """boot_health.passed(): the count cleared and ESP32 OTA's rollback cancelled."""
    b, ota = updated_board("ota")
    assert boot_fails(b) == 1
    t = with_network(b, 0, 5 * MINUTE, stop=lambda: b.app.mac.uplinks)
    assert b.app.mac.joined and b.app.mac.uplinks  # long before the 10-minute fallback
    assert boot_fails(b) == 1 and ota.pending  # not yet: the uplink is queued, its poll next
    b.poll(b.next_wake_ms())
    assert boot_fails(b) == 0 and not ota.pending
    b.power_cut(b.clock())  # later resets keep the new image
    assert ota.running == "ota_1" and ota.rollbacks == 0


def test_a_new_firmware_that_crashes_before_it_is_healthy_is_rolled_back():
    factory, left = crashing_factory(1)
    b, ota = updated_board("rollback", factory)
    t = run_until(b, 0, MINUTE, stop=lambda: b.counters["crashes"])
    assert b.counters["crashes"] == 1
    t = run_until(b, t, t + MINUTE, stop=lambda: b.app is not None)
    assert ota.rollbacks == 1 and ota.running == "ota_0" and not ota.pending
    assert [label for label, _ in ota.boots] == ["ota_1", "ota_0"]
    assert b.app is not None and not b.app.safe_mode  # the old image runs, normally


@pytest.mark.skipif(not sim.mpvm.available(), reason="MicroPython VM missing")
def test_the_watchdog_resets_a_hung_driver_on_micropython():
    from sim.vmboard import VMBoard

    b = VMBoard("wdt-vm", EUI, POLE, strict=False)
    try:
        t = b.boot(0)
        while t < 2 * MINUTE:
            t = b.poll(t)
        b.eval("exec(%r, {'app': app, 'board': board})" % (
            "real = app.hw.light.lux_milli\n"
            "def hung():\n    board.sleep_ms(45000)\n    return real()\n"
            "app.hw.light.lux_milli = hung\n"))
        end = t + 3 * MINUTE
        while t < end and not b.counters["wdt_resets"]:
            t = b.poll(t)
        assert b.counters["wdt_resets"] == 1
    finally:
        b.close()


def test_ctrl_c_stops_the_loop_and_leaves_the_repl_with_the_watchdog_fed(tmp_path, monkeypatch):
    """main.run() on the device's own modules (the fakes, with a Timer as machine has one): a
    technician's Ctrl-C must not be followed by a watchdog reset 30 s later."""
    import json
    import types

    from firmware.pole import PoleApp
    from firmware.ticks import ticks_diff
    from sim.board import load_fake

    machine, esp32 = load_fake("machine", "run"), load_fake("esp32", "run")
    clock = [0]
    machine.set_clock(lambda: clock[0])
    timers = []

    class Timer:
        def __init__(self, id):
            self.id = id

        def init(self, period, callback):
            timers.append((self.id, period, callback))

    machine.Timer = Timer

    def sleep_ms(ms):
        clock[0] += ms

    fake_time = types.SimpleNamespace(ticks_ms=lambda: clock[0] % (1 << 30), ticks_diff=ticks_diff,
                                      sleep_ms=sleep_ms)
    for name, mod in (("machine", machine), ("esp32", esp32), ("time", fake_time)):
        monkeypatch.setitem(sys.modules, name, mod)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(POLE))
    polls = [0]
    real = PoleApp.poll

    def poll(self, now_ms):
        polls[0] += 1
        if polls[0] == 5:
            raise KeyboardInterrupt  # Ctrl-C arrives while the loop runs
        return real(self, now_ms)

    monkeypatch.setattr(PoleApp, "poll", poll)
    with pytest.raises(KeyboardInterrupt):
        main.run(str(path))
    assert [(i, p) for i, p, _ in timers] == [(0, 1000)]
    for _ in range(3600):  # an hour at the REPL: the timer's callback every second
        clock[0] += 1000
        timers[0][2](None)
        assert not machine.wdt_expired()
    clock[0] += 31000  # and what the timer prevents: 31 s unfed
    assert machine.wdt_expired()

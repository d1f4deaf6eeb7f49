"""VMBoard: the firmware on the real MicroPython VM behind the Board protocol.

First with a small stand-in app (tests/sim/vmapp/standin.py) for the board mechanics (time,
radio calls over the pipe, NVS, resets, power cuts, env), then the real firmware joining and
reporting to a network-server stand-in built on protocol.lorawan.session in CPython, which
checks every byte.
"""

import os

import pytest

import sim.mpvm
from sim.board import REBOOT_MS
from sim.board import TICKS_PERIOD, ticks

pytestmark = pytest.mark.skipif(not sim.mpvm.available(),
                                reason="node or the MicroPython npm package missing")

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = (os.path.relpath(os.path.join(HERE, "vmapp"), sim.mpvm.ROOT), "/lib/vmapp")


def standin(cfg=None, strict=True, name="a", eui="70B3D57ED0000001"):
    from sim.vmboard import VMBoard
    return VMBoard(name, eui, dict(cfg or {"kind": "pole"}), app="vmapp.standin:create",
                   mounts=(STANDIN,), strict=strict)


@pytest.fixture
def board():
    b = standin()
    yield b
    b.close()


def test_it_runs_on_micropython_and_reads_the_chip_models(board):
    assert board.eval("__import__('sys').implementation.name") == "micropython"
    board.apply_env({"lux": 50.0})
    board.boot(0)
    board.poll(0)
    assert abs(board.measured["als"] * 0.0576 - 50) < 1  # VEML7700 model, gain x1, 100 ms
    assert board.eval("machine.unique_id()") == "d57ed0000001"  # per board, from the DevEUI
    assert "| standin boot 1\n" in board.firmware_output()  # prints kept out of the protocol


def test_radio_calls_cross_the_pipe_at_the_vm_clock(board):
    t = board.boot(1000)
    assert t == 1007  # the radio driver's boot: 1 ms reset pulse + 6 ms before SPI
    assert board.poll(t) == t + 10000
    (tx,) = board.radio.pending_tx()
    assert tx[0] == t + 120 and tx[5] == b"x" * 20  # transmitted after the app's 120 ms sleep
    end = board.radio.next_event_ms()
    assert end == t + 120 + 57  # SF7, 20 bytes: 56.576 ms, rounded up
    assert board.next_wake_ms() == end
    board.poll(end)
    assert board.eval("app.events") == [[ticks(end), ["tx_done"]]]


def test_downlink_bytes_reach_the_firmware_intact():
    from sim.vmboard import VMBoard
    b = VMBoard("dl", "70B3D57ED0000009", {}, app="vmapp.standin:create", mounts=(STANDIN,),
                strict=True)
    try:
        b.poll(b.boot(0))  # transmits after 127 ms, for 57 ms
        b.poll(200)
        # the app's driver opens an RX window on its chip model, at the board's clock (200 ms)
        b.eval("app.radio.receive(869525000, 12, 125000, 50)")
        phy = bytes(range(256))[::7]
        b.radio.deliver(phy, -97, -3.25, 240)
        b.poll(240)
        assert b.eval("app.events[-1]") == [240, ["rx", phy.hex(), -97, -3.25]]
        assert b.eval("type(app.events[-1][1][1]).__name__") == "bytes"
    finally:
        b.close()


def test_poll_converts_ticks_across_the_wrap(board):
    start = TICKS_PERIOD - 3000
    first = board.boot(start)  # the radio driver's boot takes 7 ms
    assert first == start + 7
    assert board.poll(first) == first + 10000
    assert board.eval("app.polls[-1]") == ticks(first)
    board.poll(first + 10000)
    assert board.eval("app.polls[-1]") == 7007


def test_power_cut_loses_uncommitted_nvs_and_rtc_memory(board):
    board.boot(0)
    board.poll(0)
    assert board.eval("app.nvs.get_i32('scratch')") == 7
    board.eval("machine.RTC().memory(b'keep')")
    board.power_cut(5000)
    assert board.nvs_flash["app"] == {"boots": ["i32", 2]}
    assert board.eval("machine.RTC().memory()") == ""
    assert board.eval("machine.reset_cause()") == board.eval("machine.PWRON_RESET")
    assert board.counters["power_cuts"] == 1 and board.counters["boots"] == 2
    assert board.radio.pending_tx() == []  # the radio was powered off with the board


def test_machine_reset_soft_resets_and_keeps_rtc_memory():
    b = standin({"reset_at_boot": 1})
    try:
        t = b.boot(0)
        wake = b.poll(t)  # the app resets the board in its first poll, 7 ms after power-on
        assert b.counters["soft_resets"] == 1 and b.counters["boots"] == 1
        assert wake == t + REBOOT_MS  # the chip takes its boot time, as on LocalBoard
        b.poll(wake)
        assert b.counters["boots"] == 2
        assert b.eval("app.boots") == 2
        assert b.eval("machine.reset_cause()") == b.eval("machine.SOFT_RESET")
        assert b.eval("machine.RTC().memory()") == b"state".hex()
    finally:
        b.close()


def test_a_crash_is_recorded_and_the_board_reboots_unless_strict():
    b = standin({"crash_at_boot": 1}, strict=False)
    try:
        t = b.boot(0)
        wake = b.poll(t)
        assert b.counters["crashes"] == 1
        assert b.errors[0][0] == t and "ValueError" in b.errors[0][1] and "boom" in b.errors[0][1]
        b.poll(wake)
        assert b.eval("app.boots") == 2
    finally:
        b.close()

    from sim.vmboard import FirmwareError
    b = standin({"crash_at_boot": 1}, strict=True)
    try:
        b.boot(0)
        with pytest.raises(FirmwareError, match="boom"):
            b.poll(0)
        assert b.eval("1 + 1") == 2  # the VM keeps serving
    finally:
        b.close()


def test_outputs_door_and_meter(board):
    board.boot(0)
    board.poll(0)
    assert board.outputs() == {"dimmer_duty_u16": None, "relay": None}
    board.eval("machine.PWM(machine.Pin(25), duty_u16=32768)")
    board.eval("machine.Pin(26, machine.Pin.OUT, value=1)")
    assert board.outputs() == {"dimmer_duty_u16": 32768, "relay": 1}
    assert board.eval("machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_UP).value()") == 0
    board.apply_env({"door_open": True, "power_w": 100.0})
    assert board.eval("machine.Pin(27).value()") == 1
    board.poll(3600 * 1000)  # one hour at 100 W = 0.1 kWh
    assert 533 <= board.energy_counts <= 535  # 5347.3 counts/kWh


def test_two_vm_boards_share_nothing():
    a, b = standin(name="a"), standin(name="b", eui="70B3D57ED0000002")
    try:
        for x, lux in ((a, 50.0), (b, 500.0)):
            x.apply_env({"lux": lux})
            x.boot(0)
            x.poll(0)
        assert a.measured["als"] * 10 == pytest.approx(b.measured["als"], rel=0.01)
        a.power_cut(20000)
        assert a.eval("app.boots") == 2 and b.eval("app.boots") == 1
    finally:
        a.close()
        b.close()


def test_a_vm_that_dies_is_a_clear_error():
    from sim.vmboard import VMError
    b = standin()
    try:
        b.boot(0)
        b._proc.kill()
        with pytest.raises(VMError, match="stopped"):
            b.poll(10)
    finally:
        b.close()


def test_a_missing_app_is_a_clear_error():
    from sim.vmboard import VMBoard, VMError
    with pytest.raises(VMError, match="no_such_module"):
        VMBoard("x", "70B3D57ED0000003", {}, app="no_such_module:create")


# ---- the real firmware on the VM, against a network server played by CPython ---------------

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000000")
DEV_EUI = bytes.fromhex("70b3d57ed0000011")
POLE_CFG = {"kind": "pole", "dev_eui": DEV_EUI.hex(), "join_eui": JOIN_EUI.hex(),
            "app_key": APP_KEY.hex(), "join_jitter_s": 0, "report_interval_s": 300}


class NetworkServer:
    """Answers joins in the device's RX1 window (same channel and SF, JOIN_ACCEPT_DELAY1 = 5 s)
    and opens data frames, with protocol.lorawan.session on the `cryptography` backend."""

    def __init__(self, board):
        from protocol.lorawan import airtime
        self.airtime = airtime
        self.board = board
        self.join_requests, self.uplinks = [], []
        self.keys = None
        self.dev_addr = 0x26011F3A
        self._pending = None  # (open_at_ms, phy) downlink waiting for the RX1 window

    def on_tx(self, tx):
        from protocol.lorawan import frame, network_side, session
        from protocol.lorawan import join as lw_join
        start_ms, freq, sf, bw, power, phy = tx
        end_ms = start_ms + -(-self.airtime.time_on_air_us(len(phy), sf, bw) // 1000)
        mtype = phy[0] >> 5
        if mtype == frame.JOIN_REQUEST:
            jr = network_side.open_join_request(phy, APP_KEY, backend="cryptography")
            self.join_requests.append(jr)
            join_nonce = 0x000100 + len(self.join_requests)
            self.keys = lw_join.derive_session_keys(APP_KEY, join_nonce, 0x000013, jr.dev_nonce,
                                                     backend="cryptography")
            accept = network_side.build_join_accept(APP_KEY, join_nonce, 0x000013, self.dev_addr, 0, 0,
                                                    1, backend="cryptography")
            self._pending = (end_ms + 5000, freq, sf, bw, accept)
        else:
            nwk, app = self.keys
            last = self.uplinks[-1].fcnt if self.uplinks else None
            self.uplinks.append(session.open_data_frame(phy, nwk, app, last_fcnt=last,
                                                        backend="cryptography"))

    def offer_downlink(self):
        """Deliver the pending downlink if the board's window catches it now."""
        if self._pending is None:
            return
        at, freq, sf, bw, phy = self._pending
        w = self.board.radio.rx_window()
        if w is not None and self.board.radio.catches(freq, sf, bw, at * 1000):
            toa = self.airtime.time_on_air_us(len(phy), sf, bw)
            self.board.radio.deliver(phy, -70, 8.5, at + -(-toa // 1000))
            self._pending = None


def run_until(board, ns, until_ms, done):
    t = 0
    board.boot(t)
    while t < until_ms and not done():
        for tx in board.radio.pending_tx():
            ns.on_tx(tx)
        ns.offer_downlink()
        t = board.next_wake_ms()
        board.poll(t)
    for tx in board.radio.pending_tx():
        ns.on_tx(tx)
    return t


def test_firmware_on_the_vm_joins_and_reports_bytes_checked_by_cpython():
    from protocol import payload
    from protocol.lorawan import frame
    from sim.vmboard import VMBoard

    b = VMBoard("pole-vm", DEV_EUI.hex(), POLE_CFG, strict=True)
    try:
        b.apply_env({"lux": 5.0, "temperature_c": 12.5, "humidity_rh": 70.0, "power_w": 41.0})
        ns = NetworkServer(b)
        run_until(b, ns, 10 * 60 * 1000, lambda: len(ns.uplinks) >= 2)
        assert b.counters["crashes"] == 0 and b.errors == []
        assert len(ns.join_requests) == 1  # accepted at the first attempt
        jr = ns.join_requests[0]
        assert jr.mic_ok and jr.dev_eui == DEV_EUI and jr.join_eui == JOIN_EUI
        assert len(ns.uplinks) >= 2, b.firmware_output()
        first = ns.uplinks[0]
        assert first.mic_ok and first.frame.dev_addr == ns.dev_addr
        assert first.frame.mtype == frame.UNCONFIRMED_UP and first.frame.fport == 10
        fields = payload.decode_uplink(first.frame.fport, first.payload)["fields"]
        assert abs(fields["temperature"] - 12.5) <= 0.5 and abs(fields["humidity"] - 70) <= 1
        assert fields["status/dark"] is True and fields["status/lamp_on"] is True  # 5 lx: dusk
        assert ns.uplinks[1].fcnt == first.fcnt + 1 and ns.uplinks[1].mic_ok
    finally:
        b.close()


def test_the_boot_only_modules_are_unloaded_and_load_again_at_the_next_boot():
    """firmware.main.create() drops the config check and the board profiles on MicroPython
    (about 4.5 KB); a reboot must still find them, and a LoRaWAN-only meter never loads the
    Modbus register map."""
    from sim.vmboard import VMBoard

    loaded = "[m for m in %r if m in __import__('sys').modules]" % (
        ("firmware.config", "firmware.radio_board", "protocol.modbus.registers"),)
    b = VMBoard("meter-vm", DEV_EUI.hex(), dict(POLE_CFG, kind="meter", interfaces="lorawan"),
                strict=True)
    try:
        b.boot(0)
        assert b.eval(loaded) == []
        assert b.eval("hasattr(__import__('firmware'), 'config')") is False
        b.power_cut(100)  # mains back at 100 ms: the next poll boots the firmware again
        for _ in range(5):
            if b.counters["boots"] == 2:
                break
            b.poll(b.next_wake_ms())
        assert b.counters["boots"] == 2 and b.counters["crashes"] == 0, b.counters
        assert b.eval("app.mac is not None") and b.eval(loaded) == []
    finally:
        b.close()


def test_firmware_heap_on_the_vm_is_steady_over_hours_of_reports():
    """Each request is one call from JS into the VM, so its garbage is reclaimed (a long
    Python-side loop would keep everything alive on the WebAssembly port)."""
    from sim.vmboard import VMBoard

    b = VMBoard("pole-vm", DEV_EUI.hex(), POLE_CFG, strict=True)
    try:
        b.apply_env({"lux": 5.0, "temperature_c": 12.5, "humidity_rh": 70.0, "power_w": 41.0,
                     "current_a": 0.18})
        ns = NetworkServer(b)
        run_until(b, ns, 3600 * 1000, lambda: False)
        after_1h = b.heap()["alloc"]
        n = len(ns.uplinks)
        t = b.now_ms
        while t < 3 * 3600 * 1000:
            for tx in b.radio.pending_tx():
                ns.on_tx(tx)
            t = b.next_wake_ms()
            b.poll(t)
        assert len(ns.uplinks) >= n + 20  # 2 h more of 5-minute reports
        assert b.heap()["alloc"] <= after_1h + 2048
    finally:
        b.close()


def test_the_same_pole_sends_the_same_bytes_on_micropython_and_on_cpython():
    """Same firmware, config, seed and physics: every transmission of a VMBoard (MicroPython)
    and a LocalBoard (CPython) is identical, bit for bit and millisecond for millisecond."""
    from sim.board import LocalBoard
    from sim.vmboard import VMBoard

    env = {"lux": 30.0, "temperature_c": -3.25, "humidity_rh": 91.0, "power_w": 41.0,
           "current_a": 0.18, "tilt_deg": 2.5}
    sent = {}
    for kind in (LocalBoard, VMBoard):
        b = kind("pole-x", DEV_EUI.hex(), dict(POLE_CFG, join_jitter_s=10), seed=7)
        try:
            b.apply_env(env)
            ns = NetworkServer(b)
            log = []
            t = 0
            door = False
            b.boot(t)
            while t < 2 * 3600 * 1000:
                for tx in b.radio.pending_tx():
                    ns.on_tx(tx)
                    log.append(tx)
                ns.offer_downlink()
                t = b.next_wake_ms()
                if t >= 3600 * 1000 and not door:
                    door = True
                    b.apply_env({"door_open": True, "now_ms": t})
                b.poll(t)
            sent[kind.__name__] = log
            ports = set(u.frame.fport for u in ns.uplinks)
            assert {10, 11} <= ports  # reports, and the door alarm
            assert b.counters["crashes"] == 0
        finally:
            b.close()
    assert len(sent["VMBoard"]) > 20
    assert sent["VMBoard"] == sent["LocalBoard"]


def test_firmware_as_deployed_in_mpy_files_joins_and_reports():
    from sim.vmboard import VMBoard

    b = VMBoard("pole-mpy", DEV_EUI.hex(), POLE_CFG, strict=True, mpy=True)
    try:
        assert b.eval("sorted(set(f[-4:] for f in __import__('os').listdir('/lib/firmware')"
                      " if '.' in f))") == [".mpy"]
        b.apply_env({"lux": 5.0, "temperature_c": 12.5, "humidity_rh": 70.0, "power_w": 41.0,
                     "current_a": 0.18})
        ns = NetworkServer(b)
        run_until(b, ns, 20 * 60 * 1000, lambda: len(ns.uplinks) >= 2)
        assert len(ns.join_requests) == 1 and len(ns.uplinks) >= 2
        assert all(u.mic_ok for u in ns.uplinks)
    finally:
        b.close()


def test_a_power_cut_on_the_vm_resumes_the_session_and_never_reuses_a_frame_counter():
    from sim.vmboard import VMBoard

    b = VMBoard("pole-vm", DEV_EUI.hex(), POLE_CFG, strict=True)
    try:
        b.apply_env({"lux": 5.0, "temperature_c": 12.5, "humidity_rh": 70.0, "power_w": 41.0,
                     "current_a": 0.18})
        ns = NetworkServer(b)
        run_until(b, ns, 30 * 60 * 1000, lambda: False)
        before = [u.fcnt for u in ns.uplinks]
        b.power_cut(b.now_ms + 1000)  # uncommitted NVS writes and RAM are lost
        t = b.now_ms
        while t < 60 * 60 * 1000:
            for tx in b.radio.pending_tx():
                ns.on_tx(tx)
            ns.offer_downlink()
            t = b.next_wake_ms()
            b.poll(t)
        after = [u.fcnt for u in ns.uplinks[len(before):]]
        assert len(before) >= 3 and len(after) >= 3
        assert len(ns.join_requests) == 1  # the session came back from NVS: no rejoin
        assert min(after) > max(before)  # the counter jumped to its NVS reservation
        assert all(u.mic_ok for u in ns.uplinks)
        assert b.counters["power_cuts"] == 1 and b.counters["boots"] == 2
    finally:
        b.close()


def test_every_env_key_reaches_the_same_chip_state_on_the_vm_and_on_cpython():
    """Both boards build their chips from sim.devices.pole_peripherals (no second copy of the
    physics to drift); this checks the VM side really hands every key of the physical world
    to it, and a power cut keeps the truth the chips measure on both."""
    from sim.board import LocalBoard
    from sim.devices.pole_peripherals import ENV_KEYS

    env = dict((k, 3.5 + i) for i, k in enumerate(ENV_KEYS))
    env["door_open"] = True
    cfg = {"kind": "pole", "door_pin": 4}
    vm = standin(cfg)
    local = LocalBoard("b", "70B3D57ED0000002", cfg, app_factory=lambda *a: None)
    try:
        for b in (vm, local):
            b.apply_env(env)
        assert vm.eval("board.hardware.env()") == local.hardware.env() == env
        assert vm.eval("machine.Pin(4).value()") == local.machine.Pin(4).value() == 1
        vm.power_cut(1000)
        local.power_cut(1000)
        assert vm.eval("board.hardware.env()") == local.hardware.env() == env
    finally:
        vm.close()


def test_a_vm_that_stops_answering_is_a_clear_error_not_a_hang():
    from sim.vmboard import VMBoard, VMError
    b = VMBoard("stuck", "70B3D57ED0000005", {}, app="vmapp.standin:create", mounts=(STANDIN,),
                strict=True, timeout_s=2)
    try:
        with pytest.raises(VMError, match="did not answer within 2 s"):
            b.eval("exec('while True: pass')")  # loops forever, as stuck firmware would
        assert b._proc.wait(5) is not None  # the VM process was stopped
    finally:
        b.close()

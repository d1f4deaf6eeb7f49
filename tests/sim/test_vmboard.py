"""VMBoard: the firmware on the real MicroPython VM behind the Board protocol.

First with a small stand-in app (tests/sim/vmapp/standin.py) for the board mechanics (time,
radio calls over the pipe, NVS, resets, power cuts, env), then the real firmware joining and
reporting to a network-server stand-in built on protocol.lorawan.session in CPython, which
checks every byte.
"""

import os

import pytest

import sim.mpvm
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


def test_radio_calls_cross_the_pipe_at_the_vm_clock(board):
    board.boot(1000)
    assert board.poll(1000) == 11000
    (tx,) = board.radio.pending_tx()
    assert tx[0] == 1120 and tx[5] == b"x" * 20  # transmitted after the app's 120 ms sleep
    end = board.radio.next_event_ms()
    assert end == 1120 + 57  # SF7, 20 bytes: 56.576 ms, rounded up
    assert board.next_wake_ms() == end
    board.poll(end)
    assert board.eval("app.events") == [[ticks(end), ["tx_done"]]]


def test_downlink_bytes_reach_the_firmware_intact():
    from sim.vmboard import VMBoard
    b = VMBoard("dl", "70B3D57ED0000009", {}, app="vmapp.standin:create", mounts=(STANDIN,),
                strict=True)
    try:
        b.boot(0)
        b.poll(0)
        b.radio.now_ms = 100
        b.radio.receive(869525000, 12, 125000, 50)  # as if the firmware opened a window
        phy = bytes(range(256))[::7]
        b.radio.deliver(phy, -97, -3.25, 140)
        b.poll(140)
        assert b.eval("app.events") == [[140, ["rx", phy.hex(), -97, -3.25]]]
        assert b.eval("type(app.events[0][1][1]).__name__") == "bytes"
    finally:
        b.close()


def test_poll_converts_ticks_across_the_wrap(board):
    start = TICKS_PERIOD - 3000
    board.boot(start)
    assert board.poll(start) == start + 10000
    assert board.eval("app.polls[-1]") == ticks(start)
    board.poll(start + 10000)
    assert board.eval("app.polls[-1]") == 7000


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
        b.boot(0)
        b.poll(0)
        assert b.counters["soft_resets"] == 1 and b.counters["boots"] == 2
        assert b.eval("app.boots") == 2
        assert b.eval("machine.reset_cause()") == b.eval("machine.SOFT_RESET")
        assert b.eval("machine.RTC().memory()") == b"state".hex()
    finally:
        b.close()


def test_a_crash_is_recorded_and_the_board_reboots_unless_strict():
    b = standin({"crash_at_boot": 1}, strict=False)
    try:
        b.boot(0)
        b.poll(0)
        assert b.counters["crashes"] == 1
        assert b.errors[0][0] == 0 and "ValueError" in b.errors[0][1] and "boom" in b.errors[0][1]
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

"""Issue #10's heap budget, on the real MicroPython VM with the firmware as shipped (the ROMFS
image; the simulator's fakes and chip models from a second image, their objects counted): a
pole and a meter each hold <= 64 KB after boot, after join and in the steady state (through a
rejoin too), and peak <= 96 KB while joining, reporting and handling a downlink command, and a
meter with its RS-485 slave while it answers Modbus requests. Numbers from
bench/firmware_heap.py; never raise the budgets here, make the firmware fit."""

import pytest

import sim.mpvm
from bench.firmware_heap import (
    HELD_BUDGET, MODBUS_READS, PEAK_BUDGET, measure, measure_modbus, measure_steady,
)

pytestmark = pytest.mark.skipif(not sim.mpvm.available(), reason="MicroPython VM missing")

# Measured 2026-12-07 (bench/firmware_heap.py; bytes, the default SX1276 board): after boot /
# join a pole holds 58,288 / 59,712, a LoRaWAN-only meter 53,088 / 55,152, a meter with its
# RS-485 slave as well (interfaces "both", the default) 60,352 / 62,416; every peak is at most
# 89,072 (a downlink with a command and two MAC commands). Steady state (two hours of reports,
# the command, then a rejoin): pole 60,560, meter 56,112, meter "both" 63,440 with 1,224 qstrs
# (the pool's 7th block, 9 KB, comes with the 1,261st). On the SX1262 board: pole 61,760
# (1,211 qstrs), meter 57,424, meter "both" 63,760 after join and 64,688 steady (848 under),
# with 1,236 qstrs (24 from the 7th block). About 20 KB of each figure is the simulator's fakes
# and chip models, which a board does not have.


# what a device imports for one job and lets go of after it (a boot, a join, a frame) or never
# imports (the master's and the gateway's side, asyncio)
ONCE_IN_A_WHILE = (
    "firmware.startup", "firmware.config", "firmware.pole_config", "firmware.meter_config",
    "firmware.radio_board", "firmware.pole_hardware", "firmware.meter_hardware",
    "firmware.boot_health", "protocol.lorawan.join", "protocol.payload", "protocol.payload.codec",
    "protocol.payload.tables", "protocol.payload.tables.pole", "protocol.payload.tables.meter",
    "protocol.payload.tables.any", "protocol.payload.unpack", "protocol.modbus.messages",
    "protocol.modbus.master", "protocol.lorawan.network_side", "protocol.lorawan.mac",
    "firmware.lorawan.mac_answers", "asyncio",
)


@pytest.fixture(scope="module", params=["pole", "meter"])
def heap(request):
    return request.param, measure(request.param)


def test_held_after_boot_and_after_join(heap):
    kind, m = heap
    assert m["join"] is not None, "%s never joined" % kind
    over = dict((k, m[k]) for k in ("boot", "join") if m[k] > HELD_BUDGET)
    assert not over, "%s holds more than %d bytes: %r (all: %r)" % (kind, HELD_BUDGET, over, m)


def test_peak_of_join_report_and_downlink(heap):
    kind, m = heap
    peaks = ("peak_join", "peak_report", "peak_downlink")
    assert all(m[k] > 0 for k in peaks), m  # each operation was measured
    assert m["delivered"] and m["commanded"] == (26214 if kind == "pole" else False), m
    over = dict((k, m[k]) for k in peaks if m[k] > PEAK_BUDGET)
    assert not over, "%s peaks above %d bytes: %r (all: %r)" % (kind, PEAK_BUDGET, over, m)


def test_held_and_peak_of_a_meter_with_its_modbus_slave():
    both = measure("meter", interfaces="both")
    assert both["join"] is not None, "the meter never joined"
    assert both["delivered"] and both["commanded"] is False, both  # the relay opened
    assert max(both["boot"], both["join"]) <= HELD_BUDGET, "meter (RS-485 and LoRaWAN) holds %r" % (
        both,)
    assert max(both["peak_join"], both["peak_report"], both["peak_downlink"]) <= PEAK_BUDGET, both
    m = measure_modbus()
    assert m["replies"] == len(MODBUS_READS), m  # every read was answered with a valid frame
    assert m["boot"] <= HELD_BUDGET, "meter (RS-485 and LoRaWAN) holds %r" % (m,)
    assert m["peak_modbus"] <= PEAK_BUDGET, "meter peaks above %d bytes serving Modbus: %r" % (
        PEAK_BUDGET, m)


@pytest.mark.parametrize("board, kind, interfaces", [
    ("streetgrid-sx1276", "pole", "lorawan"),
    ("streetgrid-sx1276", "meter", "lorawan"),
    ("streetgrid-sx1276", "meter", "both"),
    ("streetgrid-sx1262", "pole", "lorawan"),
    ("streetgrid-sx1262", "meter", "lorawan"),
    ("streetgrid-sx1262", "meter", "both"),
])
def test_held_in_the_steady_state_and_through_a_rejoin(board, kind, interfaces):
    """What a device keeps once it has reported for hours, taken a command and rejoined: the
    layouts and the join's module dropped again, nothing left behind by the old session. On
    both radio chips: their drivers and models differ in size."""
    m = measure_steady(kind, interfaces, board=board)
    assert m["joins"] == 2 and m["uplinks"] > 20, m
    kept = [n for n in m["modules"] if n in ONCE_IN_A_WHILE]
    assert not kept, "%s (%s) keeps %s loaded" % (kind, interfaces, kept)
    assert m["held"] <= HELD_BUDGET, "%s %s (%s) holds %r" % (board, kind, interfaces, m)

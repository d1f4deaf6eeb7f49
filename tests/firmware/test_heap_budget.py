"""Issue #10's heap budget, on the real MicroPython VM with the firmware as shipped (the ROMFS
image; the simulator's fakes and chip models from a second image, their objects counted): a
pole and a meter each hold <= 64 KB after boot and after join, and peak <= 96 KB while joining,
reporting and handling a downlink command, and a meter with its RS-485 slave while it answers
Modbus requests. Numbers from bench/firmware_heap.py; never raise the budgets here, make the
firmware fit."""

import pytest

import sim.mpvm
from bench.firmware_heap import HELD_BUDGET, MODBUS_READS, PEAK_BUDGET, measure, measure_modbus

pytestmark = pytest.mark.skipif(not sim.mpvm.available(), reason="MicroPython VM missing")

# Measured 2026-12-07 (bench/firmware_heap.py; bytes): a pole holds 63,840 after boot and 64,992
# after join (544 under), a LoRaWAN-only meter 60,976 / 62,896; the peaks are 77,680 / 69,536 /
# 80,384 (pole) and 76,208 / 70,144 / 76,320 (meter). No payload layout is kept, so "after join"
# is also about the held heap once every message has been used. Not met yet (issue #10 stays
# open): a meter with its RS-485 slave as well (interfaces "both", the default) holds 69,968
# after boot and 71,888 after join (6,352 over; about 20 KB of it are the simulator's fakes and
# models); its peaks fit. strict: the day it fits, that test passes, xfail(strict) turns that
# into a failure and the marker must go.
OVER_BUDGET = pytest.mark.xfail(strict=True, reason="the firmware does not fit the budget yet "
                                "(issue #10): see bench/firmware_heap.py")


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


@OVER_BUDGET
def test_held_and_peak_of_a_meter_with_its_modbus_slave():
    both = measure("meter", interfaces="both")
    assert both["join"] is not None, "the meter never joined"
    assert max(both["boot"], both["join"]) <= HELD_BUDGET, "meter (RS-485 and LoRaWAN) holds %r" % (
        both,)
    assert max(both["peak_join"], both["peak_report"], both["peak_downlink"]) <= PEAK_BUDGET, both
    m = measure_modbus()
    assert m["replies"] == len(MODBUS_READS), m  # every read was answered with a valid frame
    assert m["boot"] <= HELD_BUDGET, "meter (RS-485 and LoRaWAN) holds %r" % (m,)
    assert m["peak_modbus"] <= PEAK_BUDGET, "meter peaks above %d bytes serving Modbus: %r" % (
        PEAK_BUDGET, m)

"""sim.rs485.Bus with emulated meters (the real meter firmware, sim.meter.EmulatedMeter) in
one process on a virtual clock: only the addressed meter answers, every meter overhears every
frame, replies leave after t3.5 + the turnaround, and two meters with one address collide."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.modbus import pdu as P
from protocol.modbus import master as MA
from protocol.modbus import rtu as R
from sim.meter import SERIAL_BASE, EmulatedMeter, Load
from sim.rs485 import Bus

BAUD = 19200
PRESENT = (3, 7, 11)
TURN_MS = 5


def make_bus(addresses, clock):
    meters = [EmulatedMeter(a, BAUD, 1, TURN_MS, load=Load(1, 1000.0), clock_us=lambda: clock[0])
              for a in addresses]
    return Bus(meters)


def identity_request(address):
    return R.encode_frame(address, MA.encode_request(P.ReadRequest(4, 0x2000, 7)))


def transact(bus, clock, frame, window_us=150000):
    """The host writes frame at clock[0]; bytes on the wire during window_us."""
    t = clock[0]
    bus.from_host(frame, t)
    out = bus.advance(t + window_us)
    clock[0] = t + window_us
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(PRESENT + (4, 200)), min_size=1, max_size=12))
def test_only_the_addressed_meter_answers_and_all_overhear(seq):
    clock = [1000000]
    bus = make_bus(PRESENT, clock)
    for a in seq:
        out = transact(bus, clock, identity_request(a))
        if a in PRESENT:
            addr, pdu = R.decode_frame(out)
            assert addr == a
            regs = MA.decode_response(pdu).registers
            assert (regs[2] << 16 | regs[3]) == SERIAL_BASE + a
        else:
            assert out == b""  # nobody there: silence, not a reply from someone else
    for m in bus.meters:
        c = m.slave.counters()
        mine = seq.count(m.address)
        assert c["responses"] == c["requests"] == mine
        # every other request, and every other meter's reply, heard and ignored
        replies_by_others = sum(1 for a in seq if a in PRESENT and a != m.address)
        assert c["ignored"] == (len(seq) - mine) + replies_by_others, (m.address, c)
        assert c["bad_crc"] == 0 and c["frame_errors"] == 0


def test_a_reply_leaves_after_t35_and_the_turnaround_at_the_baud_rate():
    clock = [5000000]
    bus = make_bus(PRESENT, clock)
    req = identity_request(7)
    t0 = clock[0]
    out = transact(bus, clock, req)
    m = bus.meters[1]
    bits = m.slave.char_bits
    req_end = t0 + R.frame_time_us(len(req), BAUD, bits)
    first_start = m.line.tx_log[0][0]
    assert first_start >= req_end + R.t35_us(BAUD, bits) + TURN_MS * 1000
    assert first_start <= req_end + R.t35_us(BAUD, bits) + TURN_MS * 1000 + 2 * R.char_time_us(BAUD, bits)
    last_end = m.line.tx_log[-1][1]
    assert last_end - first_start == R.frame_time_us(len(out), BAUD, bits)
    assert [x for x in bus.meters if x is not m and x.line.tx_log] == []


def test_two_meters_with_one_address_collide():
    clock = [1000000]
    bus = make_bus((5, 5, 9), clock)
    out = transact(bus, clock, identity_request(5))
    assert out  # both drove the line
    with pytest.raises(R.FrameError):  # CrcError is a FrameError
        R.decode_frame(out)
    out = transact(bus, clock, identity_request(9))
    assert R.decode_frame(out)[0] == 9  # the others still work


def test_a_meter_whose_application_raises_keeps_the_bus_serving(capsys):
    """As main.app_task on the device: the exception is logged and counted, the app is tried
    again a step later, and the slaves (its own and the others') keep answering."""
    clock = [1000000]
    bus = make_bus(PRESENT, clock)
    sick = bus.meters[0]
    calls = []

    def broken(now_ms):
        calls.append(now_ms)
        raise RuntimeError("firmware bug")

    sick.app.poll = broken
    for a in PRESENT + PRESENT:
        assert R.decode_frame(transact(bus, clock, identity_request(a), 600000))[0] == a
    assert sick.app_errors == len(calls) >= 3  # retried about once a second
    assert sick.counters()["app_errors"] == sick.app_errors
    assert "meter 3: app.poll failed: RuntimeError('firmware bug')" in capsys.readouterr().err

"""RTU framing, timing and the deframer: pymodbus's framer, the modbus.md table, synthetic lines."""

import binascii
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

import sim.mpvm
from protocol.modbus import pdu as P
from protocol.modbus import master as MA
from protocol.modbus import rtu as R

H = binascii.unhexlify
u16 = st.integers(0, 0xFFFF)


# ------------------------------------------------------------ framing


def test_spec_frame():
    assert R.encode_frame(1, H("030000000a")) == H("01030000000ac5cd")
    assert R.decode_frame(H("01030000000ac5cd")) == (1, H("030000000a"))


@given(st.integers(0, 247), st.binary(min_size=1, max_size=253))
def test_frame_round_trip(address, pdu):
    adu = R.encode_frame(address, pdu)
    assert len(adu) == len(pdu) + 3
    assert R.decode_frame(adu) == (address, pdu)
    assert R.decode_frame(bytearray(adu)) == (address, pdu)


@given(st.integers(1, 247), st.binary(min_size=1, max_size=253), st.data())
def test_any_single_bit_flip_is_a_crc_error(address, pdu, data):
    adu = bytearray(R.encode_frame(address, pdu))
    bit = data.draw(st.integers(0, 8 * len(adu) - 1))
    adu[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(R.CrcError):
        R.decode_frame(adu)


@pytest.mark.parametrize("adu", [b"", b"\x01", b"\x01\x03\x00", bytes(257)])
def test_bad_lengths(adu):
    with pytest.raises(R.FrameError):
        R.decode_frame(adu)


def test_encode_frame_validates():
    for address, pdu in ((248, b"\x03"), (-1, b"\x03"), (1, b""), (1, bytes(254))):
        with pytest.raises(R.FrameError):
            R.encode_frame(address, pdu)
    assert issubclass(R.CrcError, R.FrameError) and issubclass(R.FrameError, P.ModbusError)


@given(st.binary(max_size=300))
def test_decode_frame_fuzz(adu):
    try:
        address, pdu = R.decode_frame(adu)
    except P.ModbusError:
        return
    assert R.encode_frame(address, pdu) == adu if address <= 247 else True


# ------------------------------------------------------------ pymodbus framer cross-check


@st.composite
def requests(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        count = draw(st.integers(1, 125))
        return P.ReadRequest(draw(st.sampled_from([3, 4])), draw(st.integers(0, 0x10000 - count)), count)
    if kind == 1:
        return P.WriteSingle(draw(u16), draw(u16))
    values = draw(st.lists(u16, min_size=1, max_size=123))
    return P.WriteMultiple(draw(st.integers(0, 0x10000 - len(values))), values)


@given(st.integers(1, 247), requests())
def test_our_request_frames_decoded_by_pymodbus(address, req):
    adu = R.encode_frame(address, MA.encode_request(req))
    used, msg = FramerRTU(DecodePDU(is_server=True)).handleFrame(adu, 0, 0)
    assert used == len(adu)
    assert msg.dev_id == address
    assert msg.function_code == req.function
    assert msg.address == req.address


@given(st.integers(1, 247), st.integers(0, 0xFFFF - 124), st.integers(1, 125), st.data())
def test_pymodbus_request_frames_decoded_by_us(address, start, count, data):
    kind = data.draw(st.sampled_from(["hr", "ir", "ws", "wm"]))
    if kind == "hr":
        msg, want = ReadHoldingRegistersRequest(address=start, count=count), P.ReadRequest(3, start, count)
    elif kind == "ir":
        msg, want = ReadInputRegistersRequest(address=start, count=count), P.ReadRequest(4, start, count)
    elif kind == "ws":
        v = data.draw(u16)
        msg, want = WriteSingleRegisterRequest(address=start, registers=[v]), P.WriteSingle(start, v)
    else:
        vals = data.draw(st.lists(u16, min_size=1, max_size=123))
        msg, want = WriteMultipleRegistersRequest(address=start, registers=vals), P.WriteMultiple(start, vals)
    msg.dev_id = address
    adu = FramerRTU(DecodePDU(is_server=False)).buildFrame(msg)
    got_address, pdu = R.decode_frame(adu)
    assert got_address == address
    assert P.decode_request(pdu) == want


@given(st.integers(1, 247), st.lists(u16, min_size=1, max_size=125))
def test_response_frames_both_ways(address, regs):
    ours = R.encode_frame(address, P.encode_response(P.ReadResponse(4, regs)))
    used, msg = FramerRTU(DecodePDU(is_server=False)).handleFrame(ours, 0, 0)
    assert used == len(ours) == MA.response_frame_length(P.ReadRequest(4, 0, len(regs)))
    assert msg.registers == regs and msg.dev_id == address
    theirs = ReadInputRegistersResponse(registers=regs)
    theirs.dev_id = address
    assert FramerRTU(DecodePDU(is_server=True)).buildFrame(theirs) == ours


def test_exception_frame_read_by_pymodbus():
    adu = R.encode_frame(7, P.encode_response(P.ExceptionResponse(4, 2)))
    assert len(adu) == 5  # address, function | 0x80, code, CRC
    used, msg = FramerRTU(DecodePDU(is_server=False)).handleFrame(adu, 0, 0)
    assert (used, msg.dev_id, msg.function_code, msg.exception_code) == (5, 7, 0x84, 2)


# ------------------------------------------------------------ timing


def _exact_tc(baud, bits):
    return Fraction(bits * 1000000, baud)


@pytest.mark.parametrize("baud", [1200, 2400, 4800, 9600, 19200])
@pytest.mark.parametrize("bits", [10, 11])
def test_timers_up_to_19200(baud, bits):
    tc = _exact_tc(baud, bits)
    for got, want in (
        (R.char_time_us(baud, bits), tc),
        (R.t15_us(baud, bits), tc * 3 / 2),
        (R.t35_us(baud, bits), tc * 7 / 2),
    ):
        assert want <= got < want + 1


@pytest.mark.parametrize("baud", [38400, 57600, 115200])
def test_timers_fixed_above_19200(baud):
    assert (R.t15_us(baud), R.t35_us(baud)) == (750, 1750)


def test_known_timers():
    # 9600 8E1: 1145.8 us per character, t1.5 1718.75 us, t3.5 4010.4 us
    assert (R.char_time_us(9600), R.t15_us(9600), R.t35_us(9600)) == (1146, 1719, 4011)


def test_char_bits():
    assert R.char_bits("E") == R.char_bits("O") == R.char_bits("N") == 11
    assert R.char_bits("N", 1) == 10
    with pytest.raises(R.FrameError):
        R.char_bits("X")


# modbus.md "The physical limit": baud, N, wire ms, cycle ms, transactions/s at Tturn 0 / 5 / 20 ms
MODBUS_MD_TABLE = [
    (9600, 2, 19.48, 27.50, (36.4, 30.8, 21.1)),
    (9600, 40, 106.56, 114.58, (8.73, 8.36, 7.43)),
    (19200, 2, 9.74, 13.75, (72.7, 53.3, 29.6)),
    (19200, 40, 53.28, 57.29, (17.45, 16.05, 12.94)),
]


@pytest.mark.parametrize("baud, n, wire_ms, cycle_ms, rates", MODBUS_MD_TABLE)
def test_transaction_time_reproduces_modbus_md(baud, n, wire_ms, cycle_ms, rates):
    assert R.frame_time_us(13 + 2 * n, baud) / 1000 == pytest.approx(wire_ms, abs=0.006)
    assert MA.transaction_time_us(baud, n) / 1000 == pytest.approx(cycle_ms, abs=0.006)
    for turn_ms, rate in zip((0, 5, 20), rates):
        got = 1e6 / MA.transaction_time_us(baud, n, turn_ms * 1000)
        assert round(got, 2 if rate < 20 else 1) == rate


def test_ceiling_registers_per_second():
    # modbus.md: about 404 registers/s at 9600 and 808 at 19200 with 125-register reads
    assert 125e6 / MA.transaction_time_us(9600, 125) == pytest.approx(404, abs=1)
    assert 125e6 / MA.transaction_time_us(19200, 125) == pytest.approx(808, abs=1.5)


def test_transaction_time_above_19200_uses_fixed_t35():
    assert MA.transaction_time_us(38400, 2) == R.frame_time_us(17, 38400) + 3500


# ------------------------------------------------------------ deframer on a synthetic line


def line(segments, baud, bits=11, t0=5_000_000):
    """[(bytes, silence before them in us)] -> [(byte, time its last bit left)], exact to 1 us."""
    tc = _exact_tc(baud, bits)
    t = Fraction(t0)
    out = []
    for data, gap in segments:
        t += gap
        for b in data:
            t += tc
            out.append((b, int(t)))
    return out


def feed_bytewise(d, events):
    for b, t in events:
        d.feed(bytes((b,)), t)


def collect(d, events, chunks=None):
    """Feed events (in chunks of contiguous bytes), polling after each; then let the line go idle."""
    got = []
    if chunks is None:
        chunks = [1] * len(events)
    i = 0
    for n in chunks:
        part = events[i : i + n]
        i += n
        d.feed(bytes(b for b, _ in part), part[-1][1])
        got += d.poll(part[-1][1])
    got += d.poll(events[-1][1] + 1_000_000)
    return got


A = R.encode_frame(1, H("0400000002"))
B = R.encode_frame(1, P.encode_response(P.ReadResponse(4, [0x4366, 0x0000])))
C = R.encode_frame(9, H("0600010003"))


@pytest.mark.parametrize("baud", [9600, 19200, 115200])
def test_frames_separated_by_t35(baud):
    t35 = R.t35_us(baud)
    d = R.RtuDeframer(baud)
    got = collect(d, line([(A, 0), (B, t35 + 1), (C, t35 + 1)], baud))
    assert got == [A, B, C]
    assert (d.frames, d.gap_errors, d.overruns) == (3, 0, 0)
    assert [R.decode_frame(f)[0] for f in got] == [1, 1, 9]


@pytest.mark.parametrize("baud", [9600, 19200, 115200])
def test_gap_between_t15_and_t35_spoils_both_frames(baud):
    d = R.RtuDeframer(baud)
    got = collect(d, line([(A, 0), (B, (R.t15_us(baud) + R.t35_us(baud)) // 2), (C, R.t35_us(baud) + 1)], baud))
    assert got == [C]
    assert (d.frames, d.gap_errors) == (1, 1)


@pytest.mark.parametrize("baud", [2400, 9600, 19200, 38400])
def test_gap_inside_a_frame(baud):
    t15, t35 = R.t15_us(baud), R.t35_us(baud)
    d = R.RtuDeframer(baud)
    events = line([(B[:4], 0), (B[4:], t15 + 2), (A, t35 + 1), (C[:3], t35 + 1), (C[3:], t15 - 2)], baud)
    assert collect(d, events) == [A, C]
    assert (d.frames, d.gap_errors) == (2, 1)


def test_poll_waits_for_t35_and_deadline():
    d = R.RtuDeframer(9600)
    events = line([(A, 0)], 9600)
    feed_bytewise(d, events)
    end = events[-1][1]
    assert d.deadline() == end + R.t35_us(9600)
    assert d.poll(end + R.t35_us(9600) - 1) == ()
    assert d.poll(d.deadline()) == [A]
    assert d.deadline() is None and d.poll(end + 10**7) == ()


def test_overrun_is_dropped_and_counted():
    d = R.RtuDeframer(19200)
    events = line([(bytes(300), 0), (A, R.t35_us(19200) + 1)], 19200)
    assert collect(d, events) == [A]
    assert (d.overruns, d.frames) == (1, 1)


@given(
    st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=5),
    st.sampled_from([4800, 9600, 19200, 57600]),
    st.data(),
)
def test_chunking_does_not_change_the_frames(frames, baud, data):
    t35 = R.t35_us(baud)
    events = line([(f, t35 + 3) for f in frames], baud)
    # chunks never span a frame boundary (bytes of one feed are back to back)
    chunks = []
    for f in frames:
        left = len(f)
        while left:
            n = data.draw(st.integers(1, left))
            chunks.append(n)
            left -= n
    assert collect(R.RtuDeframer(baud), events, chunks) == frames


def test_wrapping_tick_counter():
    period = 1 << 30
    events = line([(A, 0), (B, R.t35_us(9600) + 1), (C, 1500)], 9600, t0=period - 9_300)
    assert events[len(A) - 1][1] < period <= events[len(A)][1]  # the A | B boundary straddles the wrap
    d = R.RtuDeframer(9600, ticks_period=period)
    got = []
    for b, t in events:
        d.feed(bytes((b,)), t % period)
        got += d.poll(t % period)
    assert d.deadline() == (events[-1][1] + R.t35_us(9600)) % period
    got += d.poll((events[-1][1] + R.t35_us(9600)) % period)
    assert got == [A, B + C]


def test_length_mode_ends_on_the_last_byte_and_ignores_timestamps():
    req = P.ReadRequest(4, 0, 2)
    d = MA.ResponseDeframer(9600)
    d.expect(MA.response_frame_length(req))
    # coarse, bursty timestamps as from a USB adapter: gaps look huge, bytes arrive together
    d.feed(B[:3], 1000)
    assert d.poll(1000 + 50_000) == ()
    d.feed(B[3:] + b"\x00", 200_000)  # plus one stray byte after the response
    assert d.poll(200_000) == [B]
    assert R.decode_frame(B)[1] == P.encode_response(P.ReadResponse(4, [0x4366, 0]))
    assert d.poll(200_000 + R.t35_us(9600)) == [b"\x00"]  # back in silence mode


def test_length_mode_exception_response():
    exc = R.encode_frame(1, P.encode_response(P.ExceptionResponse(4, 2)))
    d = MA.ResponseDeframer(19200)
    d.expect(MA.response_frame_length(P.ReadRequest(4, 0, 40)))
    for i, b in enumerate(exc):
        d.feed(bytes((b,)), i)
    assert d.poll(len(exc)) == [exc]


def test_expect_and_reset_drop_partial_frames():
    d = MA.ResponseDeframer(9600)
    d.feed(A[:3], 0)
    d.expect(8)
    d.feed(C[:5], 10)
    d.reset()  # response timeout
    assert d.poll(10**9) == ()
    d.feed(C, 10**9)
    assert d.poll(10**9 + R.t35_us(9600)) == [C]
    with pytest.raises(R.FrameError):
        d.expect(3)


# ------------------------------------------------------------ MicroPython


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_rtu_on_micropython_matches_cpython():
    frames = [(1, H("030000000a")), (17, H("0400480002")), (247, bytes(range(253)))]
    events = line([(A, 0), (B[:4], R.t35_us(9600) + 1), (B[4:], R.t15_us(9600) + 5), (C, R.t35_us(9600) + 1)], 9600)
    script = "import binascii\nfrom protocol.modbus import master as MA, rtu as R\nH = binascii.unhexlify\n"
    script += "def hx(b):\n    return binascii.hexlify(b).decode()\n"
    for address, pdu in frames:
        script += "f = R.encode_frame(%d, H('%s'))\nprint(hx(f), R.decode_frame(f)[0])\n" % (
            address,
            binascii.hexlify(pdu).decode(),
        )
    script += "print(R.t15_us(9600), R.t35_us(9600), MA.transaction_time_us(19200, 40, 5000))\n"
    script += "d = R.RtuDeframer(9600)\nout = []\n"
    script += "for b, t in %r:\n    d.feed(bytes((b,)), t)\n    out += d.poll(t)\n" % (events,)
    script += "out += d.poll(%d)\nprint(' '.join(hx(f) for f in out), d.frames, d.gap_errors)\n" % (
        events[-1][1] + 10**6
    )
    got = sim.mpvm.run(script).strip().split("\n")
    want = ["%s %d" % (binascii.hexlify(R.encode_frame(a, p)).decode(), a) for a, p in frames]
    want.append("%d %d %d" % (R.t15_us(9600), R.t35_us(9600), MA.transaction_time_us(19200, 40, 5000)))
    d = R.RtuDeframer(9600)
    out = []
    for b, t in events:
        d.feed(bytes((b,)), t)
        out += d.poll(t)
    out += d.poll(events[-1][1] + 10**6)
    assert out == [A, C]
    want.append("%s %d %d" % (" ".join(binascii.hexlify(f).decode() for f in out), d.frames, d.gap_errors))
    assert got == want

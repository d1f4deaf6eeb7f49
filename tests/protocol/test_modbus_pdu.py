"""Modbus PDU codec: spec examples, pymodbus cross-checks, round trips, validation, fuzzing."""

import binascii

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
)

import sim.mpvm
from protocol.modbus import pdu as P
from protocol.modbus import master as MA

H = binascii.unhexlify

u16 = st.integers(0, 0xFFFF)


@st.composite
def read_requests(draw):
    count = draw(st.integers(1, 125))
    return P.ReadRequest(draw(st.sampled_from([3, 4])), draw(st.integers(0, 0x10000 - count)), count)


@st.composite
def write_multiples(draw):
    values = draw(st.lists(u16, min_size=1, max_size=123))
    return P.WriteMultiple(draw(st.integers(0, 0x10000 - len(values))), values)


requests = st.one_of(read_requests(), st.builds(P.WriteSingle, u16, u16), write_multiples())


@st.composite
def responses(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return P.ReadResponse(draw(st.sampled_from([3, 4])), draw(st.lists(u16, min_size=1, max_size=125)))
    if kind == 1:
        return P.WriteSingle(draw(u16), draw(u16))
    if kind == 2:
        count = draw(st.integers(1, 123))
        return P.WriteMultipleResponse(draw(st.integers(0, 0x10000 - count)), count)
    return P.ExceptionResponse(draw(st.integers(1, 127)), draw(st.integers(1, 255)))


# ------------------------------------------------------------ spec examples (application protocol 1.1b3)


@pytest.mark.parametrize(
    "req, hexpdu",
    [
        (P.ReadRequest(3, 0x006B, 3), "03006b0003"),
        (P.ReadRequest(4, 0x0008, 1), "0400080001"),
        (P.WriteSingle(0x0001, 0x0003), "0600010003"),
        (P.WriteMultiple(0x0001, [0x000A, 0x0102]), "1000010002 04000a0102"),
    ],
)
def test_spec_request_examples(req, hexpdu):
    raw = H(hexpdu.replace(" ", ""))
    assert MA.encode_request(req) == raw
    assert P.decode_request(raw) == req


@pytest.mark.parametrize(
    "resp, hexpdu",
    [
        (P.ReadResponse(3, [0x022B, 0x0000, 0x0064]), "0306022b00000064"),
        (P.ReadResponse(4, [0x000A]), "0402000a"),
        (P.WriteSingle(0x0001, 0x0003), "0600010003"),
        (P.WriteMultipleResponse(0x0001, 2), "1000010002"),
        (P.ExceptionResponse(1, 2), "8102"),
    ],
)
def test_spec_response_examples(resp, hexpdu):
    raw = H(hexpdu)
    assert P.encode_response(resp) == raw
    assert MA.decode_response(raw) == resp


def test_exception_names():
    assert [MA.exception_name(c) for c in (1, 2, 3, 4, 6)] == [
        "ILLEGAL FUNCTION",
        "ILLEGAL DATA ADDRESS",
        "ILLEGAL DATA VALUE",
        "SERVER DEVICE FAILURE",
        "SERVER DEVICE BUSY",
    ]
    assert MA.exception_name(99) == "EXCEPTION 99"


# ------------------------------------------------------------ pymodbus cross-checks


def _pymodbus_request(req):
    if isinstance(req, P.ReadRequest):
        cls = ReadHoldingRegistersRequest if req.function == 3 else ReadInputRegistersRequest
        return cls(address=req.address, count=req.count)
    if isinstance(req, P.WriteSingle):
        return WriteSingleRegisterRequest(address=req.address, registers=[req.value])
    return WriteMultipleRegistersRequest(address=req.address, registers=list(req.values))


def _pymodbus_bytes(msg):
    return bytes((msg.function_code,)) + msg.encode()


@given(requests)
def test_requests_match_pymodbus_both_ways(req):
    ours = MA.encode_request(req)
    assert ours == _pymodbus_bytes(_pymodbus_request(req))
    theirs = DecodePDU(is_server=True).decode(ours)
    assert theirs.function_code == req.function
    assert theirs.address == req.address
    if isinstance(req, P.ReadRequest):
        assert theirs.count == req.count
    elif isinstance(req, P.WriteSingle):
        assert theirs.registers == [req.value]
    else:
        assert theirs.registers == list(req.values)


@given(st.sampled_from([3, 4]), st.lists(u16, min_size=1, max_size=125))
def test_read_responses_match_pymodbus_both_ways(function, regs):
    cls = ReadHoldingRegistersResponse if function == 3 else ReadInputRegistersResponse
    theirs = _pymodbus_bytes(cls(registers=regs))
    assert P.encode_response(P.ReadResponse(function, regs)) == theirs
    assert MA.decode_response(theirs, P.ReadRequest(function, 0, len(regs))) == P.ReadResponse(function, regs)
    back = DecodePDU(is_server=False).decode(theirs)
    assert back.registers == regs


@given(st.integers(0, 0xFFFF - 122), st.integers(1, 123))
def test_write_multiple_response_matches_pymodbus(address, count):
    theirs = _pymodbus_bytes(WriteMultipleRegistersResponse(address=address, count=count))
    assert P.encode_response(P.WriteMultipleResponse(address, count)) == theirs
    assert MA.decode_response(theirs) == P.WriteMultipleResponse(address, count)


@given(st.integers(1, 127), st.integers(1, 255))
def test_exception_response_read_by_pymodbus(function, code):
    raw = P.encode_response(P.ExceptionResponse(function, code))
    theirs = DecodePDU(is_server=False).decode(raw)
    assert theirs.function_code == function | 0x80
    assert theirs.exception_code == code


# ------------------------------------------------------------ round trips


@given(requests)
def test_request_round_trip(req):
    assert P.decode_request(MA.encode_request(req)) == req


@given(responses())
def test_response_round_trip(resp):
    assert MA.decode_response(P.encode_response(resp)) == resp


@given(requests, st.data())
def test_response_matched_to_its_request(req, data):
    if isinstance(req, P.ReadRequest):
        resp = P.ReadResponse(req.function, data.draw(st.lists(u16, min_size=req.count, max_size=req.count)))
    elif isinstance(req, P.WriteSingle):
        resp = P.WriteSingle(req.address, req.value)
    else:
        resp = P.WriteMultipleResponse(req.address, len(req.values))
    raw = P.encode_response(resp)
    assert len(raw) == MA.response_length(req)
    assert MA.decode_response(raw, req) == resp
    exc = P.ExceptionResponse(req.function, data.draw(st.integers(1, 255)))
    assert MA.decode_response(P.encode_response(exc), req) == exc


def test_response_mismatches_are_caught():
    req = P.ReadRequest(4, 0, 10)
    with pytest.raises(MA.ResponseMismatch):
        MA.decode_response(P.encode_response(P.ReadResponse(4, [0] * 9)), req)
    with pytest.raises(MA.ResponseMismatch):
        MA.decode_response(P.encode_response(P.ReadResponse(3, [0] * 10)), req)
    with pytest.raises(MA.ResponseMismatch):
        MA.decode_response(H("8302"), req)
    with pytest.raises(MA.ResponseMismatch):
        MA.decode_response(P.encode_response(P.WriteSingle(1, 5)), P.WriteSingle(1, 6))
    with pytest.raises(MA.ResponseMismatch):
        MA.decode_response(P.encode_response(P.WriteMultipleResponse(1, 2)), P.WriteMultiple(1, [1, 2, 3]))


# ------------------------------------------------------------ validation (slave side)


@pytest.mark.parametrize(
    "hexpdu, code",
    [
        ("0400000000", 3),  # read count 0
        ("040000007e", 3),  # read count 126
        ("030000007d", 0),  # 125 is fine
        ("03ffff0001", 0),  # last register
        ("03ffff0002", 2),  # runs past 0xFFFF
        ("03ff84007d", 2),
        ("030000000a00", 3),  # trailing byte
        ("0300000a", 3),  # short
        ("10000000010200", 3),  # FC16 byte count 2 for 1 reg but 1 data byte
        ("100000000102000000", 3),  # one byte too many
        ("100000000103000000", 3),  # byte count 3 for 1 register
        ("10000000000000", 3),  # zero registers... with byte count 0
        ("10ffff00020400010002", 2),  # runs past 0xFFFF
        ("0600000000", 0),
        ("060000000000", 3),
        ("0100000001", 1),  # read coils: not supported
        ("2b0e0100", 1),  # read device identification: not supported
        ("17000000010000000102abcd", 1),  # read/write multiple: not supported
    ],
)
def test_slave_validation_and_exception_codes(hexpdu, code):
    raw = H(hexpdu)
    if code == 0:
        P.decode_request(raw)
        return
    with pytest.raises(P.ModbusError) as info:
        P.decode_request(raw)
    assert info.value.code == code
    resp = P.exception_for(raw, info.value)
    assert resp == P.ExceptionResponse(raw[0], code)
    assert P.encode_response(resp) == bytes((raw[0] | 0x80, code))


def test_write_multiple_124_registers_is_refused():
    raw = bytes((0x10, 0, 0, 0, 124, 248)) + bytes(248)
    with pytest.raises(P.ModbusError) as info:
        P.decode_request(raw)
    assert info.value.code == 3


def test_unsupported_function_maps_to_exception_01():
    for fc in (1, 2, 5, 7, 8, 15, 17, 22, 23, 43, 0x7F):
        raw = bytes((fc, 0, 0, 0, 1))
        with pytest.raises(P.ModbusError) as info:
            P.decode_request(raw)
        assert info.value.code == P.ILLEGAL_FUNCTION
        assert P.exception_for(raw, info.value) == P.ExceptionResponse(fc, P.ILLEGAL_FUNCTION)


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x00\x00\x01", b"\x83\x02", b"\xff"])
def test_slave_stays_silent_when_no_exception_can_echo_the_function(raw):
    with pytest.raises(P.ModbusError) as info:
        P.decode_request(raw)
    assert P.exception_for(raw, info.value) is None


@pytest.mark.parametrize(
    "msg",
    [
        P.ReadRequest(3, 0, 0),
        P.ReadRequest(3, 0, 126),
        P.ReadRequest(5, 0, 1),
        P.ReadRequest(3, 0xFFFF, 2),
        P.ReadRequest(3, -1, 1),
        P.WriteSingle(0x10000, 1),
        P.WriteSingle(1, -1),
        P.WriteMultiple(0, []),
        P.WriteMultiple(0, [0] * 124),
        P.WriteMultiple(0, [0x10000]),
        P.WriteMultiple(0xFFFF, [1, 2]),
        P.ReadResponse(4, []),
    ],
)
def test_encode_request_validates(msg):
    with pytest.raises(P.ModbusError):
        MA.encode_request(msg)


@pytest.mark.parametrize(
    "msg",
    [
        P.ReadResponse(4, []),
        P.ReadResponse(4, [0] * 126),
        P.ReadResponse(4, [70000]),
        P.ReadResponse(6, [1]),
        P.WriteMultipleResponse(0, 0),
        P.ExceptionResponse(0x80, 1),
        P.ExceptionResponse(3, 0),
        P.ReadRequest(3, 0, 1),
    ],
)
def test_encode_response_validates(msg):
    with pytest.raises(P.ModbusError):
        P.encode_response(msg)


# ------------------------------------------------------------ fuzzing: only ModbusError escapes


pdus = st.one_of(
    st.binary(max_size=260),
    st.tuples(st.sampled_from([3, 4, 6, 16, 0x83, 0x90]), st.binary(max_size=255)).map(lambda t: bytes((t[0],)) + t[1]),
)


@given(requests)
def test_the_slaves_tuples_say_what_the_messages_say(req):
    fc, address, count, values = P.parse_request(MA.encode_request(req))
    if isinstance(req, P.ReadRequest):
        assert (fc, address, count, values) == (req.function, req.address, req.count, None)
    elif isinstance(req, P.WriteSingle):
        assert (fc, address, count, values) == (6, req.address, 1, (req.value,))
    else:
        assert (fc, address, count, values) == (16, req.address, len(req.values), req.values)


@given(pdus)
def test_parse_request_and_decode_request_agree_on_any_bytes(raw):
    try:
        got = P.parse_request(raw)
    except P.ModbusError as e:
        with pytest.raises(P.ModbusError) as again:
            P.decode_request(raw)
        assert again.value.code == e.code
        x = P.exception_for(raw, e)
        code = P.exception_code(raw, e)
        assert (x is None) == (code is None)
        if x is not None:
            assert P.encode_exception(raw[0], code) == P.encode_response(x)
        return
    assert MA.encode_request(P.decode_request(raw)) == raw and len(got) == 4


@given(st.integers(-1, 300), st.integers(-1, 300))
def test_encode_exception_validates(function, code):
    if 1 <= function <= 0x7F and 1 <= code <= 0xFF:
        assert P.encode_exception(function, code) == bytes((function | 0x80, code))
        assert MA.decode_response(P.encode_exception(function, code)) == P.ExceptionResponse(function, code)
    else:
        with pytest.raises(P.ModbusError):
            P.encode_exception(function, code)


@given(pdus)
def test_decode_request_fuzz(raw):
    try:
        req = P.decode_request(raw)
    except P.ModbusError:
        return
    assert MA.encode_request(req) == raw


@given(pdus)
@example(b"\x80\x01")  # an exception for function 0
def test_decode_response_fuzz(raw):
    try:
        resp = MA.decode_response(raw)
    except P.ModbusError:
        return
    assert P.encode_response(resp) == raw


@given(st.binary(max_size=260), requests, st.sampled_from([None, 0, 0x80]))
def test_decode_response_against_request_fuzz(raw, req, head):
    if head is not None:  # make it look like an answer (or an exception) to this request
        raw = bytes((req.function | head,)) + raw
    try:
        MA.decode_response(raw, req)
    except P.ModbusError:
        pass


# ------------------------------------------------------------ MicroPython


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_pdu_codec_on_micropython_matches_cpython():
    reqs = [
        P.ReadRequest(4, 0x0000, 0x50),
        P.ReadRequest(3, 0xFFFF, 1),
        P.WriteSingle(0x3003, 0xA55A),
        P.WriteMultiple(0x3000, [7, 96, 1]),
    ]
    resps = [
        P.ReadResponse(4, list(range(0, 65536, 997))),
        P.WriteMultipleResponse(0x3000, 3),
        P.ExceptionResponse(4, 2),
    ]
    bad = ["0400000000", "0100000001", "10000000010200", "03ffff0002", ""]
    script = "import binascii\nfrom protocol.modbus import master as MA, pdu as P\nH = binascii.unhexlify\n"
    script += "def hx(b):\n    return binascii.hexlify(b).decode()\n"
    for m in reqs:
        script += "r = P.%r\nb = MA.encode_request(r)\nprint(hx(b), P.decode_request(b) == r)\n" % (m,)
    for m in resps:
        script += "r = P.%r\nb = P.encode_response(r)\nprint(hx(b), MA.decode_response(b) == r)\n" % (m,)
    for b in bad:
        script += (
            "try:\n    P.decode_request(H('%s'))\nexcept P.ModbusError as e:\n"
            "    x = P.exception_for(H('%s'), e)\n    print(x and hx(P.encode_response(x)))\n" % (b, b)
        )
    out = sim.mpvm.run(script).split("\n")
    want = ["%s True" % binascii.hexlify(MA.encode_request(m)).decode() for m in reqs]
    want += ["%s True" % binascii.hexlify(P.encode_response(m)).decode() for m in resps]
    for b in bad:
        try:
            P.decode_request(H(b))
        except P.ModbusError as e:
            x = P.exception_for(H(b), e)
            want.append(str(x and binascii.hexlify(P.encode_response(x)).decode()))
    assert out[: len(want)] == want

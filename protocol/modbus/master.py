"""The master's half of Modbus RTU: encoding requests, decoding the responses and checking that
they answer them, the expected response lengths, and the wire time of a transaction (for a
poller's timeouts and read planning). Apart from protocol.modbus.pdu, messages and rtu, whose
message types and framing it uses, so that a meter (a slave) never loads it.
"""

import struct

from protocol.modbus.messages import (
    ExceptionResponse, ReadRequest, ReadResponse, WriteMultiple, WriteMultipleResponse,
    WriteSingle, _check_regs, _check_u16,
)
from protocol.modbus.pdu import (
    MAX_READ, MAX_WRITE, READ_HOLDING, READ_INPUT, WRITE_MULTIPLE, WRITE_SINGLE, ModbusError,
    _check_span,
)
from protocol.modbus.rtu import MAX_ADU, FrameError, RtuDeframer, _ceil_div, _check_baud

ACKNOWLEDGE = 5
BUSY = 6

EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


class ResponseMismatch(ModbusError):
    """A well-formed response that does not answer the request it was matched with."""


def exception_name(code):
    """The spec's name of exception `code` ("ILLEGAL DATA ADDRESS"), or "EXCEPTION <code>"."""
    return EXCEPTION_NAMES.get(code, "EXCEPTION %d" % code)


# ---------------------------------------------------------------- requests out


def encode_request(req):
    """PDU bytes of a ReadRequest, WriteSingle or WriteMultiple (validated: ModbusError)."""
    if isinstance(req, ReadRequest):
        if req.function != READ_HOLDING and req.function != READ_INPUT:
            raise ModbusError("read function must be 3 or 4, got %r" % (req.function,))
        if not 1 <= req.count <= MAX_READ:
            raise ModbusError("read count %r out of range 1..%d" % (req.count, MAX_READ))
        _check_span(req.address, req.count)
        return struct.pack(">BHH", req.function, req.address, req.count)
    if isinstance(req, WriteSingle):
        _check_u16("address", req.address)
        _check_u16("value", req.value)
        return struct.pack(">BHH", WRITE_SINGLE, req.address, req.value)
    if isinstance(req, WriteMultiple):
        n = _check_regs("write multiple", req.values, MAX_WRITE)
        _check_span(req.address, n)
        head = struct.pack(">BHHB", WRITE_MULTIPLE, req.address, n, 2 * n)
        return head + struct.pack(">%dH" % n, *req.values)
    raise ModbusError("not a request: %r" % (req,))


def response_length(request):
    """PDU length of the normal response to `request` (an exception response is 2 bytes)."""
    if isinstance(request, ReadRequest):
        return 2 + 2 * request.count
    if isinstance(request, (WriteSingle, WriteMultiple)):
        return 5
    raise ModbusError("not a request: %r" % (request,))


def response_frame_length(request):
    """ADU length of the normal response to `request`: 5 + 2N for reads, 8 for writes (for
    ResponseDeframer.expect)."""
    if isinstance(request, ReadRequest):
        return 5 + 2 * request.count
    if isinstance(request, (WriteSingle, WriteMultiple)):
        return 8
    raise FrameError("not a request: %r" % (request,))


def transaction_time_us(baud, n_regs, turnaround_us=0, bits=11):
    """One read of n_regs registers, bus idle to bus idle: (13 + 2N) * tc + 2 * t3.5 + Tturn.

    8 request bytes + 5 + 2N response bytes, each frame followed by its t3.5 silence, plus the
    slave's turnaround. The floor a perfect poller pays; 1e6 / this = transactions per second.
    """
    _check_baud(baud)
    chars = 13 + 2 * n_regs
    if baud > 19200:
        return _ceil_div(chars * bits * 1000000, baud) + 2 * 1750 + turnaround_us
    return _ceil_div((chars * 10 + 70) * bits * 100000, baud) + turnaround_us


# ---------------------------------------------------------------- responses in


def _mismatch(request, got):
    raise ResponseMismatch("response %r does not answer %r" % (got, request))


def decode_response(pdu, request=None):
    """Parse a response PDU (master side); with `request`, also check that it answers it.

    An exception response is returned (ExceptionResponse), not raised: it is a valid answer.
    """
    n = len(pdu)
    if n < 2:
        raise ModbusError("response too short: %d bytes, need at least 2" % n)
    fc = pdu[0]
    if request is not None and (fc & 0x7F) != request.function:
        raise ResponseMismatch(
            "response function 0x%02X to a function %d request" % (fc, request.function)
        )
    if fc & 0x80:
        if n != 2 or pdu[1] == 0:
            raise ModbusError("exception response must be 2 bytes with a code 1..255, got %d" % n)
        if fc == 0x80:
            raise ModbusError("exception response for function 0: no such function")
        return ExceptionResponse(fc & 0x7F, pdu[1])
    if fc == READ_HOLDING or fc == READ_INPUT:
        nbytes = pdu[1]
        if nbytes == 0 or nbytes & 1 or nbytes > 2 * MAX_READ or n != 2 + nbytes:
            raise ModbusError("read response byte count %d does not fit %d bytes" % (nbytes, n))
        if request is not None and nbytes != 2 * request.count:
            raise ResponseMismatch(
                "%d registers in response, %d requested" % (nbytes // 2, request.count)
            )
        return ReadResponse(fc, struct.unpack_from(">%dH" % (nbytes // 2), pdu, 2))
    if fc == WRITE_SINGLE or fc == WRITE_MULTIPLE:
        if n != 5:
            raise ModbusError("function %d response must be 5 bytes, got %d" % (fc, n))
        address, word = struct.unpack_from(">HH", pdu, 1)
        if fc == WRITE_SINGLE:
            resp = WriteSingle(address, word)
            if request is not None and resp != request:
                _mismatch(request, resp)
            return resp
        if not 1 <= word <= MAX_WRITE:
            raise ModbusError("write count %d out of range 1..%d" % (word, MAX_WRITE))
        resp = WriteMultipleResponse(address, word)
        if request is not None and (address != request.address or word != len(request.values)):
            _mismatch(request, resp)
        return resp
    raise ModbusError("function code 0x%02X not supported in a response" % fc)


# ---------------------------------------------------------------- deframing by length

_EXCEPTION_ADU = 5  # address, function | 0x80, code, CRC


class ResponseDeframer(RtuDeframer):
    """The master's deframer: RtuDeframer, plus a length mode for the answer to a request.

    expect(n): a master that sent a request knows the answer is n bytes
    (response_frame_length) or 5 for an exception, so the frame ends on its last byte without
    waiting t3.5, and timestamps are ignored: they are too coarse behind USB adapters and OS
    buffers to judge a 1 ms gap. The master's response timeout replaces the silence rule: on
    timeout call reset(). One frame ends length mode; silence mode (RtuDeframer's) otherwise.
    """

    def __init__(self, baud, bits=11, ticks_period=None):
        RtuDeframer.__init__(self, baud, bits, ticks_period)
        self._expect = 0  # expected ADU length, 0 = silence mode

    def expect(self, length):
        """Length mode for the next frame (drops a partial frame: a master calls this before
        sending its request)."""
        if not 4 <= length <= MAX_ADU:
            raise FrameError("expected frame length %r out of range 4..%d" % (length, MAX_ADU))
        self.reset()
        self._expect = length

    def reset(self):
        """Drop a partial frame and leave length mode (a master's response timeout)."""
        RtuDeframer.reset(self)
        self._expect = 0

    def feed(self, data, now_us):
        if not self._expect:
            RtuDeframer.feed(self, data, now_us)
            return
        n = len(data)
        i = 0
        while i < n and self._expect:
            want = self._expect
            if self._n < 2:
                want = 2
            elif self._buf[1] & 0x80:
                want = _EXCEPTION_ADU
            j = min(n, i + want - self._n)
            self._append(data, i, j)
            i = j
            if self._n >= want and want != 2:
                self._finish()  # leaves length mode
                self._last = now_us
        if i < n:  # bytes after the answer: back to cutting by silence
            RtuDeframer.feed(self, data[i:], now_us)

    def poll(self, now_us):
        if self._expect:
            return self._take()
        return RtuDeframer.poll(self, now_us)

    def deadline(self):
        return None if self._expect else RtuDeframer.deadline(self)

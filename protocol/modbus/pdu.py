"""Modbus PDU codec for the four register functions streetgrid uses, in both roles.

Slave:  decode_request -> handle -> encode_response, or exception_for() when decoding failed.
Master: protocol.modbus.master.encode_request -> (wire) -> decode_response(pdu, request), apart
        so that a meter (a slave) never loads them; the message classes here serve both.

A PDU is the function code plus its data, without address and CRC (see rtu.py). Validation
follows the application-protocol spec: reads carry 1..125 registers, writes 1..123, the byte
count must agree with the quantity, and address + quantity may not pass 65536. The errors a
slave must answer carry the exception code to answer with (`ModbusError.code`), so that an
unknown function becomes exception 01 and a bad quantity 03, as the spec's state charts say.
"""

import struct

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4  # the codes a slave answers with (all of them: protocol.modbus.master)

MAX_READ = 125  # registers per 03 / 04 request: 250 data bytes fit a 256-byte ADU
MAX_WRITE = 123  # registers per 16 request


class ModbusError(ValueError):
    """A malformed or unacceptable PDU. `code` is the exception a slave answers it with: 03 by
    default, 01 for a function this codec does not implement, 02 for an address + quantity past
    register 65535 (one class with a code rather than a class per code: a meter keeps fewer)."""

    code = ILLEGAL_VALUE

    def __init__(self, message, code=ILLEGAL_VALUE):
        super().__init__(message)
        self.code = code


class _Message:
    """Equality and repr from the instance's attributes: one pair of methods for every message
    (a method per class would be heap on a meter for what only tests and the gateway use)."""

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __repr__(self):
        # the constructor call (CPython keeps attributes in the order __init__ set them)
        return type(self).__name__ + repr(tuple(self.__dict__.values()))


class ReadRequest(_Message):
    """Read `count` holding (function 3) or input (function 4) registers from `address`."""

    def __init__(self, function, address, count):
        self.function = function
        self.address = address
        self.count = count


class ReadResponse(_Message):
    """Registers (ints 0..65535, in address order) answering a ReadRequest."""

    def __init__(self, function, registers):
        self.function = function
        self.registers = tuple(registers)


class WriteSingle(_Message):
    """Function 6; the slave's normal response is an exact echo, so one class serves both."""

    function = WRITE_SINGLE

    def __init__(self, address, value):
        self.address = address
        self.value = value


class WriteMultiple(_Message):
    """Function 16 request: `values` written from `address` on."""

    function = WRITE_MULTIPLE

    def __init__(self, address, values):
        self.address = address
        self.values = tuple(values)


class WriteMultipleResponse(_Message):
    """Function 16 response: echoes address and quantity written."""

    function = WRITE_MULTIPLE

    def __init__(self, address, count):
        self.address = address
        self.count = count


class ExceptionResponse(_Message):
    """The slave refused `function` (the request's code, without the 0x80 bit) with `code`."""

    def __init__(self, function, code):
        self.function = function
        self.code = code



def _check_u16(what, value):
    if not 0 <= value <= 0xFFFF:
        raise ModbusError("%s out of range 0..65535: %r" % (what, value))


def _check_regs(what, regs, limit):
    n = len(regs)
    if not 1 <= n <= limit:
        raise ModbusError("%s: %d registers, must be 1..%d" % (what, n, limit))
    if min(regs) < 0 or max(regs) > 0xFFFF:
        raise ModbusError("%s: register value out of range 0..65535" % what)
    return n


def _check_span(address, count):
    _check_u16("address", address)
    if address + count > 0x10000:
        raise ModbusError("address 0x%04X + %d registers runs past 0xFFFF" % (address, count),
                          ILLEGAL_ADDRESS)


# ---------------------------------------------------------------- requests


def decode_request(pdu):
    """Parse a request PDU (slave side). ModbusError.code says which exception to answer."""
    n = len(pdu)
    if n == 0:
        raise ModbusError("empty PDU: no function code")
    fc = pdu[0]
    if fc == READ_HOLDING or fc == READ_INPUT or fc == WRITE_SINGLE:
        if n != 5:
            raise ModbusError("function %d request must be 5 bytes, got %d" % (fc, n))
        address, word = struct.unpack_from(">HH", pdu, 1)
        if fc == WRITE_SINGLE:
            return WriteSingle(address, word)
        if not 1 <= word <= MAX_READ:
            raise ModbusError("read count %d out of range 1..%d" % (word, MAX_READ))
        _check_span(address, word)
        return ReadRequest(fc, address, word)
    if fc == WRITE_MULTIPLE:
        if n < 6:
            raise ModbusError("function 16 request too short: %d bytes, need at least 6" % n)
        address, count, nbytes = struct.unpack_from(">HHB", pdu, 1)
        if not 1 <= count <= MAX_WRITE:
            raise ModbusError("write count %d out of range 1..%d" % (count, MAX_WRITE))
        if nbytes != 2 * count or n != 6 + nbytes:
            raise ModbusError(
                "function 16 byte count %d does not match %d registers in %d bytes"
                % (nbytes, count, n)
            )
        _check_span(address, count)
        return WriteMultiple(address, struct.unpack_from(">%dH" % count, pdu, 6))
    raise ModbusError("function code 0x%02X not supported" % fc, ILLEGAL_FUNCTION)


def exception_for(pdu, error):
    """What a slave sends back when decode_request(pdu) raised `error`; None = stay silent.

    An unsupported function maps to exception 01, a bad quantity or byte count to 03, an
    address overrun to 02. Silence for an empty PDU or a function code of 0 or >= 0x80,
    which no valid exception response can echo.
    """
    if len(pdu) == 0 or pdu[0] == 0 or pdu[0] & 0x80:
        return None
    return ExceptionResponse(pdu[0], getattr(error, "code", ILLEGAL_VALUE))


# ---------------------------------------------------------------- responses


def encode_response(resp):
    """PDU bytes of a ReadResponse, WriteSingle, WriteMultipleResponse or ExceptionResponse."""
    if isinstance(resp, ReadResponse):
        if resp.function != READ_HOLDING and resp.function != READ_INPUT:
            raise ModbusError("read function must be 3 or 4, got %r" % (resp.function,))
        n = _check_regs("read response", resp.registers, MAX_READ)
        return struct.pack(">BB", resp.function, 2 * n) + struct.pack(">%dH" % n, *resp.registers)
    if isinstance(resp, WriteSingle):
        _check_u16("address", resp.address)
        _check_u16("value", resp.value)
        return struct.pack(">BHH", WRITE_SINGLE, resp.address, resp.value)
    if isinstance(resp, WriteMultipleResponse):
        if not 1 <= resp.count <= MAX_WRITE:
            raise ModbusError("write count %r out of range 1..%d" % (resp.count, MAX_WRITE))
        _check_span(resp.address, resp.count)
        return struct.pack(">BHH", WRITE_MULTIPLE, resp.address, resp.count)
    if isinstance(resp, ExceptionResponse):
        if not 1 <= resp.function <= 0x7F:
            raise ModbusError("exception for function %r: must be 1..127" % (resp.function,))
        if not 1 <= resp.code <= 0xFF:
            raise ModbusError("exception code %r out of range 1..255" % (resp.code,))
        return struct.pack(">BB", resp.function | 0x80, resp.code)
    raise ModbusError("not a response: %r" % (resp,))

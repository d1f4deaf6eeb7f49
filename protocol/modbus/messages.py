"""The Modbus PDU as message objects, for masters (protocol.modbus.master, the gateway's
poller), tools and tests: the requests and responses of the four register functions, and the
slave side's decode_request / encode_response / exception_for on top of protocol.modbus.pdu's
byte-level codec, which a meter uses alone (its slave builds no message objects, and this
module's classes would be heap it holds for nothing). protocol.modbus.pdu hands these names out
too (`pdu.ReadRequest`), importing this module when one is first asked for.
"""

import struct

from protocol.modbus.pdu import (
    MAX_READ, MAX_WRITE, READ_HOLDING, READ_INPUT, WRITE_MULTIPLE, WRITE_SINGLE,
    ModbusError, _check_span, encode_exception, exception_code, parse_request,
)


class _Message:
    """Equality and repr from the instance's attributes: one pair of methods for every message."""

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


def decode_request(pdu):
    """Parse a request PDU into a ReadRequest, WriteSingle or WriteMultiple (slave side, as
    pdu.parse_request). ModbusError.code says which exception to answer."""
    fc, address, count, values = parse_request(pdu)
    if values is None:
        return ReadRequest(fc, address, count)
    if fc == WRITE_SINGLE:
        return WriteSingle(address, values[0])
    return WriteMultiple(address, values)


def exception_for(pdu, error):
    """The ExceptionResponse a slave sends back when decode_request(pdu) raised `error`; None =
    stay silent (see pdu.exception_code)."""
    code = exception_code(pdu, error)
    return None if code is None else ExceptionResponse(pdu[0], code)


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
        return encode_exception(resp.function, resp.code)
    raise ModbusError("not a response: %r" % (resp,))


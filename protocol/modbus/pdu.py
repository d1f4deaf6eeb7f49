"""Modbus PDU codec for the four register functions streetgrid uses, in both roles.

Slave:  parse_request -> serve -> reply bytes (an echo of a write, or encode_exception()), or
        exception_code() when parsing failed. Tuples and bytes: a meter builds no message
        objects and holds none of their classes.
Master: protocol.modbus.master.encode_request -> (wire) -> decode_response(pdu, request), on
        the message objects (ReadRequest, ReadResponse, WriteSingle, WriteMultiple,
        WriteMultipleResponse, ExceptionResponse) with decode_request, encode_response and
        exception_for for tools and tests. Those live in protocol.modbus.messages and are
        reachable here too (`pdu.ReadRequest`), loaded on first use, so a meter never loads them.

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


def _check_span(address, count):
    if not 0 <= address <= 0xFFFF:
        raise ModbusError("address out of range 0..65535: %r" % (address,))
    if address + count > 0x10000:
        raise ModbusError("address 0x%04X + %d registers runs past 0xFFFF" % (address, count),
                          ILLEGAL_ADDRESS)


# ---------------------------------------------------------------- the slave's side


def parse_request(pdu):
    """(function, address, count, values) of a request PDU: values is None for a read (03 / 04
    of `count` registers) and the registers written for a write (06: one, 16: `count`).
    ModbusError.code says which exception to answer."""
    n = len(pdu)
    if n == 0:
        raise ModbusError("empty PDU: no function code")
    fc = pdu[0]
    if fc == READ_HOLDING or fc == READ_INPUT or fc == WRITE_SINGLE:
        if n != 5:
            raise ModbusError("function %d request must be 5 bytes, got %d" % (fc, n))
        address, word = struct.unpack_from(">HH", pdu, 1)
        if fc == WRITE_SINGLE:
            return fc, address, 1, (word,)
        if not 1 <= word <= MAX_READ:
            raise ModbusError("read count %d out of range 1..%d" % (word, MAX_READ))
        _check_span(address, word)
        return fc, address, word, None
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
        return fc, address, count, struct.unpack_from(">%dH" % count, pdu, 6)
    raise ModbusError("function code 0x%02X not supported" % fc, ILLEGAL_FUNCTION)


def exception_code(pdu, error):
    """The exception a slave answers when parse_request(pdu) raised `error`; None = stay silent.

    An unsupported function maps to exception 01, a bad quantity or byte count to 03, an
    address overrun to 02. Silence for an empty PDU or a function code of 0 or >= 0x80,
    which no valid exception response can echo.
    """
    if len(pdu) == 0 or pdu[0] == 0 or pdu[0] & 0x80:
        return None
    return getattr(error, "code", ILLEGAL_VALUE)


def encode_exception(function, code):
    """The exception response PDU: the request's function code with 0x80 set, then `code`."""
    if not 1 <= function <= 0x7F:
        raise ModbusError("exception for function %r: must be 1..127" % (function,))
    if not 1 <= code <= 0xFF:
        raise ModbusError("exception code %r out of range 1..255" % (code,))
    return bytes((function | 0x80, code))


def __getattr__(name):
    """The message half (protocol.modbus.messages), loaded when first asked for."""
    from protocol.modbus import messages

    try:
        return getattr(messages, name)
    except AttributeError:
        raise AttributeError(name) from None

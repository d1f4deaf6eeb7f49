"""Application payloads v1 for streetgrid poles and meters: compact binary frames per fPort.

One declarative table (layouts.py) defines every frame. protocol.payload.tablegen compiles it
into the compact device tables this package interprets (protocol/payload/tables/, one module
per fPort, imported on first use), and protocol.payload.jsgen renders the
same table into TS013 JavaScript codecs, so the device, the gateway and any LoRaWAN network
server decode identically. Every uplink fPort belongs to one device kind, so decoding needs
nothing but the fPort and the bytes.

    decode_uplink(fport, data)              -> {"kind", "message", "version", "fields"}
    encode_uplink(kind, message, fields)    -> (fport, bytes)        (device side)
    encode_downlink(kind, command, fields)  -> (fport, bytes)        (gateway side)
    decode_downlink(fport, data)            -> {"kind", "command", "version", "fields"}
    senml_records(decoded)                  -> [{"n", "u", "v"|"vb"|"vs", "lwm2m"}, ...]
    describe(fport)                         -> the normalized layout (offsets, units, ranges)

Every error is a PayloadError (a ValueError) with a one-line message. A device imports the
compact table of an fPort when it first uses it (a pole: fPort 10 for its first report, a
command's fPort when one arrives); describe() and senml_records() read layouts.py (units, LwM2M
paths, docs), which only the gateway needs.
"""

import sys

from protocol.payload import codec as _codec
from protocol.payload.codec import PayloadError  # noqa: F401
from protocol.payload.tables import DOWN, DOWNLINK_PORTS, UP, UPLINK_PORTS, VERSION  # noqa: F401

SENML_BVER = 26  # = senml.SENML_BVER (RFC 9100), which a device does not import
KINDS = ("pole", "meter")

_TABLE = {}  # fPort -> compact layout, filled as the tables modules are imported
_updec = {}  # fPort -> decode function
_downdec = {}


def _layout(port):
    """The compact layout of an fPort (importing its tables module once), or None."""
    lay = _TABLE.get(port)
    if lay is None and (port in UPLINK_PORTS or port in DOWNLINK_PORTS):
        mod = "protocol.payload.tables.p%d" % port
        __import__(mod)
        lay = _TABLE[port] = sys.modules[mod].LAYOUT
    return lay


def _port(names, kind, name):
    """The fPort of message or command `name` of `kind` in index UP or DOWN, or None."""
    if not isinstance(kind, str):
        return None
    ports = names.get(kind)
    return None if ports is None else ports.get(name)


_fast = None
if sys.implementation.name != "micropython":
    # the gateway: every table now, and straight-line decoders generated from them on first
    # use (protocol.payload.fastpath)
    from protocol.payload import fastpath as _fastpath

    _fast = _fastpath.build
    for _p in UPLINK_PORTS + DOWNLINK_PORTS:
        _layout(_p)


def _generic_decoder(lay):
    from protocol.payload.unpack import decode

    return lambda data: decode(lay, data)


def _decoder(port, direction):
    lay = _layout(port) if port in (UPLINK_PORTS if direction == "up" else DOWNLINK_PORTS) else None
    if lay is None:
        raise PayloadError("unknown %s fPort %s" % ("uplink" if direction == "up" else "downlink", port))
    dec = (_fast and _fast(lay)) or _generic_decoder(lay)
    (_updec if direction == "up" else _downdec)[port] = dec
    return dec


def decode_uplink(fport, data):
    """Decode an uplink FRMPayload; the fPort alone says which device kind sent it."""
    dec = _updec.get(fport)
    if dec is None:
        dec = _decoder(fport, "up")
    return dec(data)


def decode_downlink(fport, data):
    dec = _downdec.get(fport)
    if dec is None:
        dec = _decoder(fport, "down")
    return dec(data)


def encode_uplink(kind, message, fields):
    """(fport, bytes) for a "report", "alarm" or "ack" of a "pole" or "meter".

    Values are engineering units, rounded half away from zero to the wire resolution and clamped
    to the field's range; missing fields encode as "not available" where the field has such a
    value, else 0. Bitmaps take the raw int and/or "<field>/<bit>" booleans."""
    port = _port(UP, kind, message)
    if port is None:
        raise PayloadError("unknown uplink message %s for %s" % (message, kind))
    return port, _codec.encode(_layout(port), fields)


def encode_downlink(kind, command, fields):
    """(fport, bytes) for a command to a "pole" or "meter" (reboot and config go to both).

    Strict: unknown fields, missing required fields and values out of range raise."""
    port = _port(DOWN, kind, command)
    if port is None and kind in KINDS:
        port = _port(DOWN, "any", command)
    if port is None:
        raise PayloadError("unknown downlink command %s for %s" % (command, kind))
    return port, _codec.encode(_layout(port), fields)


def describe(fport):
    """The normalized layout of an fPort (a new dict): fields with byte offset "at", wire type,
    scale (mul, div, add), min / max, raw range, unit, LwM2M path, bit / enum names."""
    from protocol.payload.schema import describe

    return describe(fport)


def senml_records(decoded):
    """SenML records (dicts with n, u, v / vb / vs, and lwm2m) for a decoded uplink or downlink."""
    from protocol.payload.senml import records_of

    return records_of(decoded)

"""Application payloads v1 for streetgrid poles and meters: compact binary frames per fPort.

One declarative table (layouts.py) defines every frame; this package interprets it in Python
and protocol.payload.jsgen renders the same table into TS013 JavaScript codecs, so the device,
the gateway and any LoRaWAN network server decode identically. Every uplink fPort belongs to one
device kind, so decoding needs nothing but the fPort and the bytes.

    decode_uplink(fport, data)              -> {"kind", "message", "version", "fields"}
    encode_uplink(kind, message, fields)    -> (fport, bytes)        (device side)
    encode_downlink(kind, command, fields)  -> (fport, bytes)        (gateway side)
    decode_downlink(fport, data)            -> {"kind", "command", "version", "fields"}
    senml_records(decoded)                  -> [{"n", "u", "v"|"vb"|"vs", "lwm2m"}, ...]
    describe(fport)                         -> the normalized layout (offsets, units, ranges)

Every error is a PayloadError (a ValueError) with a one-line message. The table itself is the
only schema kept in RAM on a device.
"""

import sys

from protocol.payload import codec as _codec
from protocol.payload import senml as _senml
from protocol.payload.codec import PayloadError  # noqa: F401
from protocol.payload.layouts import LAYOUTS, VERSION  # noqa: F401
from protocol.payload.schema import SchemaError, normalize

SENML_BVER = _senml.SENML_BVER
KINDS = ("pole", "meter")

_TABLE = {}  # fPort -> declarative layout
_NAMED = {}  # (dir, kind, name) -> fPort
for _lay in LAYOUTS:
    if _lay["port"] in _TABLE:
        raise SchemaError("fPort %d used twice" % _lay["port"])
    _TABLE[_lay["port"]] = _lay
    _NAMED[(_lay["dir"], _lay["kind"], _lay["name"])] = _lay["port"]
del _lay

UPLINK_PORTS = sorted(p for p in _TABLE if _TABLE[p]["dir"] == "up")
DOWNLINK_PORTS = sorted(p for p in _TABLE if _TABLE[p]["dir"] == "down")

_updec = {}  # fPort -> decode function
_downdec = {}
_senml_cache = {}

_fast = None
if sys.implementation.name != "micropython":
    # the gateway: straight-line decoders generated from the table (protocol.payload.fastpath)
    from protocol.payload import fastpath as _fastpath

    _fast = _fastpath.build


def _generic_decoder(layout):
    return lambda data: _codec.decode(layout, data)


def _decoder(port, direction):
    src = _TABLE.get(port)
    if src is None or src["dir"] != direction:
        raise PayloadError("unknown %s fPort %s" % ("uplink" if direction == "up" else "downlink", port))
    dec = (_fast and _fast(src)) or _generic_decoder(src)
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
    port = _NAMED.get(("up", kind, message))
    if port is None:
        raise PayloadError("unknown uplink message %s for %s" % (message, kind))
    return port, _codec.encode(_TABLE[port], fields)


def encode_downlink(kind, command, fields):
    """(fport, bytes) for a command to a "pole" or "meter" (reboot and config go to both).

    Strict: unknown fields, missing required fields and values out of range raise."""
    port = _NAMED.get(("down", kind, command))
    if port is None and kind in KINDS:
        port = _NAMED.get(("down", "any", command))
    if port is None:
        raise PayloadError("unknown downlink command %s for %s" % (command, kind))
    return port, _codec.encode(_TABLE[port], fields)


def describe(fport):
    """The normalized layout of an fPort (a new dict): fields with byte offset "at", wire type,
    scale (mul, div, add), min / max, raw range, unit, LwM2M path, bit / enum names."""
    src = _TABLE.get(fport)
    if src is None:
        raise PayloadError("unknown fPort %s" % (fport,))
    return normalize(src)


def senml_records(decoded):
    """SenML records (dicts with n, u, v / vb / vs, and lwm2m) for a decoded uplink or downlink."""
    up = "message" in decoded
    port = _NAMED.get(("up" if up else "down", decoded["kind"], decoded["message" if up else "command"]))
    if port is None:
        raise PayloadError("not a decoded payload")
    return _senml.records(_TABLE[port], decoded, _senml_cache)

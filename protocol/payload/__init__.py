"""Application payloads v1 for streetgrid poles and meters: compact binary frames per fPort.

One declarative table (layouts.py) defines every frame. protocol.payload.tablegen compiles it
into the compact device tables this package interprets (protocol/payload/tables/, one module
per fPort, imported on first use), and protocol.payload.jsgen renders the
same table into TS013 JavaScript codecs, so the device, the gateway and any LoRaWAN network
server decode identically. Every uplink fPort belongs to one device kind, so decoding needs
nothing but the fPort and the bytes.

    encode_uplink(kind, message, fields)    -> (fport, bytes)        (device side)
    decode_downlink(fport, data)            -> {"kind", "command", "version", "fields"}
    decode_uplink(fport, data)              -> {"kind", "message", "version", "fields"}
    encode_downlink(kind, command, fields)  -> (fport, bytes)        (gateway side)
    senml_records(decoded)                  -> [{"n", "u", "v"|"vb"|"vs", "lwm2m"}, ...]
    describe(fport)                         -> the normalized layout (offsets, units, ranges)

The gateway side lives in protocol.payload.network_side, re-exported here on CPython only.

Every error is a PayloadError (a ValueError) with a one-line message. A device imports the
compact table of an fPort when it first uses it (a pole: fPort 10 for its first report, a
command's fPort when one arrives); describe() and senml_records() read layouts.py (units, LwM2M
paths, docs), which only the gateway needs.
"""

import sys

from protocol.payload import codec
from protocol.payload.codec import PayloadError  # noqa: F401
from protocol.payload.tables import DOWNLINK_PORTS, UP, UPLINK_PORTS, VERSION  # noqa: F401

_TABLE = {}  # fPort -> compact layout, filled as the tables modules are imported


def _layout(port):
    """The compact layout of an fPort (importing its tables module once), or None.

    Only the layout is kept: on MicroPython the module itself is dropped again (its object,
    dict and package attribute are ~250 B of heap per fPort a device ever used)."""
    lay = _TABLE.get(port)
    if lay is None and (port in UPLINK_PORTS or port in DOWNLINK_PORTS):
        mod = "protocol.payload.tables.p%d" % port
        __import__(mod)
        lay = _TABLE[port] = sys.modules[mod].LAYOUT
        if sys.implementation.name == "micropython":
            del sys.modules[mod]
            tables = sys.modules["protocol.payload.tables"]
            if hasattr(tables, "p%d" % port):
                delattr(tables, "p%d" % port)
    return lay


def _port(names, kind, name):
    """The fPort of message or command `name` of `kind` in index UP or DOWN, or None."""
    if not isinstance(kind, str):
        return None
    ports = names.get(kind)
    return None if ports is None else ports.get(name)


def encode_uplink(kind, message, fields):
    """(fport, bytes) for a "report", "alarm" or "ack" of a "pole" or "meter".

    Values are engineering units, rounded half away from zero to the wire resolution and clamped
    to the field's range; missing fields encode as "not available" where the field has such a
    value, else 0. Bitmaps take the raw int and/or "<field>/<bit>" booleans."""
    port = _port(UP, kind, message)
    if port is None:
        raise PayloadError("unknown uplink message %s for %s" % (message, kind))
    return port, codec.encode(_layout(port), fields)


def decode_downlink(fport, data):
    """Decode a command's FRMPayload (the generic interpreter: a device decodes a few a day)."""
    lay = _layout(fport) if fport in DOWNLINK_PORTS else None
    if lay is None:
        raise PayloadError("unknown downlink fPort %s" % (fport,))
    from protocol.payload.unpack import decode

    return decode(lay, data)


if sys.implementation.name != "micropython":
    # the gateway: decode_uplink (with the fast path), encode_downlink, describe, senml_records
    from protocol.payload.network_side import *  # noqa: F401,F403

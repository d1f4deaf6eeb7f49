"""Application payloads v1 for streetgrid poles and meters: compact binary frames per fPort.

One declarative table (layouts.py) defines every frame. protocol.payload.tablegen compiles it
into the compact device tables this package interprets (protocol/payload/tables/, one module
per device kind, imported when used), and protocol.payload.jsgen renders the
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
compact tables of its kind when it encodes or decodes a frame and drops them after (see
_layout), and the package itself after each frame (unload()); describe() and senml_records()
read layouts.py (units, LwM2M paths, docs), which only the gateway needs.
"""

import sys

from protocol.payload import codec
from protocol.payload.codec import PayloadError  # noqa: F401
from protocol.payload.tables import DOWN, DOWNLINK_PORTS, UP, UPLINK_PORTS, VERSION  # noqa: F401

_TABLE = {}  # fPort -> compact layout (CPython: a kind's kept once imported; MicroPython: none)


def _drop(mod):
    """Unload a module a device imports on demand (MicroPython): its object, dict and package
    attribute, and with them everything it built, go back to the heap."""
    sys.modules.pop(mod, None)
    pkg, _, leaf = mod.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None:
        parent.__dict__.pop(leaf, None)  # not delattr/hasattr: those intern the name


def _layout(port):
    """The compact layout of an fPort (importing the tables module of its kind), or None.

    A device does not keep it: a layout is a tree of tuples, 0.5-1 KB of heap each, and a pole
    that has sent every message and taken every command would hold all nine (5 KB, measured on
    the VM) for messages it sends a few times a day. It imports the module again each time
    instead (from flash: bytecode runs in place, and its names are interned already) and drops
    it. The gateway keeps every layout."""
    lay = _TABLE.get(port)
    if lay is not None or not (port in UPLINK_PORTS or port in DOWNLINK_PORTS):
        return lay
    for index in (UP, DOWN):
        for kind in index:
            if port in index[kind].values():
                mod = "protocol.payload.tables." + kind
                __import__(mod)
                for entry in sys.modules[mod].LAYOUTS:
                    if entry[0] == port:
                        lay = entry
                    if sys.implementation.name != "micropython":
                        _TABLE[entry[0]] = entry
                if sys.implementation.name == "micropython":
                    _drop(mod)
                return lay
    return None


def unload():
    """A device lets go of this package after each frame (MicroPython): the package, its codec
    and its fPort index are 2.5 KB of heap (measured on the VM) for a few frames an hour. The
    next `from protocol import payload` loads them again, from flash. CPython keeps them."""
    if sys.implementation.name == "micropython":
        for mod in ("protocol.payload.codec", "protocol.payload.tables", "protocol.payload"):
            _drop(mod)


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

    out = decode(lay, data)
    if sys.implementation.name == "micropython":
        _drop("protocol.payload.unpack")  # a device decodes a few commands a day
    return out


if sys.implementation.name != "micropython":
    # the gateway: decode_uplink (with the fast path), encode_downlink, describe, senml_records
    from protocol.payload.network_side import *  # noqa: F401,F403

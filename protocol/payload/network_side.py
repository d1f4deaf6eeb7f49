"""The gateway's half of the payload API, re-exported by protocol.payload on CPython (a device
never loads it): decoding uplinks with the straight-line decoders of protocol.payload.fastpath,
encoding downlinks, the normalized layouts (describe) and SenML records.
"""

import sys

from protocol.payload import DOWNLINK_PORTS, UPLINK_PORTS, PayloadError, _layout, _port
from protocol.payload import codec as _codec
from protocol.payload.senml import SENML_BVER  # noqa: F401 - for the gateway's SenML packs
from protocol.payload.tables import DOWN
from protocol.payload.unpack import decode as _decode

if sys.implementation.name != "micropython":
    from protocol.payload.fastpath import build as _fast
else:  # MicroPython has no struct.Struct: the generic decoder (VM tests run this module)
    _fast = None

__all__ = ["KINDS", "SENML_BVER", "decode_uplink", "encode_downlink", "describe", "senml_records"]

KINDS = ("pole", "meter")

_updec = {}  # fPort -> decode function: generated on first use, else the generic one

for _p in UPLINK_PORTS + DOWNLINK_PORTS:  # every table now: the gateway decodes any fPort
    _layout(_p)
del _p


def _decoder(lay):
    return (_fast and _fast(lay)) or (lambda data: _decode(lay, data))


def decode_uplink(fport, data):
    """Decode an uplink FRMPayload; the fPort alone says which device kind sent it."""
    dec = _updec.get(fport)
    if dec is None:
        lay = _layout(fport) if fport in UPLINK_PORTS else None
        if lay is None:
            raise PayloadError("unknown uplink fPort %s" % (fport,))
        dec = _updec[fport] = _decoder(lay)
    return dec(data)


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

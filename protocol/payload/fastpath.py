"""Straight-line decoders generated from the table, for the gateway's hot path on CPython.

The generic interpreter (codec.decode) walks the table's field dicts; this module writes, on
first use, one Python function per fixed-size layout that unpacks into locals and builds the
result in a single dict display, several times faster. Anything unusual (wrong length or
version, an unknown enum code) falls back to the generic decoder, which raises the proper
PayloadError. Tests check both paths agree on random frames. Not used on MicroPython, where
decoding is rare and RAM is dear.
"""

from protocol.payload.schema import TYPES


def _value(f, v):
    """Python expression computing field f's value from raw local v (as codec._fill does)."""
    if f["float"] == "e4m12":
        e = "((%s & 4095) << (%s >> 12))" % (v, v)
        if f["mul"] != 1:
            e += " * %r" % f["mul"]
        e += " / %r" % f["div"]
    elif f["div"] != 1:
        e = v if f["mul"] == 1 else "%s * %r" % (v, f["mul"])
        e += " / %r" % f["div"]
    else:
        e = v if f["mul"] == 1 else "%s * %r" % (v, f["mul"])
    if f["add"] != 0:
        e += " + %r" % f["add"]
    return e


def source(schema, name="decode"):
    """Source of `def <name>(data)` for one fixed-size normalized layout, or None."""
    if schema["repeat"] is not None:
        return None
    names = ["_v"]
    items = []
    checks = []
    k = 1
    for f in schema["fields"]:
        codes = TYPES[f["type"]][0]
        v = "v%d" % k
        names.append(v)
        if len(codes) == 2:
            names.append("v%d" % (k + 1))
            raw = "(%s + (v%d << 16))" % (v, k + 1)
        else:
            raw = v
        k += len(codes)
        if f["bits"] is not None:
            items.append("%r: %s" % (f["name"], raw))
            for b in f["bits"]:
                items.append("%r: (%s & %d) != 0" % (f["name"] + "/" + b[1], raw, 1 << b[0]))
            continue
        if f["enum"] is not None:
            checks.append("%s < %d" % (raw, len(f["enum"])))
            expr = "%r[%s]" % (tuple(f["enum"]), raw)
        else:
            expr = _value(f, raw)
        if f["na"] is not None:
            expr = "None if %s == %d else %s" % (raw, f["na"], expr)
        items.append("%r: %s" % (f["name"], expr))
    what = "message" if schema["dir"] == "up" else "command"
    lines = [
        "def %s(data):" % name,
        "    if len(data) != %d or data[0] != 1:" % schema["size"],
        "        return _generic(data)",
        "    %s, = _unpack(data)" % ", ".join(names),
    ]
    if checks:
        lines.append("    if not (%s):" % " and ".join(checks))
        lines.append("        return _generic(data)")
    lines.append("    return {'kind': %r, %r: %r, 'version': 1, 'fields': {%s}}"
                 % (schema["kind"], what, schema["name"], ", ".join(items)))
    return "\n".join(lines) + "\n"


def build(layout):
    """A fast decode function for a declarative layout, or None (repeated layouts)."""
    import struct

    from protocol.payload import codec
    from protocol.payload.schema import normalize

    src = source(normalize(layout))
    if src is None:
        return None
    scope = {
        "_unpack": struct.Struct(codec.shape(layout)[0]).unpack,
        "_generic": lambda data: codec.decode(layout, data),
    }
    exec(src, scope)
    return scope["decode"]

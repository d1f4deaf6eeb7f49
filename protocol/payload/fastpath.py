"""Straight-line decoders generated from the table, for the gateway's hot path on CPython.

The generic interpreter (unpack.decode) walks the compact table's field tuples; this module
writes, on first use, one Python function per fixed-size layout that unpacks into locals and
builds the result in a single dict display, several times faster. Anything unusual (wrong
length or version, an unknown enum code) falls back to the generic decoder, which raises the
proper PayloadError. Tests check both paths agree on random frames. Not used on MicroPython,
where decoding is rare and RAM is dear.

Field tuple indices as in codec.py: (name, type, na, mul, div, add, lo, hi, bits, enum, float,
...).
"""

_WIDE = ("u24", "i24")


def _value(f, v):
    """Python expression computing field f's value from raw local v (as codec._fill does)."""
    mul, div, add = f[3], f[4], f[5]
    if f[10]:  # e4m12
        e = "((%s & 4095) << (%s >> 12))" % (v, v)
        if mul != 1:
            e += " * %r" % mul
        if div != 1:
            e += " / %r" % div
    elif div != 1:
        e = v if mul == 1 else "%s * %r" % (v, mul)
        e += " / %r" % div
    else:
        e = v if mul == 1 else "%s * %r" % (v, mul)
    if add != 0:
        e += " + %r" % add
    return e


def source(lay, name="decode"):
    """Source of `def <name>(data)` for one fixed-size compact layout, or None."""
    if lay[5] is not None:
        return None
    names = ["_v"]
    items = []
    checks = []
    k = 1
    for f in lay[4]:
        v = "v%d" % k
        names.append(v)
        if f[1] in _WIDE:
            names.append("v%d" % (k + 1))
            raw = "(%s + (v%d << 16))" % (v, k + 1)
            k += 2
        else:
            raw = v
            k += 1
        if f[8] is not None:
            items.append("%r: %s" % (f[0], raw))
            for b, bname in enumerate(f[8]):
                if bname is not None:
                    items.append("%r: (%s & %d) != 0" % (f[0] + "/" + bname, raw, 1 << b))
            continue
        if f[9] is not None:
            checks.append("%s < %d" % (raw, len(f[9])))
            expr = "%r[%s]" % (tuple(f[9]), raw)
        else:
            expr = _value(f, raw)
        if f[2] is not None:
            expr = "None if %s == %d else %s" % (raw, f[2], expr)
        items.append("%r: %s" % (f[0], expr))
    what = "message" if lay[2] == "up" else "command"
    lines = [
        "def %s(data):" % name,
        "    if len(data) != %d or data[0] != 1:" % lay[6][2],
        "        return _generic(data)",
        "    %s, = _unpack(data)" % ", ".join(names),
    ]
    if checks:
        lines.append("    if not (%s):" % " and ".join(checks))
        lines.append("        return _generic(data)")
    lines.append("    return {'kind': %r, %r: %r, 'version': 1, 'fields': {%s}}"
                 % (lay[1], what, lay[3], ", ".join(items)))
    return "\n".join(lines) + "\n"


def build(lay):
    """A fast decode function for a compact layout, or None (repeated layouts)."""
    import struct

    from protocol.payload import unpack

    src = source(lay)
    if src is None:
        return None
    scope = {
        "_unpack": struct.Struct(lay[6][0]).unpack,
        "_generic": lambda data: unpack.decode(lay, data),
    }
    exec(src, scope)
    return scope["decode"]

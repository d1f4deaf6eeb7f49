"""The generic interpreter of the layout table (layouts.py), in Python.

It reads the declarative layout dicts directly, so a device keeps nothing per fPort but a
struct format: the table is the only copy of the schema in RAM. That costs a few dict lookups
per field, which the device (one encode per report) does not notice; the gateway decodes fixed
layouts with the straight-line functions of protocol.payload.fastpath instead.

Value rules, identical in the generated JavaScript:
- engineering value = raw * mul / div + add; an int when div is 1, a float otherwise;
- encoding rounds half away from zero; uplinks clamp to the field's range, downlinks reject
  values outside it (a command should fail loudly, a sensor reading should still be sent);
- None means the field's "na" raw value; NaN does too on uplinks.
"""

import struct

from protocol.payload.layouts import VERSION
from protocol.payload.schema import TYPES, bounds, label, limits


class PayloadError(ValueError):
    """Malformed payload or invalid values: unknown fPort, wrong version or length, bad field."""


_INF = float("inf")
_MISSING = object()
_WIDE = ("u24", "i24")  # packed as a 16-bit and an 8-bit struct value
_shapes = {}  # fPort -> (fmt, values, size, entry fmt, entry values, entry size)


def fmt_number(v):
    """Numbers in messages as the JavaScript codec prints them (1 not 1.0)."""
    if v == int(v):
        return "%d" % v
    return repr(v)


def _shape_of(fields, fmt):
    n = 0
    size = 0
    for f in fields:
        codes, width = TYPES[f["type"]][:2]
        fmt += codes
        n += len(codes)
        size += width
    return fmt, n, size


def shape(layout):
    """(struct format, value count, size) of the fixed part, and the same for one repeated
    entry (None when the layout has no repeat), cached per fPort."""
    s = _shapes.get(layout["port"])
    if s is None:
        fmt, n, size = _shape_of(layout["fields"], "<B")
        rep = layout.get("repeat")
        r = (None, 0, 0) if rep is None else _shape_of(rep["fields"], "<")
        s = _shapes[layout["port"]] = (fmt, n + 1, size + 1) + r
    return s


def _fill(fields, t, i, out, lay):
    for f in fields:
        name = f["name"]
        r = t[i]
        if f["type"] in _WIDE:
            r += t[i + 1] << 16
            i += 2
        else:
            i += 1
        na = f.get("na")
        if na is not None and r == na:
            out[name] = None
            continue
        bits = f.get("bits")
        enum = f.get("enum")
        if bits is not None:
            out[name] = r
            for b in bits:
                out[name + "/" + b[1]] = (r >> b[0]) & 1 == 1
        elif enum is not None:
            if not 0 <= r < len(enum):
                raise PayloadError("%s: %s: unknown code %d" % (label(lay), name, r))
            out[name] = enum[r]
        else:
            if f.get("float") == "e4m12":
                r = (r & 0xFFF) << (r >> 12)
            div = f.get("div", 1)
            if div == 1:
                out[name] = r * f.get("mul", 1) + f.get("add", 0)
            else:
                out[name] = r * f.get("mul", 1) / div + f.get("add", 0)


def _length_error(layout, n):
    fmt, _, size, rfmt, _, rsize = shape(layout)
    if rfmt is None:
        return PayloadError("%s: wrong length %d bytes, expected %d" % (label(layout), n, size))
    return PayloadError("%s: wrong length %d bytes, expected %d + %d x n (n = 0..%d)"
                        % (label(layout), n, size, rsize, layout["repeat"]["max"]))


def decode(layout, data):
    """{"kind", "message" | "command", "version", "fields"} for one frame of `layout`."""
    n = len(data)
    if n and data[0] != VERSION:
        raise PayloadError("%s: unsupported version %d, expected %d" % (label(layout), data[0], VERSION))
    fmt, _, size, rfmt, _, rsize = shape(layout)
    out = {}
    if rfmt is None:
        if n != size:
            raise _length_error(layout, n)
        _fill(layout["fields"], struct.unpack(fmt, data), 1, out, layout)
    else:
        rep = layout["repeat"]
        count = (n - size) // rsize if n >= size else -1
        if count < 0 or count > rep["max"] or size + count * rsize != n:
            raise _length_error(layout, n)
        _fill(layout["fields"], struct.unpack_from(fmt, data, 0), 1, out, layout)
        entries = []
        for k in range(count):
            e = {}
            _fill(rep["fields"], struct.unpack_from(rfmt, data, size + k * rsize), 0, e, layout)
            entries.append(e)
        out[rep["name"]] = entries
    what = "message" if layout["dir"] == "up" else "command"
    return {"kind": layout["kind"], what: layout["name"], "version": VERSION, "fields": out}


def _round(y):
    """Half away from zero (the JavaScript codec does the same with Math.floor)."""
    return int(y + 0.5) if y >= 0 else -int(0.5 - y)


def _integral(x):
    """x as an int if it is a whole number (JSON cannot tell 3 from 3.0), else None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x - x == 0 and x == int(x):
        return int(x)
    return None


def _e4m12(n):
    """Nearest 4-bit-exponent / 12-bit-mantissa code for 0 <= n <= 4095 << 15 (ties away)."""
    e = 0
    m = n
    while m > 4095:
        e += 1
        m = (n + (1 << (e - 1))) >> e
    return (e << 12) | m


def _raw(f, src, lay, strict):
    """The raw wire value of field f from the input dict `src`."""
    name = f["name"]
    x = src.get(name, _MISSING)
    bits = f.get("bits")
    if bits is not None:
        if x is _MISSING or x is None:
            r = 0
        else:
            r = _integral(x)
            if r is None:
                raise PayloadError("%s: %s must be a number" % (label(lay), name))
            r &= bounds(f)[1]
        # "<name>/<bit>" booleans override the raw bitmap (scan the input rather than build
        # every key: no allocation when the caller passes the raw int)
        prefix = name + "/"
        for key in src:
            if key.startswith(prefix):
                v = src[key]
                if v is None:
                    continue
                for b in bits:
                    if key.endswith(b[1]) and len(key) == len(prefix) + len(b[1]):
                        r = (r | (1 << b[0])) if v else (r & ~(1 << b[0]))
        return r
    na = f.get("na")
    if x is _MISSING:
        if "default" in f:
            x = f["default"]
        elif na is not None and not f.get("required"):
            return na
        elif strict:
            raise PayloadError("%s: missing field %s" % (label(lay), name))
        else:
            x = 0
    if x is None:
        if na is not None:
            return na
        if strict:
            raise PayloadError("%s: %s must be a number" % (label(lay), name))
        x = 0
    enum = f.get("enum")
    if enum is not None:
        if isinstance(x, str):
            if x in enum:
                return enum.index(x)
        else:
            r = _integral(x)
            if r is not None and 0 <= r < len(enum):
                return r
        raise PayloadError("%s: %s must be one of %s" % (label(lay), name, ", ".join(enum)))
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise PayloadError("%s: %s must be a number" % (label(lay), name))
    mul = f.get("mul", 1)
    div = f.get("div", 1)
    add = f.get("add", 0)
    if mul == 1 and div == 1 and isinstance(x, int):
        y = x - add
    else:
        try:
            y = (x - add) * div / mul
        except OverflowError:  # an int beyond float range
            y = _INF if x > 0 else -_INF
    if y != y:  # NaN
        if na is not None and not strict:
            return na
        raise PayloadError("%s: %s must be a number" % (label(lay), name))
    if f.get("wrap"):
        if not isinstance(y, int):
            if y - y != 0:  # infinite
                raise PayloadError("%s: %s must be a number" % (label(lay), name))
            y = _round(y)
        return y % (1 << (8 * TYPES[f["type"]][1]))
    lo, top = bounds(f)
    if not lo <= y <= top:
        if strict:
            vmin, vmax = limits(f)
            raise PayloadError("%s: %s out of range %s..%s" % (label(lay), name, fmt_number(vmin), fmt_number(vmax)))
        y = lo if y < lo else top
    if not isinstance(y, int):
        y = _round(y)
    if f.get("float") == "e4m12":
        return _e4m12(y)
    return y


def _put(fields, vals, i, src, lay, strict):
    for f in fields:
        r = _raw(f, src, lay, strict)
        if f["type"] in _WIDE:
            vals[i] = r & 0xFFFF
            vals[i + 1] = r >> 16
            i += 2
        else:
            vals[i] = r
            i += 1


def _check_keys(fields, src, lay, extra):
    for key in src:
        if key == extra:
            continue
        for f in fields:
            if f["name"] == key:
                break
            bits = f.get("bits")
            if bits is not None and key.startswith(f["name"] + "/") and any(
                    key == f["name"] + "/" + b[1] for b in bits):
                break
        else:
            raise PayloadError("%s: unknown field %s" % (label(lay), key))


def encode(layout, fields):
    """bytes of one frame of `layout` from engineering values. Downlinks are strict (unknown
    or missing fields and out-of-range values raise); uplinks clamp."""
    if not isinstance(fields, dict):
        raise PayloadError("%s: fields must be an object" % label(layout))
    strict = layout["dir"] == "down"
    rep = layout.get("repeat")
    if strict:
        _check_keys(layout["fields"], fields, layout, None if rep is None else rep["name"])
    fmt, n, size, rfmt, rn, rsize = shape(layout)
    vals = [0] * n
    vals[0] = VERSION
    _put(layout["fields"], vals, 1, fields, layout, strict)
    data = struct.pack(fmt, *vals)
    if rep is None:
        return data
    entries = fields.get(rep["name"], _MISSING)
    if entries is _MISSING:
        entries = ()
    if not isinstance(entries, (list, tuple)) or len(entries) > rep["max"]:
        raise _entries_error(layout)
    parts = [data]
    for e in entries:
        if not isinstance(e, dict):
            raise _entries_error(layout)
        if strict:
            _check_keys(rep["fields"], e, layout, None)
        rvals = [0] * rn
        _put(rep["fields"], rvals, 0, e, layout, strict)
        parts.append(struct.pack(rfmt, *rvals))
    return b"".join(parts)


def _entries_error(layout):
    rep = layout["repeat"]
    return PayloadError("%s: %s must be a list of at most %d objects" % (label(layout), rep["name"], rep["max"]))

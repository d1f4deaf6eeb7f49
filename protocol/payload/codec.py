"""The generic interpreter of the payload layouts, in Python: encoding here, decoding in
protocol.payload.unpack.

It reads the compact device tables (protocol/payload/tables/, compiled from layouts.py by
protocol.payload.tablegen), so a device keeps nothing per fPort but the tuples of the device
kind and direction it uses: no schema is built in RAM, the struct formats and the raw bounds
are in the table. The gateway decodes fixed layouts with the straight-line functions of
protocol.payload.fastpath instead. Tools and tests that hold a declarative layout dict from
layouts.py use tablegen.encode / tablegen.decode, which compile it on the fly.

Value rules, identical in the generated JavaScript:
- engineering value = raw * mul / div + add; an int when div is 1, a float otherwise;
- encoding rounds half away from zero; uplinks clamp to the field's range, downlinks reject
  values outside it (a command should fail loudly, a sensor reading should still be sent);
- None means the field's "na" raw value; NaN does too on uplinks.

Indices into the compact tuples (see tablegen): a layout is (port, kind, dir, name, fields,
repeat, shape); a field is (name, type, na, mul, div, add, lo, hi, bits, enum, float, wrap,
default, required, min, max).
"""

import struct

VERSION = 1  # byte 0 of every frame (layouts.VERSION: tablegen checks they agree)


class PayloadError(ValueError):
    """Malformed payload or invalid values: unknown fPort, wrong version or length, bad field."""


_MISSING = object()
_WIDE = ("u24", "i24")  # packed as a 16-bit and an 8-bit struct value


def fmt_number(v):
    """Numbers in messages as the JavaScript codec prints them (1 not 1.0)."""
    if v == int(v):
        return "%d" % v
    return repr(v)


def label(lay):
    """How messages name a layout: "fPort 10 (pole report)"."""
    kind = lay[1]
    name = lay[3]
    plain = kind == "any" or name.startswith(kind)
    return "fPort %d (%s)" % (lay[0], name if plain else kind + " " + name)


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


def _e4m12(y):
    """Nearest 4-bit-exponent / 12-bit-mantissa code for 0 <= y <= 4095 << 15 (ties away).

    y is the unrounded scaled value: rounding it to an integer first and then to the mantissa
    would round twice and miss the nearest code. Dividing by 2^e is exact in binary floating
    point, so the JavaScript codec computes the same code.
    """
    e = 0
    m = _round(y)
    while m > 4095:
        e += 1
        m = _round(y / (1 << e))
    return (e << 12) | m


def _raw(f, src, lay, strict):
    """The raw wire value of field f from the input dict `src`."""
    name = f[0]
    x = src.get(name, _MISSING)
    bits = f[8]
    if bits is not None:
        if x is _MISSING or x is None:
            r = 0
        else:
            r = _integral(x)
            if r is None:
                raise PayloadError("%s: %s must be a number" % (label(lay), name))
            r &= f[7]
        # "<name>/<bit>" booleans override the raw bitmap (scan the input rather than build
        # every key: no allocation when the caller passes the raw int)
        n = len(name)
        for key in src:
            if len(key) > n + 1 and key[n] == "/" and key.startswith(name):
                v = src[key]
                if v is None:
                    continue
                b = 0
                for bname in bits:
                    if bname is not None and key.endswith(bname) and len(key) == n + 1 + len(bname):
                        r = (r | (1 << b)) if v else (r & ~(1 << b))
                    b += 1
        return r
    na = f[2]
    if x is _MISSING:
        if f[12] is not None:
            x = f[12]
        elif na is not None and not f[13]:
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
    enum = f[9]
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
    mul = f[3]
    div = f[4]
    add = f[5]
    if mul == 1 and div == 1 and isinstance(x, int):
        y = x - add
    else:
        try:
            y = (x - add) * div / mul
        except OverflowError:  # an int beyond float range
            y = 1e999 if x > 0 else -1e999  # +-inf
    if y != y:  # NaN
        if na is not None and not strict:
            return na
        raise PayloadError("%s: %s must be a number" % (label(lay), name))
    if f[11]:  # a counter: modulo 2^bits
        if not isinstance(y, int):
            if y - y != 0:  # infinite
                raise PayloadError("%s: %s must be a number" % (label(lay), name))
            y = _round(y)
        return y % (1 << f[11])
    lo = f[6]
    top = f[7]
    if not lo <= y <= top:
        if strict:
            raise PayloadError("%s: %s out of range %s..%s"
                               % (label(lay), name, fmt_number(f[14]), fmt_number(f[15])))
        y = lo if y < lo else top
    if f[10]:
        return _e4m12(y)
    if not isinstance(y, int):
        y = _round(y)
    return y


def _put(fields, out, i, src, lay, strict):
    for f in fields:
        r = _raw(f, src, lay, strict)
        if f[1] in _WIDE:
            out[i] = r & 0xFFFF
            out[i + 1] = r >> 16
            i += 2
        else:
            out[i] = r
            i += 1


def _check_keys(fields, src, lay, extra):
    for key in src:
        if key == extra:
            continue
        for f in fields:
            name = f[0]
            if name == key:
                break
            n = len(name)
            if f[8] is not None and len(key) > n + 1 and key[n] == "/" and key.startswith(name) \
                    and key[n + 1:] in f[8]:
                break
        else:
            raise PayloadError("%s: unknown field %s" % (label(lay), key))


def encode(lay, fields):
    """bytes of one frame of compact layout `lay` from engineering values. Downlinks are strict
    (unknown or missing fields and out-of-range values raise); uplinks clamp."""
    if not isinstance(fields, dict):
        raise PayloadError("%s: fields must be an object" % label(lay))
    strict = lay[2] == "down"
    rep = lay[5]
    if strict:
        _check_keys(lay[4], fields, lay, None if rep is None else rep[0])
    fmt, n, size, rfmt, rn, rsize = lay[6]
    vals = [0] * n
    vals[0] = VERSION
    _put(lay[4], vals, 1, fields, lay, strict)
    data = struct.pack(fmt, *vals)
    if rep is None:
        return data
    entries = fields.get(rep[0], _MISSING)
    if entries is _MISSING:
        entries = ()
    ok = isinstance(entries, (list, tuple)) and len(entries) <= rep[1]
    for e in entries if ok else ():
        ok = isinstance(e, dict)
        if not ok:
            break
    if not ok:
        raise PayloadError("%s: %s must be a list of at most %d objects" % (label(lay), rep[0], rep[1]))
    parts = [data]
    for e in entries:
        if strict:
            _check_keys(rep[2], e, lay, None)
        rvals = [0] * rn
        _put(rep[2], rvals, 0, e, lay, strict)
        parts.append(struct.pack(rfmt, *rvals))
    return b"".join(parts)

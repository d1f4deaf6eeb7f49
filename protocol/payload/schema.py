"""The layout table made explicit: every default filled in, byte offsets, raw bounds and sizes.

normalize() turns a declarative layout from layouts.py into the explicit schema that describe()
returns and the generated TS013 JavaScript embeds. The device tables the Python interpreter
(codec.py) reads are compiled by tablegen with the same functions (bounds, limits), and label()
is the codec's, so the two cannot disagree about a range or a message. Gateway side: a device
never imports this module.
"""

from protocol.payload.layouts import LAYOUTS

# wire type -> (struct codes, size, raw min, raw max)
TYPES = {
    "u8": ("B", 1, 0, 0xFF),
    "i8": ("b", 1, -0x80, 0x7F),
    "u16": ("H", 2, 0, 0xFFFF),
    "i16": ("h", 2, -0x8000, 0x7FFF),
    "u24": ("HB", 3, 0, 0xFFFFFF),
    "i24": ("Hb", 3, -0x800000, 0x7FFFFF),
    "u32": ("I", 4, 0, 0xFFFFFFFF),
    "i32": ("i", 4, -0x80000000, 0x7FFFFFFF),
}

E4M12_MAX = 4095 << 15  # largest raw value m << e of the 4-bit exponent / 12-bit mantissa form

# Keys a field may carry in layouts.py; anything else is a typo caught at import.
_KEYS = ("name", "type", "unit", "lwm2m", "mul", "div", "add", "min", "max", "na", "wrap",
         "bits", "enum", "float", "default", "required", "doc")


class SchemaError(ValueError):
    """A layout in layouts.py is inconsistent: a programming error, which the tests catch by
    normalizing every layout (a device never normalizes, it reads the compiled tables)."""


def _eng(raw, mul, div, add):
    if div == 1:
        return raw * mul + add
    return raw * mul / div + add


def _floor_div(a, b):
    # a / b rounded down, for ints or floats, without math (same on MicroPython)
    q = a / b
    i = int(q)
    return i - 1 if i > q else i


def bounds(f):
    """(lowest, highest) raw value the encoder may send for field f (a declarative field dict):
    the wire type's range minus the "na" sentinel, narrowed by the field's min / max."""
    t = f["type"]
    lo, hi = TYPES[t][2], TYPES[t][3]
    na = f.get("na")
    if f.get("bits") is not None:
        return 0, (1 << (8 * TYPES[t][1])) - 1
    if f.get("float") is not None:
        lo, hi = 0, E4M12_MAX
        if na == 0xFFFF:
            hi = 4094 << 15
    elif na == hi:
        hi -= 1
    elif na == lo:
        lo += 1
    enum = f.get("enum")
    if enum is not None:
        hi = len(enum) - 1
    mul = f.get("mul", 1)
    div = f.get("div", 1)
    add = f.get("add", 0)
    if "min" in f:
        lo = max(lo, -_floor_div(-(f["min"] - add) * div, mul))
    if "max" in f:
        hi = min(hi, _floor_div((f["max"] - add) * div, mul))
    return lo, hi


def limits(f):
    """(min, max) of field f in engineering units (None for bitmaps)."""
    if f.get("bits") is not None:
        return None, None
    lo, hi = bounds(f)
    mul = f.get("mul", 1)
    div = f.get("div", 1)
    add = f.get("add", 0)
    return f.get("min", _eng(lo, mul, div, add)), f.get("max", _eng(hi, mul, div, add))


def label(layout):
    """How messages name a layout: "fPort 10 (pole report)" (the codec's words)."""
    from protocol.payload.codec import label as compact_label

    return compact_label((layout["port"], layout["kind"], layout["dir"], layout["name"]))


def _field(src, at, where):
    for k in src:
        if k not in _KEYS:
            raise SchemaError("%s: unknown key %s in field %s" % (where, k, src.get("name")))
    t = src["type"]
    if t not in TYPES:
        raise SchemaError("%s: unknown type %s" % (where, t))
    na = src.get("na")
    if na is not None and not TYPES[t][2] <= na <= TYPES[t][3]:
        raise SchemaError("%s: na %d outside %s" % (where, na, t))
    if src.get("float") not in (None, "e4m12") or (src.get("float") and t != "u16"):
        raise SchemaError("%s: float e4m12 needs a u16" % where)
    lo, hi = bounds(src)
    vmin, vmax = limits(src)
    f = {
        "name": src["name"], "type": t, "at": at, "size": TYPES[t][1],
        "unit": src.get("unit"), "lwm2m": src.get("lwm2m"),
        "mul": src.get("mul", 1), "div": src.get("div", 1), "add": src.get("add", 0),
        "min": vmin, "max": vmax, "raw_min": lo, "raw_max": hi, "na": na,
        "wrap": bool(src.get("wrap", False)),
        "bits": src.get("bits"), "enum": src.get("enum"), "float": src.get("float"),
        "required": bool(src.get("required", False)),
        "doc": src.get("doc"),
    }
    if "default" in src:
        f["default"] = src["default"]
    return f


def _fields(srcs, start, where):
    out = []
    at = start
    for src in srcs:
        f = _field(src, at, where)
        at += f["size"]
        out.append(f)
    return out, at


def normalize(layout):
    """The explicit schema of one layout (a new dict; LAYOUTS is not modified)."""
    where = label(layout)
    fields, size = _fields(layout["fields"], 1, where)
    out = {
        "port": layout["port"], "kind": layout["kind"], "dir": layout["dir"],
        "name": layout["name"], "label": where, "size": size, "fields": fields, "repeat": None,
    }
    rep = layout.get("repeat")
    if rep is not None:
        rfields, rsize = _fields(rep["fields"], 0, where)
        out["repeat"] = {"name": rep["name"], "max": rep["max"], "size": rsize, "fields": rfields}
    return out


_sources = {}  # fPort -> declarative layout


def source(port):
    """The declarative layout (a dict of layouts.py) of an fPort, or None."""
    if not _sources:
        for lay in LAYOUTS:
            _sources[lay["port"]] = lay
    return _sources.get(port)


def describe(port):
    """protocol.payload.describe: the normalized layout of an fPort."""
    src = source(port)
    if src is None:
        from protocol.payload.codec import PayloadError

        raise PayloadError("unknown fPort %s" % (port,))
    return normalize(src)


def schema():
    """All layouts, normalized, in table order."""
    return [normalize(lay) for lay in LAYOUTS]

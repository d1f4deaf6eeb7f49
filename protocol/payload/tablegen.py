"""The device tables: layouts.py compiled to compact tuples, one module per device kind under
protocol/payload/tables/ (pole.py, meter.py, any.py for the commands every device takes) plus
the fPort index (tables/__init__.py), written by `python -m protocol.payload.jsgen`.

A device imports only the layouts of its kind, never layouts.py, schema.py or the SenML/LwM2M
metadata, and drops them again after each use (protocol.payload._layout). Why per kind and not
per fPort: every module a device imports interns three qstrs for good (its name, its package
attribute and its file path), and in the field a device uses every message of its kind sooner
or later: one module per kind costs a meter 6 qstrs where one per fPort cost 21. The tables
are data: the tuples hold just what the codec needs, with the raw bounds and engineering
limits computed here by schema.bounds / schema.limits, so the device and every generated
decoder agree on every range. A test asserts the checked-in modules equal render(); importing
this module is harmless (it also imports on MicroPython, like everything in protocol/).

A compact layout is a tuple
    (port, kind, dir, name, fields, repeat, shape)
with repeat None or (name, max, fields) and shape the struct formats
    (fmt, value count, size, entry fmt, entry value count, entry size)   (entry part: None, 0, 0)
and each field a tuple
    (name, type, na, mul, div, add, raw lo, raw hi, bits, enum, float, wrap, default, required,
     min, max)
where bits is a tuple of bit names indexed by bit position (None where unnamed) or None, enum a
tuple of names or None, float True for e4m12, wrap the counter width in bits (0: clamp instead),
default None when the field has none, min / max the engineering range, for the messages of
strict encoding: downlink fields only (uplink field tuples end at required).

The modules spell None as _N, which keeps mpy-cross from folding the tuples into constants: the
.mpy loader allocates several times more to build a folded constant tuple than the bytecode
that builds the same tuple at import (measured on the MicroPython VM).
"""

from protocol.payload import codec, unpack
from protocol.payload.layouts import LAYOUTS, VERSION
from protocol.payload.schema import TYPES, SchemaError, bounds, label, limits, normalize


def _bits(bits):
    if bits is None:
        return None
    top = -1
    for b in bits:
        if b[0] <= top:
            raise SchemaError("bits must be listed in ascending order (%s)" % b[1])
        top = b[0]
    names = [None] * (top + 1)
    for b in bits:
        names[b[0]] = b[1]
    return tuple(names)


def _field(f, strict):
    default = f.get("default")
    if "default" in f and default is None:
        raise SchemaError("%s: default None is not supported" % f["name"])
    lo, hi = bounds(f)
    vmin, vmax = limits(f)
    enum = f.get("enum")
    return (f["name"], f["type"], f.get("na"), f.get("mul", 1), f.get("div", 1), f.get("add", 0),
            lo, hi, _bits(f.get("bits")), None if enum is None else tuple(enum),
            f.get("float") == "e4m12", 8 * TYPES[f["type"]][1] if f.get("wrap") else 0,
            default, bool(f.get("required", False))) + ((vmin, vmax) if strict else ())


def _shape(fields, fmt):
    n = 0
    size = 0
    for f in fields:
        codes, width = TYPES[f["type"]][:2]
        fmt += codes
        n += len(codes)
        size += width
    return fmt, n, size


def compact(layout):
    """The compact tuple of one declarative layout (validated by schema.normalize)."""
    normalize(layout)  # raises SchemaError on typos and inconsistencies
    strict = layout["dir"] == "down"
    fields = tuple(_field(f, strict) for f in layout["fields"])
    fmt, n, size = _shape(layout["fields"], "<B")
    rep = layout.get("repeat")
    if rep is None:
        repeat = None
        rshape = (None, 0, 0)
    else:
        repeat = (rep["name"], rep["max"], tuple(_field(f, strict) for f in rep["fields"]))
        rshape = _shape(rep["fields"], "<")
    return (layout["port"], layout["kind"], layout["dir"], layout["name"], fields, repeat,
            (fmt, n + 1, size + 1) + rshape)


def shape(layout):
    """(struct format, value count, size) of the fixed part of a compact or declarative
    layout, and the same for one repeated entry (None, 0, 0 when the layout has no repeat)."""
    return _compact(layout)[6]


def encode(layout, fields):
    """codec.encode for a compact or a declarative layout (compiled on the fly)."""
    return codec.encode(_compact(layout), fields)


def decode(layout, data):
    """unpack.decode for a compact or a declarative layout (compiled on the fly)."""
    return unpack.decode(_compact(layout), data)


def _compact(layout):
    return compact(layout) if isinstance(layout, dict) else layout


def _check():
    from protocol.payload import codec

    if codec.VERSION != VERSION:
        raise SchemaError("codec.VERSION %d is not layouts.VERSION %d" % (codec.VERSION, VERSION))
    seen = {}
    names = {}
    for lay in LAYOUTS:
        key = (lay["dir"], lay["kind"], lay["name"])
        if key in names:
            raise SchemaError("%s: name used twice" % label(lay))
        names[key] = lay
        if lay["port"] in seen:
            raise SchemaError("fPort %d used twice" % lay["port"])
        seen[lay["port"]] = lay
        if lay["dir"] not in ("up", "down") or lay["kind"] not in ("pole", "meter", "any"):
            raise SchemaError("%s: unknown kind %s or dir %s" % (label(lay), lay["kind"], lay["dir"]))
        if lay["dir"] == "up" and lay["kind"] == "any":
            raise SchemaError("%s: an uplink belongs to one kind" % label(lay))


_HEAD = '"""%s.\n\nGenerated by protocol.payload.tablegen from layouts.py: do not edit.\n"""'


def _src(v):
    """repr(v), with None spelled _N (and tuples holding one not folded by mpy-cross)."""
    if v is None:
        return "_N"
    if isinstance(v, tuple) and None in v:
        return "(" + ", ".join(_src(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def _fields_src(fields, indent):
    if not fields:
        return "()"
    pad = " " * indent
    return "(\n" + "".join(pad + "    " + _src(f) + ",\n" for f in fields) + pad + ")"


KINDS = ("pole", "meter", "any")  # one module each ("any": the commands every device takes)


def modules():
    """Names of the generated modules: "index" (the package) and one per kind (KINDS)."""
    return ["index"] + list(KINDS)


def render(module):
    """Source of one generated module (see modules())."""
    _check()
    lays = sorted(LAYOUTS, key=lambda x: x["port"])
    if module == "index":
        lines = [_HEAD % "Payload v1 device tables: the fPort index (an fPort's layout is in the "
                 "module of its kind)",
                 "", "VERSION = %d" % VERSION,
                 "UPLINK_PORTS = %r" % [lay["port"] for lay in lays if lay["dir"] == "up"],
                 "DOWNLINK_PORTS = %r" % [lay["port"] for lay in lays if lay["dir"] == "down"]]
        for d in ("up", "down"):
            what = "message" if d == "up" else "command"
            lines.append("%s = {  # kind -> {%s: fPort}" % (d.upper(), what))
            kinds = []
            for lay in lays:
                if lay["dir"] == d and lay["kind"] not in kinds:
                    kinds.append(lay["kind"])
            for k in kinds:
                names = ", ".join("%r: %d" % (lay["name"], lay["port"]) for lay in lays
                                  if lay["dir"] == d and lay["kind"] == k)
                lines.append("    %r: {%s}," % (k, names))
            lines.append("}")
        return "\n".join(lines) + "\n"
    if module not in KINDS:
        raise ValueError("no module %s" % module)
    what = "the commands every device takes" if module == "any" else "the %s messages" % module
    lines = [_HEAD % ("Payload v1 device tables of %s, as compact tuples" % what), "",
             "_N = None  # not folded into a constant by mpy-cross (see tablegen)", "",
             "LAYOUTS = ("]
    for lay in lays:
        if lay["kind"] != module:
            continue
        c = compact(lay)
        rep = "_N"
        if c[5] is not None:
            rep = "(%r, %r, %s)" % (c[5][0], c[5][1], _fields_src(c[5][2], 8))
        lines += ["    (  # %s" % label(lay),
                  "        %r, %r, %r, %r," % c[:4],
                  "        %s," % _fields_src(c[4], 8),
                  "        %s," % rep,
                  "        %s," % _src(c[6]),
                  "    ),"]
    lines.append(")")
    return "\n".join(lines) + "\n"


def paths():
    """{module: path} of the generated modules, relative to this file."""
    import os

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")
    out = {}
    for m in modules():
        out[m] = os.path.join(here, "__init__.py" if m == "index" else m + ".py")
    return out


def main():
    for module, path in paths().items():
        with open(path, "w") as f:
            f.write(render(module))
        print("wrote", path)


if __name__ == "__main__":
    main()

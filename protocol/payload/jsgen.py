"""`python -m protocol.payload.jsgen`: write the TS013 JavaScript codecs from the layout table
(and the device tables, protocol/payload/tables/, with protocol.payload.tablegen).

Each codec (protocol/codecs/streetgrid-<kind>.js) is the generic ES5 interpreter in
ts013_template.js plus, as a JSON literal, the normalized layouts of that device kind and of the
commands common to both kinds. A test asserts the checked-in files equal render(kind), so the
JavaScript cannot drift from the Python table. Only main() touches files; importing this module
is harmless (it also imports on MicroPython, like everything in protocol/).
"""

import json

from protocol.payload.schema import schema

KINDS = ("pole", "meter")
_DROP = ("doc",)


def _layout_json(lay):
    lay = dict(lay)
    lay["fields"] = [_strip(f) for f in lay["fields"]]
    if lay["repeat"] is not None:
        rep = dict(lay["repeat"])
        rep["fields"] = [_strip(f) for f in rep["fields"]]
        lay["repeat"] = rep
    return json.dumps(lay, separators=(",", ":"))


def _strip(f):
    out = {}
    for k in f:
        if k not in _DROP:
            out[k] = f[k]
    return out


def render(kind, template):
    """The codec source for `kind`, given the template text."""
    lays = [lay for lay in schema() if lay["kind"] in (kind, "any")]
    table = "[\n  " + ",\n  ".join(_layout_json(lay) for lay in lays) + "\n]"
    return template.replace("@LAYOUTS@", table).replace("@KIND@", kind)


def paths():
    """(template path, {kind: codec path}) relative to this file."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    codecs = os.path.join(os.path.dirname(here), "codecs")
    out = {}
    for kind in KINDS:
        out[kind] = os.path.join(codecs, "streetgrid-%s.js" % kind)
    return os.path.join(here, "ts013_template.js"), out


def main():
    template_path, outputs = paths()
    with open(template_path) as f:
        template = f.read()
    for kind in KINDS:
        with open(outputs[kind], "w") as f:
            f.write(render(kind, template))
        print("wrote", outputs[kind])
    from protocol.payload import tablegen

    tablegen.main()


if __name__ == "__main__":
    main()

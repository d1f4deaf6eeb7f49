"""Decoded payloads as SenML records, driven by the table alone (no per-device code).

Each field becomes one record named after the field, with the field's SenML unit; a bitmap adds
one boolean record per named bit ("status/lamp_on"), an enum a string record, the schedule's
entries "entries/<i>/<field>". Fields that decoded to None (not available) are left out.
Records also carry "lwm2m" (the uCIFI/IPSO path) when the table has one: not a SenML label, a
hint for whoever maps records onward; drop it before encoding the pack.

Wh, /100 and min are SenML secondary units (RFC 8798 registry), allowed only in a pack whose
base version is SENML_BVER (RFC 9100, feature "secondary units").
"""

SENML_BVER = 26

# RFC 8428 section 6: the integer labels a CBOR SenML pack uses for its text labels
LABELS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
          "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}

_cache = {}  # fPort -> record templates


def templates(fields, prefix=""):
    """(name, unit, lwm2m, value key) per record a decoded field can produce."""
    out = []
    for f in fields:
        name = prefix + f["name"]
        bits = f.get("bits")
        if bits is not None:
            out.append((name, None, None, "v"))
            for b in bits:
                out.append((name + "/" + b[1], None, b[2], "vb"))
        else:
            vk = "vs" if f.get("enum") is not None else "v"
            out.append((name, f.get("unit"), f.get("lwm2m"), vk))
    return out


def _emit(tpl, values, recs, skip):
    for key, unit, lwm2m, vk in tpl:
        v = values.get(key[skip:])
        if v is None:
            continue
        r = {"n": key, vk: v}
        if unit is not None:
            r["u"] = unit
        if lwm2m is not None:
            r["lwm2m"] = lwm2m
        recs.append(r)


def records(layout, decoded, cache):
    """SenML records for one decoded frame of `layout` (a declarative layout from layouts.py);
    `cache` keeps the per-fPort record templates."""
    port = layout["port"]
    tpl = cache.get(port)
    if tpl is None:
        tpl = cache[port] = templates(layout["fields"])
    fields = decoded["fields"]
    recs = []
    _emit(tpl, fields, recs, 0)
    rep = layout.get("repeat")
    if rep is not None:
        for k, entry in enumerate(fields.get(rep["name"]) or ()):
            prefix = "%s/%d/" % (rep["name"], k)
            _emit(templates(rep["fields"], prefix), entry, recs, len(prefix))
    return recs


def records_of(decoded):
    """protocol.payload.senml_records: the records of a decoded uplink or downlink."""
    from protocol.payload.codec import PayloadError
    from protocol.payload.schema import source
    from protocol.payload.tables import DOWN, UP

    up = "message" in decoded
    ports = (UP if up else DOWN).get(decoded["kind"])
    port = None if ports is None else ports.get(decoded["message" if up else "command"])
    if port is None:
        raise PayloadError("not a decoded payload")
    return records(source(port), decoded, _cache)

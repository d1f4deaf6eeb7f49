"""Properties of the payload codec, for every fPort: encode/decode round trips within the wire
resolution, idempotent re-encoding, decode and encode fuzzing (only PayloadError escapes), and
the generated fast decoders agreeing with the generic interpreter."""

import math

from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import payload
from protocol.payload import tablegen

UP = payload.UPLINK_PORTS
DOWN = payload.DOWNLINK_PORTS
ALL = UP + DOWN


def strict_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def value_strategy(f, allow_none=True):
    """Engineering values the encoder must accept for normalized field f."""
    if f["bits"] is not None:
        return st.integers(0, (1 << (8 * f["size"])) - 1)
    if f["enum"] is not None:
        return st.sampled_from(f["enum"])
    if f["wrap"]:
        s = st.integers(0, 3 << (8 * f["size"]))
    elif f["div"] == 1 and isinstance(f["min"], int) and isinstance(f["max"], int):
        s = st.integers(f["min"], f["max"])
    else:
        s = st.floats(f["min"], f["max"], allow_nan=False)
    if f["na"] is not None and allow_none:
        s = st.one_of(s, st.none())
    return s


def fields_strategy(fields, strict):
    """A dict of values for a list of fields; downlinks sometimes leave optional fields out."""
    parts = {}
    optional = {}
    for f in fields:
        s = value_strategy(f)
        if strict and not f["required"] and ("default" in f or f["na"] is not None):
            optional[f["name"]] = s
        else:
            parts[f["name"]] = s
    return st.fixed_dictionaries(parts, optional=optional)


@st.composite
def frame_input(draw, port):
    lay = payload.describe(port)
    strict = lay["dir"] == "down"
    fields = draw(fields_strategy(lay["fields"], strict))
    if lay["repeat"] is not None:
        rep = lay["repeat"]
        fields[rep["name"]] = draw(st.lists(fields_strategy(rep["fields"], strict), max_size=rep["max"]))
    return lay, fields


def encode(lay, fields):
    if lay["dir"] == "up":
        return payload.encode_uplink(lay["kind"], lay["name"], fields)
    kind = "pole" if lay["kind"] == "any" else lay["kind"]
    return payload.encode_downlink(kind, lay["name"], fields)


def decode(lay, data):
    if lay["dir"] == "up":
        return payload.decode_uplink(lay["port"], data)
    return payload.decode_downlink(lay["port"], data)


def check_close(f, x, got):
    """The decoded value `got` of field f is the input x within the wire resolution."""
    if x is None:
        assert got is None
    elif f["bits"] is not None or f["enum"] is not None:
        assert got == x
    elif f["wrap"]:
        assert got == x % (1 << (8 * f["size"]))
    elif f["float"] == "e4m12":
        # 12-bit mantissa: the error is at most half a step of 2^e * 0.1 lx, 2^-12 relative
        assert abs(got - x) <= max(0.05, x * 2 ** -12) + 1e-9, (x, got)
    else:
        step = f["mul"] / f["div"]
        assert abs(got - x) <= step / 2 + 1e-9 * max(1, abs(x)), (f["name"], x, got)
        assert f["min"] - 1e-9 <= got <= f["max"] + 1e-9


def check_fields(fields, values, decoded, strict):
    for f in fields:
        name = f["name"]
        if name not in values:
            if "default" in f:
                check_close(f, f["default"], decoded[name])
            else:
                assert decoded[name] is None  # left out of a command: "unchanged"
            continue
        check_close(f, values[name], decoded[name])
        if f["bits"] is not None:
            for b in f["bits"]:
                assert decoded[name + "/" + b[1]] is bool(values[name] >> b[0] & 1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL).flatmap(frame_input))
def test_round_trip_within_resolution(case):
    lay, fields = case
    port, data = encode(lay, fields)
    assert port == lay["port"]
    decoded = decode(lay, data)
    assert decoded["kind"] == lay["kind"] and decoded["version"] == 1
    assert decoded["message" if lay["dir"] == "up" else "command"] == lay["name"]
    strict = lay["dir"] == "down"
    check_fields(lay["fields"], fields, decoded["fields"], strict)
    if lay["repeat"] is not None:
        rep = lay["repeat"]
        entries = fields.get(rep["name"], [])
        assert len(decoded["fields"][rep["name"]]) == len(entries)
        for values, got in zip(entries, decoded["fields"][rep["name"]]):
            check_fields(rep["fields"], values, got, strict)
    # what was decoded encodes to the same bytes: no drift when a value is passed along
    assert encode(lay, decoded["fields"]) == (port, data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=64), st.booleans())
def test_decode_fuzz_raises_only_payload_error(port, data, up):
    try:
        out = payload.decode_uplink(port, data) if up else payload.decode_downlink(port, data)
    except payload.PayloadError:
        return
    assert set(out) == {"kind", "message" if up else "command", "version", "fields"}


@st.composite
def framed(draw):
    """Bytes of the right length for a port (version 1 mostly), to reach the field decoders."""
    port = draw(st.sampled_from(ALL))
    lay = payload.describe(port)
    n = lay["size"]
    if lay["repeat"] is not None:
        n += lay["repeat"]["size"] * draw(st.integers(0, lay["repeat"]["max"] + 1))
    data = bytearray(draw(st.binary(min_size=n, max_size=n)))
    if draw(st.integers(0, 9)):
        data[0] = 1
    return lay, bytes(data)


@settings(max_examples=400, deadline=None)
@given(framed())
def test_fast_decoders_agree_with_the_generic_interpreter(case):
    lay, data = case
    table = payload._TABLE[lay["port"]]

    def run(fn):
        try:
            return fn(data)
        except payload.PayloadError as e:
            return "error: %s" % e

    fast = run(lambda d: decode(lay, d))
    generic = run(lambda d: tablegen.decode(table, d))
    assert strict_equal(fast, generic), (fast, generic)


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def junk_fields(draw):
    port = draw(st.sampled_from(ALL))
    lay = payload.describe(port)
    names = [f["name"] for f in lay["fields"]]
    if lay["repeat"] is not None:
        names.append(lay["repeat"]["name"])
    for f in lay["fields"]:
        names += [f["name"] + "/" + b[1] for b in f["bits"] or ()]
    keys = st.one_of(st.sampled_from(names), st.text(max_size=6))
    fields = draw(st.dictionaries(keys, ANY_VALUE, max_size=8))
    if lay["repeat"] is not None and draw(st.booleans()):
        rep = lay["repeat"]
        rnames = [f["name"] for f in rep["fields"]]
        fields[rep["name"]] = draw(st.lists(st.dictionaries(st.sampled_from(rnames), ANY_VALUE), max_size=14))
    return lay, fields


@settings(max_examples=400, deadline=None)
@given(junk_fields())
def test_encode_fuzz_raises_only_payload_error(case):
    lay, fields = case
    try:
        port, data = encode(lay, fields)
    except payload.PayloadError:
        return
    assert port == lay["port"]
    decode(lay, data)  # whatever encodes, decodes


@given(st.floats(0, 13415219.2))
@example(0.25)  # a tie between two codes
def test_light_code_is_the_nearest_representable_value(lux):
    # e4m12: among all codes, the encoder picks one whose value is nearest to the input
    data = payload.encode_uplink("pole", "report", {"ambient_light": lux})[1]
    got = payload.decode_uplink(10, data)["fields"]["ambient_light"]
    x = lux * 10  # the input in wire units
    e = max(0, round(x).bit_length() - 12)
    step = 1 << e  # spacing of representable values around x
    # "nearest": a tie (x exactly halfway between two codes, e.g. 0.25 lx) may go either way
    assert abs(got * 10 - x) <= step / 2 + 1e-6
    if x < 4095.5:
        assert abs(got * 10 - x) <= 0.5 + 1e-6  # below 409.6 lx the code is exact at 0.1 lx


def test_counters_wrap_instead_of_clamping():
    for n in (0, 1, (1 << 24) - 1, 1 << 24, (1 << 24) + 12345, 10 ** 12):
        data = payload.encode_uplink("pole", "report", {"lamp_energy": n})[1]
        assert payload.decode_uplink(10, data)["fields"]["lamp_energy"] == n % (1 << 24)
    data = payload.encode_uplink("meter", "report", {"import_energy": 2 ** 40 + 7, "export_energy": 2 ** 32})[1]
    f = payload.decode_uplink(20, data)["fields"]
    assert (f["import_energy"], f["export_energy"]) == (7, 0)
    # a gateway recovers the energy between two reports across a wrap with modular arithmetic
    before, after = (1 << 24) - 10, 25
    assert (after - before) % (1 << 24) == 35
    assert math.isclose(payload.describe(10)["fields"][3]["max"], (1 << 24) - 1)

"""protocol.cbor against RFC 8949 Appendix A, cbor2, exhaustive half floats, hostile input, and the
real MicroPython VM.

Oracles: the RFC's own table; cbor2 (C implementation) for encodings and decodings; CPython's
struct 'e' / 'f' for half and single floats. cbor2's canonical mode sorts map keys length-first
(RFC 7049 canonical), which differs from RFC 8949's bytewise order only when one map mixes key
major types, e.g. {24: .., -1: ..}; so the general oracle re-sorts cbor2's key encodings
bytewise, and direct equality with canonical=True is checked where the two orders coincide.
"""

import binascii
import collections
import random
import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.mpvm
from protocol import cbor
from protocol.cbor import UNDEFINED, CBORError, Simple, Tag, dumps, encode_into, loads, loads_prefix

H = binascii.unhexlify
NAN = float("nan")
INF = float("inf")
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- strict comparison and cbor2 conversion -------------------------------------------------


def same(a, b):
    """Equality that tells 1 from 1.0 from True, 0.0 from -0.0, and lets NaN equal NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (a != a and b != b) or struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        typed = {(type(k), k): v for k, v in b.items()}
        return all((type(k), k) in typed and same(v, typed[(type(k), k)]) for k, v in a.items())
    if type(a) is Tag:
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


def to_cbor2(v):
    if isinstance(v, Tag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value))
    if isinstance(v, Simple):
        return cbor2.undefined if v.value == 23 else cbor2.CBORSimpleValue(v.value)
    if isinstance(v, list):
        return [to_cbor2(x) for x in v]
    if isinstance(v, dict):
        return {k: to_cbor2(x) for k, x in v.items()}
    return v


def from_cbor2(v):
    if isinstance(v, cbor2.CBORTag):
        return Tag(v.tag, from_cbor2(v.value))
    if v is cbor2.undefined:
        return UNDEFINED
    if isinstance(v, cbor2.CBORSimpleValue):
        return Simple(v.value)
    if isinstance(v, (list, tuple)):  # cbor2 makes arrays under a tag immutable (tuples)
        return [from_cbor2(x) for x in v]
    if isinstance(v, (dict, cbor2.frozendict)):
        return {k: from_cbor2(x) for k, x in v.items()}
    return v


def _bytewise_map(encoder, d):
    """RFC 8949 section 4.2.1 order, built from cbor2's own key encodings."""
    items = sorted(((encoder.encode_to_bytes(k), v) for k, v in d.items()), key=lambda kv: kv[0])
    encoder.encode_length(5, len(items))
    for kb, v in items:
        encoder.write(kb)
        encoder.encode(v)


def cbor2_deterministic(v):
    return cbor2.dumps(to_cbor2(v), canonical=True, encoders={dict: _bytewise_map})


def has_tag(v):
    if isinstance(v, (Tag, cbor2.CBORTag)):
        return True
    if isinstance(v, list):
        return any(has_tag(x) for x in v)
    if isinstance(v, dict):
        return any(has_tag(x) for x in v.values())
    return False


# --- strategies ------------------------------------------------------------------------------

ints = st.integers(-(2**64), 2**64 - 1)


def _half_from_bits(h):
    return struct.unpack(">e", struct.pack(">H", h))[0]


half_floats = st.integers(0, 0xFFFF).map(_half_from_bits).filter(lambda x: x == x)
# NaN is left out (NaN != NaN for cbor2 and for ==); every NaN is tested to encode as f97e00 below.
floats = st.one_of(st.floats(allow_nan=False), st.floats(width=32, allow_nan=False), half_floats)
# Tag numbers that cbor2 does not turn into Python objects (0-5, 25, 28-30, 35-37, 100, ... do).
tag_numbers = st.one_of(
    st.integers(6, 24), st.sampled_from([32, 1000, 4242, 55800, 2**32, 2**64 - 1])
)
simples = st.one_of(st.integers(0, 19), st.just(23), st.integers(32, 255)).map(Simple)
scalars = st.one_of(
    st.none(), st.booleans(), ints, floats, st.binary(max_size=40), st.text(max_size=20), simples
)
keys = st.one_of(ints, floats, st.text(max_size=6), st.binary(max_size=6), st.booleans(), st.none())


def containers(children, key_strategy=keys):
    return st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(key_strategy, children, max_size=6),
        st.builds(Tag, tag_numbers, children),
    )


values = st.recursive(scalars, containers, max_leaves=25)
# Maps whose keys share one major type: there length-first and bytewise order coincide, so
# cbor2's canonical=True output must equal ours byte for byte (SenML's labels are the -24..23 case).
same_type_keys = st.sampled_from([
    st.integers(-24, 23),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**64), -1),
    st.text(),
    st.binary(),
])


def homogeneous_containers(children):
    maps = same_type_keys.flatmap(lambda ks: st.dictionaries(ks, children, max_size=6))
    return st.one_of(st.lists(children, max_size=6), maps)


homogeneous_values = st.recursive(scalars, homogeneous_containers, max_leaves=25)


# --- RFC 8949 Appendix A ---------------------------------------------------------------------

# (hex, value, deterministic): deterministic is False where the example is not in the form our
# encoder writes (indefinite lengths, non-shortest floats, bignums).
APPENDIX_A = [
    ("00", 0, True),
    ("01", 1, True),
    ("0a", 10, True),
    ("17", 23, True),
    ("1818", 24, True),
    ("1819", 25, True),
    ("1864", 100, True),
    ("1903e8", 1000, True),
    ("1a000f4240", 1000000, True),
    ("1b000000e8d4a51000", 1000000000000, True),
    ("1bffffffffffffffff", 18446744073709551615, True),
    ("c249010000000000000000", Tag(2, H("010000000000000000")), True),
    ("3bffffffffffffffff", -18446744073709551616, True),
    ("c349010000000000000000", Tag(3, H("010000000000000000")), True),
    ("20", -1, True),
    ("29", -10, True),
    ("3863", -100, True),
    ("3903e7", -1000, True),
    ("f90000", 0.0, True),
    ("f98000", -0.0, True),
    ("f93c00", 1.0, True),
    ("fb3ff199999999999a", 1.1, True),
    ("f93e00", 1.5, True),
    ("f97bff", 65504.0, True),
    ("fa47c35000", 100000.0, True),
    ("fa7f7fffff", 3.4028234663852886e38, True),
    ("fb7e37e43c8800759c", 1.0e300, True),
    ("f90001", 5.960464477539063e-8, True),
    ("f90400", 0.00006103515625, True),
    ("f9c400", -4.0, True),
    ("fbc010666666666666", -4.1, True),
    ("f97c00", INF, True),
    ("f97e00", NAN, True),
    ("f9fc00", -INF, True),
    ("fa7f800000", INF, False),
    ("fa7fc00000", NAN, False),
    ("faff800000", -INF, False),
    ("fb7ff0000000000000", INF, False),
    ("fb7ff8000000000000", NAN, False),
    ("fbfff0000000000000", -INF, False),
    ("f4", False, True),
    ("f5", True, True),
    ("f6", None, True),
    ("f7", UNDEFINED, True),
    ("f0", Simple(16), True),
    ("f8ff", Simple(255), True),
    ("c074323031332d30332d32315432303a30343a30305a", Tag(0, "2013-03-21T20:04:00Z"), True),
    ("c11a514b67b0", Tag(1, 1363896240), True),
    ("c1fb41d452d9ec200000", Tag(1, 1363896240.5), True),
    ("d74401020304", Tag(23, H("01020304")), True),
    ("d818456449455446", Tag(24, H("6449455446")), True),
    ("d82076687474703a2f2f7777772e6578616d706c652e636f6d", Tag(32, "http://www.example.com"), True),
    ("40", b"", True),
    ("4401020304", H("01020304"), True),
    ("60", "", True),
    ("6161", "a", True),
    ("6449455446", "IETF", True),
    ("62225c", '"\\', True),
    ("62c3bc", "\u00fc", True),
    ("63e6b0b4", "\u6c34", True),
    ("64f0908591", "\U00010151", True),
    ("80", [], True),
    ("83010203", [1, 2, 3], True),
    ("8301820203820405", [1, [2, 3], [4, 5]], True),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26)), True),
    ("a0", {}, True),
    ("a201020304", {1: 2, 3: 4}, True),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}, True),
    ("826161a161626163", ["a", {"b": "c"}], True),
    ("a56161614161626142616361436164614461656145", dict(a="A", b="B", c="C", d="D", e="E"), True),
    ("5f42010243030405ff", H("0102030405"), False),
    ("7f657374726561646d696e67ff", "streaming", False),
    ("9fff", [], False),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]], False),
    ("9f01820203820405ff", [1, [2, 3], [4, 5]], False),
    ("83018202039f0405ff", [1, [2, 3], [4, 5]], False),
    ("83019f0203ff820405", [1, [2, 3], [4, 5]], False),
    ("9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", list(range(1, 26)), False),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}, False),
    ("826161bf61626163ff", ["a", {"b": "c"}], False),
    ("bf6346756ef563416d7421ff", {"Fun": True, "Amt": -2}, False),
]


@pytest.mark.parametrize("hexdata,value,deterministic", APPENDIX_A)
def test_appendix_a_decode(hexdata, value, deterministic):
    assert same(loads(H(hexdata)), value)
    obj, end = loads_prefix(H(hexdata) + b"\x00\x01")
    assert same(obj, value) and end == len(hexdata) // 2


@pytest.mark.parametrize("hexdata,value,deterministic", [a for a in APPENDIX_A if a[2]])
def test_appendix_a_encode(hexdata, value, deterministic):
    assert dumps(value) == H(hexdata)


UNTAGGED = [a for a in APPENDIX_A if not has_tag(a[1])]


@pytest.mark.parametrize("hexdata,value,deterministic", UNTAGGED)
def test_appendix_a_table_agrees_with_cbor2(hexdata, value, deterministic):
    """Guards the transcription of the table above."""
    assert same(from_cbor2(cbor2.loads(H(hexdata))), value)


def test_bignums_are_refused_by_the_encoder():
    for n in (2**64, -(2**64) - 1, 2**200):
        with pytest.raises(CBORError, match="64 bits"):
            dumps(n)
    assert dumps(-(2**64)) == H("3bffffffffffffffff")


# --- agreement with cbor2 --------------------------------------------------------------------


@SLOW
@given(values)
def test_encoding_matches_cbor2_with_bytewise_key_order(v):
    assert dumps(v) == cbor2_deterministic(v)


@SLOW
@given(homogeneous_values)
def test_encoding_matches_cbor2_canonical_where_key_orders_coincide(v):
    assert dumps(v) == cbor2.dumps(to_cbor2(v), canonical=True)


def test_key_order_is_bytewise_not_length_first():
    """RFC 8949 4.2.1 sorts encoded keys bytewise: 24 (1818) before -1 (20); cbor2 does not."""
    d = {-1: "a", 24: "b", "x": 1, b"y": 2, 1.5: 3, False: 4, None: 5, 100000: 6}
    expected = "a8" "18186162" "1a000186a006" "206161" "417902" "617801" "f404" "f605" "f93e0003"
    assert dumps(d) == H(expected)
    assert cbor2.dumps({24: 0, -1: 0}, canonical=True) == H("a2" "2000" "181800")
    assert dumps({24: 0, -1: 0}) == H("a2" "181800" "2000")


@SLOW
@given(values)
def test_roundtrips_with_cbor2(v):
    ours = dumps(v)
    assert same(loads(ours), v)
    assert same(from_cbor2(cbor2.loads(ours)), v)
    assert same(loads(cbor2.dumps(to_cbor2(v))), v)  # cbor2's default (non-canonical) output
    assert same(loads(cbor2.dumps(to_cbor2(v), canonical=True)), v)


@SLOW
@given(values)
def test_indefinite_length_input(v):
    assert same(loads(cbor2.dumps(to_cbor2(v), indefinite_containers=True)), v)


def test_sequences_bytes_like_and_subclasses():
    assert dumps((1, (2, 3))) == dumps([1, [2, 3]]) == H("8201820203")
    assert dumps(bytearray(b"ab")) == dumps(memoryview(b"ab")) == dumps(b"ab") == H("426162")
    assert dumps(collections.OrderedDict([(2, 0), (1, 0)])) == H("a201000200")

    class Level(int):
        pass

    class Name(str):
        pass

    assert dumps([Level(300), Name("x")]) == H("8219012c6178")


def test_encode_into_appends():
    buf = bytearray(b"\xaa")
    assert encode_into(buf, [1, "a"]) is buf
    assert bytes(buf) == b"\xaa" + H("82016161")


def test_encoder_errors():
    for bad in (object(), {1, 2}, 1j, {(1, 2): 0}, {NAN: 1}, "\ud800"):
        with pytest.raises(CBORError):
            dumps(bad)

    class Key(str):  # distinct dict keys that encode alike
        __hash__ = object.__hash__

        def __eq__(self, other):
            return self is other

    with pytest.raises(CBORError, match="duplicate"):
        dumps({Key("a"): 1, Key("a"): 2})
    for bad in (-1, 2**64, True, "1"):
        with pytest.raises(CBORError):
            Tag(bad, 0)
    for bad in (20, 21, 22, 24, 31, 256, -1):
        with pytest.raises(CBORError):
            Simple(bad)


# --- floats ----------------------------------------------------------------------------------


def test_every_half_float_encodes_in_three_bytes_and_decodes_exactly():
    """Exhaustive against CPython's struct 'e' (MicroPython has no 'e': ours is hand-written)."""
    for h in range(0x10000):
        raw = struct.pack(">H", h)
        x = struct.unpack(">e", raw)[0]
        got = loads(b"\xf9" + raw)
        if x != x:
            assert got != got and dumps(x) == H("f97e00")
        else:
            assert struct.pack(">d", got) == struct.pack(">d", x), hex(h)
            assert dumps(x) == b"\xf9" + raw, hex(h)


@given(st.floats(width=32, allow_nan=False))
def test_single_precision_values_never_need_a_double(x):
    """What an ESP32 (float32 MicroPython) produces: at most 5 bytes, same as cbor2."""
    e = dumps(x)
    assert len(e) <= 5
    assert e == cbor2.dumps(x, canonical=True)


@given(st.floats(allow_nan=False))
def test_float_width_is_the_shortest_exact_one(x):
    e = dumps(x)
    widths = {3: ">e", 5: ">f", 9: ">d"}
    assert struct.unpack(widths[len(e)], e[1:])[0] == x
    for n, fmt in widths.items():
        if n < len(e):
            try:
                assert struct.unpack(fmt, struct.pack(fmt, x))[0] != x
            except (OverflowError, struct.error):
                pass


@pytest.mark.parametrize(
    "x",
    [65504.0, 65505.0, 65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-25, 2.0**-14, 2.0**-14 - 2.0**-24,
     2.0**-126, 2.0**-149, 2.0**-150, 3.4028234663852886e38, 3.4028235677973366e38, 2049.0, 2048.0,
     4097.0, 1 / 3, -(2.0**15), 2.0**16, 2.0**128],
)
def test_float_boundaries_match_cbor2(x):
    for v in (x, -x):
        assert dumps(v) == cbor2.dumps(v, canonical=True)
        assert same(loads(dumps(v)), v)


def test_every_nan_is_the_canonical_half_nan():
    nans = [NAN, -NAN, struct.unpack(">f", H("7fc00001"))[0]]
    nans += [struct.unpack(">d", H(h))[0] for h in ("7ff0000000000001", "fff8000000000123")]
    for n in nans:
        assert dumps(n) == H("f97e00")
    for raw in ("f97e00", "f97c01", "f9fe00", "fa7fc00001", "fbfff8000000000000"):
        x = loads(H(raw))
        assert x != x


# --- hostile and malformed input ----------------------------------------------------------------

MALFORMED = [
    ("", "truncated"),
    ("18", "truncated"),
    ("1900", "truncated"),
    ("1b00000000000000", "truncated"),
    ("1c", "reserved"),
    ("3d", "reserved"),
    ("5e", "reserved"),
    ("7c", "reserved"),
    ("9d", "reserved"),
    ("be", "reserved"),
    ("dc00", "reserved"),
    ("fc", "reserved"),
    ("1f", "indefinite"),
    ("3f", "indefinite"),
    ("df00", "indefinite"),
    ("ff", "break"),
    ("81ff", "break"),
    ("a1ff", "truncated"),
    ("a1ff00", "break"),
    ("a101ff", "break"),
    ("9f", "truncated"),
    ("9f01", "truncated"),
    ("bf0101", "truncated"),
    ("5f", "truncated"),
    ("5f4101", "truncated"),
    ("5f6161ff", "chunk"),
    ("7f4161ff", "chunk"),
    ("5f5f4101ffff", "chunk"),
    ("7f01ff", "chunk"),
    ("4201", "truncated"),
    ("62c3", "truncated"),
    ("5b8000000000000000", "limit"),
    ("7bffffffffffffffff", "limit"),
    ("9bffffffffffffffff", "truncated"),
    ("bbffffffffffffffff", "truncated"),
    ("9a7fffffff00", "truncated"),
    ("82", "truncated"),
    ("a10102a1", "trailing"),
    ("0000", "trailing"),
    ("61ff", "UTF-8"),
    ("62c328", "UTF-8"),
    ("63eda080", "UTF-8"),  # a surrogate
    ("62c080", "UTF-8"),  # overlong NUL
    ("63e08080", "UTF-8"),  # overlong
    ("64f4908080", "UTF-8"),  # past U+10FFFF
    ("64f8888080", "UTF-8"),
    ("7f62c3bcff", None),  # valid, as a control
    ("7f61c361bcff", "UTF-8"),  # a character split across chunks is invalid
    ("f800", "simple"),
    ("f818", "simple"),
    ("f81f", "simple"),
    ("a20101 0102".replace(" ", ""), "duplicate"),
    ("a2f5 00 01 00".replace(" ", ""), "duplicate"),  # True and 1 are one Python key
    ("a2f93c00 00 01 00".replace(" ", ""), "duplicate"),  # 1.0 and 1 as well
    ("a18000", "key"),
    ("a1a000 00".replace(" ", ""), "key"),
    ("a1c10000", "key"),
    ("a1f700", "key"),
    ("a1f97e0000", "key"),
]


@pytest.mark.parametrize("hexdata,fragment", MALFORMED)
def test_malformed(hexdata, fragment):
    if fragment is None:
        loads(H(hexdata))
        return
    with pytest.raises(CBORError, match=fragment) as info:
        loads(H(hexdata))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("hexdata,fragment", [m for m in MALFORMED if m[1] == "UTF-8"])
def test_utf8_verdicts_agree_with_cbor2(hexdata, fragment):
    with pytest.raises(cbor2.CBORDecodeError):
        cbor2.loads(H(hexdata))


def test_lax_utf8_validator_matches_cpython():
    """The MicroPython-only validator, exercised on CPython against CPython's strict codec."""
    rng = random.Random(7)
    edges = [0x41, 0x80, 0xBF, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0x90, 0x8F, 0xA0, 0xC0]
    edges += [0xF5, 0xFF]
    samples = [bytes(rng.choice(edges) for _ in range(rng.randrange(1, 6))) for _ in range(20000)]
    samples += [chr(c).encode("utf-8", "surrogatepass") for c in range(0, 0x110000, 97)]
    for s in samples:
        try:
            s.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
        assert cbor._valid_utf8(s) == ok, s


def test_huge_declared_lengths_do_not_allocate():
    """Headers claiming up to 2**64-1 bytes / items with a few bytes behind them."""
    for head in ("5b", "7b", "9b", "bb"):
        for n in ("ffffffffffffffff", "7fffffffffffffff", "0000000100000000"):
            with pytest.raises(CBORError):
                loads(H(head + n + "00"), max_length=2**64, max_items=2**64)


def test_nesting_bombs():
    for opener in (b"\x81", b"\x9f", b"\xa1\x00", b"\xc1", b"\xbf\x00"):
        with pytest.raises(CBORError, match="nesting"):
            loads(opener * 100000 + b"\x00")


def test_depth_limit_boundary():
    for depth in (0, 1, 5, 16):
        ok = b"\x81" * depth + b"\x00"
        assert loads(ok, max_depth=depth) is not None
        with pytest.raises(CBORError, match="nesting"):
            loads(b"\x81" + ok, max_depth=depth)
    nested = 0
    for _ in range(16):
        nested = Tag(1, nested)
    assert loads(b"\xc1" * 16 + b"\x00") == nested


def test_item_and_length_limits():
    data = dumps(list(range(10)))
    assert loads(data, max_items=11) == list(range(10))
    with pytest.raises(CBORError, match="items"):
        loads(data, max_items=10)
    indefinite = b"\x9f" + b"\x00" * 1000 + b"\xff"
    with pytest.raises(CBORError, match="items"):
        loads(indefinite, max_items=500)
    assert loads(dumps("x" * 100), max_length=100) == "x" * 100
    with pytest.raises(CBORError, match="limit"):
        loads(dumps("x" * 101), max_length=100)
    chunked = b"\x5f" + b"\x41x" * 60 + b"\xff"
    assert loads(chunked, max_length=120) == b"x" * 60
    with pytest.raises(CBORError, match="limit"):
        loads(chunked, max_length=100)


def test_loads_prefix_and_input_types():
    data = dumps([1, 2]) + dumps("a")
    obj, end = loads_prefix(data)
    assert obj == [1, 2] and end == 3
    assert loads_prefix(data, end) == ("a", 5)
    enc = dumps({"a": b"b"})
    assert loads(bytearray(enc)) == loads(memoryview(enc)) == {"a": b"b"}
    with pytest.raises(CBORError):
        loads_prefix(data, 6)
    with pytest.raises(TypeError):
        loads("00")


def _mutations(data, rng):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            byte = rng.choice([0x1B, 0x5F, 0x7F, 0x9F, 0xBF, 0xFF, 0xF8, 0xC1, rng.randrange(256)])
            data.insert(rng.randrange(len(data) + 1), byte)
        elif op == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def _check_hostile(data):
    """Only CBORError may escape; whatever decodes must re-encode and decode to itself."""
    try:
        v = loads(data)
    except CBORError as e:
        assert "\n" not in str(e)
        return None
    again = dumps(v)
    assert same(loads(again), v)
    return v


@SLOW
@given(st.binary(max_size=80))
def test_fuzz_random_bytes(data):
    v = _check_hostile(data)
    if v is not None and not has_tag(v):
        # whatever we accept, cbor2 accepts with the same meaning
        assert same(from_cbor2(cbor2.loads(data)), v)


@SLOW
@given(values, st.randoms(use_true_random=False))
def test_fuzz_mutated_encodings(v, rng):
    data = dumps(v)
    for _ in range(10):
        _check_hostile(_mutations(data, rng))


@SLOW
@given(values)
def test_every_proper_prefix_is_truncated(v):
    data = dumps(v)
    for i in range(len(data)):
        with pytest.raises(CBORError, match="truncated"):
            loads(data[:i])


# --- the real MicroPython VM ------------------------------------------------------------------


def _random_value(rng, depth=0):
    r = rng.randrange(14 if depth < 3 else 9)
    if r == 0:
        simple = Simple(rng.choice([rng.randrange(20), rng.randrange(32, 256)]))
        return rng.choice([None, True, False, UNDEFINED, simple])
    if r == 1:
        return rng.randrange(-30, 30)
    if r == 2:
        return rng.randrange(-(2**64), 2**64) >> rng.randrange(64)
    if r == 3:  # any double, half of them exactly half- or single-representable
        bits = rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(64)
        k = rng.randrange(3)
        x = struct.unpack((">e", ">f", ">d")[k], bits[k].to_bytes((2, 4, 8)[k], "big"))[0]
        return x
    if r == 4:
        return rng.choice([0.0, -0.0, 1.5, 65504.0, 65505.0, 1e-7, 1.1, 1e300, 2.0**-149, 2.0**-24,
                           3.4028234663852886e38, INF, -INF, NAN])
    if r == 5:
        alphabet = "az09 \u00e9\u6c34\U00010151\x00\"'\\"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
    if r == 6:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 23, 24, 300])))
    if r in (7, 8):
        return rng.randrange(2**32)
    if r in (9, 10):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if r in (11, 12):
        d = {}
        for _ in range(rng.randrange(6)):
            k = rng.choice([rng.randrange(-30, 30), rng.randrange(-(2**64), 2**64), rng.random(),
                            "k%d" % rng.randrange(99), b"\x01" * rng.randrange(3), None, True])
            d[k] = _random_value(rng, depth + 1)
        return d
    return Tag(rng.choice([1, 6, 2**64 - 1]), _random_value(rng, depth + 1))


def _mp_source(v):
    """A MicroPython expression for v; floats go as bit patterns, not decimal literals."""
    if isinstance(v, float):
        return "F('%s')" % struct.pack(">d", v).hex()
    if isinstance(v, Tag):
        return "cbor.Tag(%d, %s)" % (v.tag, _mp_source(v.value))
    if isinstance(v, Simple):
        return "cbor.Simple(%d)" % v.value
    if isinstance(v, list):
        return "[%s]" % ", ".join(_mp_source(x) for x in v)
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (_mp_source(k), _mp_source(x)) for k, x in v.items())
    return repr(v)


MP_PRELUDE = """
import binascii, struct
from protocol import cbor
def F(h):
    return struct.unpack('>d', binascii.unhexlify(h))[0]
def hx(b):
    return binascii.hexlify(b).decode()
def attempt(h):
    try:
        v = cbor.loads(binascii.unhexlify(h))
    except cbor.CBORError as e:
        return 'err ' + str(e)
    except Exception as e:
        return 'BUG %s %s' % (type(e).__name__, e)
    return 'ok ' + hx(cbor.dumps(v))
"""


def _cpython_attempt(data):
    try:
        v = loads(data)
    except CBORError as e:
        return "err " + str(e)
    return "ok " + dumps(v).hex()


@pytest.mark.skipif(not sim.mpvm.available(), reason="MicroPython VM not installed (npm ci)")
def test_micropython_vm_matches_cpython():
    rng = random.Random(2024)
    vals = [0, 23, 24, -24, -25, 2**64 - 1, -(2**64), 1.5, 65504.0, 100000.0, 1.1, -0.0,
            5.960464477539063e-8, 2.0**-149, 1e300, -INF, NAN, "\u00fc\u6c34", b"\x00\xff",
            [1, [2, 3]], {24: 1, -1: 2, "a": None, 1.5: [], False: b""}, Tag(1, 1363896240),
            Tag(1, 1700000000.25), UNDEFINED, Simple(255)]
    vals += [_random_value(rng) for _ in range(400)]
    # 1) encode on the VM, compare bytes; decode on the VM and re-encode
    script = MP_PRELUDE + "V = []\n" + "".join("V.append(%s)\n" % _mp_source(v) for v in vals)
    script += "for v in V:\n    e = cbor.dumps(v)\n"
    script += "    print(hx(e), hx(cbor.dumps(cbor.loads(e))))\n"
    # 2) decode hostile, non-deterministic and valid inputs made on CPython: same verdicts and
    # messages
    inputs = [H(h) for h, _, _ in APPENDIX_A] + [H(h) for h, _ in MALFORMED]
    untagged = [v for v in vals[:100] if not has_tag(v)]
    inputs += [cbor2.dumps(to_cbor2(v), indefinite_containers=True) for v in untagged]
    for v in vals[:300]:
        inputs.append(_mutations(dumps(v), rng))
    inputs += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(12))) for _ in range(500)]
    inputs += [b"\x81" * 40 + b"\x00", b"\xc1" * 17 + b"\x00"]
    inputs += [H("5bffffffffffffffff00"), H("9bffffffffffffffff00")]
    script += "H = '%s'.split(',')\n" % ",".join(d.hex() for d in inputs)
    script += "for h in H:\n    print(attempt(h))\n"
    out = sim.mpvm.run(script).splitlines()

    expected = ["%s %s" % (dumps(v).hex(), dumps(v).hex()) for v in vals]
    expected += [_cpython_attempt(d) for d in inputs]
    assert len(out) == len(expected)
    mismatches = [(i, o, e) for i, (o, e) in enumerate(zip(out, expected)) if o != e]
    assert not mismatches, mismatches[:5]
    assert any(line.startswith("fb") for line in out) and any(line.startswith("fa") for line in out)
    assert not any(line.startswith("BUG") for line in out)

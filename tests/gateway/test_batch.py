import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from gateway.backhaul import batch
from protocol import cbor

label_vals = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.booleans(),
)
records = st.dictionaries(st.integers(-6, 8), label_vals, min_size=1, max_size=5)
items = st.one_of(
    records.map(lambda r: ("one", [r])),
    st.lists(records, max_size=4).map(lambda rs: ("arr", rs)),
)


@settings(max_examples=200, deadline=None)
@given(
    gw=st.text(min_size=1, max_size=30),
    seq=st.integers(0, 2**64 - 1),
    created=st.integers(0, 2**40),
    queued=st.lists(items, max_size=10),
)
def test_round_trip(gw, seq, created, queued):
    encoded = [cbor.dumps(rs[0] if kind == "one" else rs) for kind, rs in queued]
    expected = [r for _, rs in queued for r in rs]
    data = batch.encode_batch(gw, seq, created, encoded)
    out = batch.decode_batch(data)
    assert out == {"gateway_id": gw, "seq": seq, "created": created, "records": expected}
    # deterministic: equal to encoding the whole structure directly, and cbor2 agrees
    assert data == cbor.dumps({1: gw, 2: seq, 3: created, 4: expected})
    assert cbor2.loads(data) == cbor.loads(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_fuzz_only_batch_error(data):
    try:
        batch.decode_batch(data)
    except batch.BatchError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 39), st.integers(0, 255))
def test_decode_mutated(noise, pos, byte):
    good = bytearray(batch.encode_batch("gw", 7, 1700000000, [cbor.dumps({0: "a", 2: 1.5})]))
    good[pos % len(good)] = byte
    for data in (bytes(good), bytes(good) + noise, bytes(good[: pos % len(good)])):
        try:
            batch.decode_batch(data)
        except batch.BatchError:
            pass


@pytest.mark.parametrize(
    "value",
    [[], {1: "g", 2: 1, 3: 1}, {1: "", 2: 1, 3: 1, 4: []}, {1: "g", 2: -1, 3: 1, 4: []},
     {1: "g", 2: 1, 3: 1.5, 4: []}, {1: "g", 2: 1, 3: 1, 4: [1]}, {1: "g", 2: 1, 3: 1, 4: {}}],
)
def test_decode_rejects(value):
    with pytest.raises(batch.BatchError):
        batch.decode_batch(cbor.dumps(value))


def test_unknown_keys_ignored():
    out = batch.decode_batch(cbor.dumps({1: "g", 2: 1, 3: 2, 4: [], 9: "x"}))
    assert out["seq"] == 1


def test_bad_items_and_args():
    for item in (b"", cbor.dumps(5), b"\x9f\xa0\xff", b"\x9a\x00"):
        with pytest.raises(batch.BatchError):
            batch.encode_batch("g", 1, 1, [item])
    with pytest.raises(batch.BatchError):
        batch.encode_batch("g", -1, 1, [])
    with pytest.raises(batch.BatchError):
        batch.encode_batch("", 1, 1, [])


def test_topic():
    assert batch.topic("berlin", "gw1") == "streetgrid/berlin/gw1/readings"
    assert batch.topic("s", "g", prefix="x/") == "x/s/g/readings"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError):
            batch.topic(bad, "g")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=30), st.integers(64, 20000))
def test_fit_count_bound(sizes, max_bytes):
    n = batch.fit_count(sizes, max_bytes, "gateway-1")
    assert 1 <= n <= len(sizes)
    items = [cbor.dumps({3: "x" * s}) for s in sizes]
    real = [len(i) for i in items]
    n = batch.fit_count(real, max_bytes, "gateway-1")
    data = batch.encode_batch("gateway-1", 2**64 - 1, 2**40, items[:n])
    assert n == 1 or len(data) <= max_bytes
    if n < len(items):  # one more would not have fit by the (conservative) bound
        assert batch.batch_overhead("gateway-1") + sum(real[: n + 1]) > max_bytes

"""The TS013 JavaScript codecs (protocol/codecs/streetgrid-*.js): generated from the Python table
without drift, strict ECMAScript 5.1, free of module dependencies (loaded into an empty
vm context), correct on every shared example, and in agreement with the Python codec on
hypothesis-generated frames and commands (batched into one node run per codec)."""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from protocol import payload
from protocol.payload import jsgen
from tests.protocol.ts013_examples import KINDS, ROOT, load_examples, python_answer, strict_equal

RUNNER = os.path.join(ROOT, "tests", "protocol", "ts013_runner.js")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def codec_path(kind):
    return os.path.join(ROOT, "protocol", "codecs", "streetgrid-%s.js" % kind)


def run_js(kind, calls):
    proc = subprocess.run(["node", RUNNER, codec_path(kind)], input=json.dumps(calls),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(calls)
    for r in results:
        assert "thrown" not in r, r["thrown"]  # TS013: errors go into errors, never thrown
    return results


@pytest.mark.parametrize("kind", KINDS)
def test_checked_in_codec_is_the_generator_output(kind):
    template_path, outputs = jsgen.paths()
    with open(template_path) as f:
        template = f.read()
    with open(outputs[kind]) as f:
        assert f.read() == jsgen.render(kind, template), "run: python -m protocol.payload.jsgen"


@pytest.mark.parametrize("kind", KINDS)
def test_codec_is_ecmascript_5_1(kind):
    # acorn ships inside node; with ecmaVersion 5 it rejects let/const, arrows, templates, classes
    script = (
        "const acorn = require('internal/deps/acorn/acorn/dist/acorn');"
        "const src = require('fs').readFileSync(process.argv[1], 'utf8');"
        "acorn.parse(src, {ecmaVersion: 5, sourceType: 'script'});"
        "console.log('ok');"
    )
    proc = subprocess.run(["node", "--expose-internals", "-e", script, codec_path(kind)],
                          capture_output=True, text=True, timeout=60)
    if "Cannot find module" in proc.stderr:
        pytest.skip("this node has no bundled acorn")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    with open(codec_path(kind)) as f:
        src = f.read()
    for top in ("function decodeUplink(input)", "function encodeDownlink(input)", "function decodeDownlink(input)"):
        assert "\n" + top in src
    assert "require(" not in src and "module.exports" not in src


def test_es5_check_would_catch_es6():
    script = ("const acorn = require('internal/deps/acorn/acorn/dist/acorn');"
              "try { acorn.parse('let x = () => 1;', {ecmaVersion: 5}); console.log('accepted'); }"
              "catch (e) { console.log('rejected'); }")
    proc = subprocess.run(["node", "--expose-internals", "-e", script], capture_output=True, text=True, timeout=60)
    if "Cannot find module" in proc.stderr:
        pytest.skip("this node has no bundled acorn")
    assert proc.stdout.strip() == "rejected"


@pytest.mark.parametrize("kind", KINDS)
def test_js_codec_matches_every_example(kind):
    exs = load_examples(kind)
    results = run_js(kind, [{"type": e["type"], "input": e["input"]} for e in exs])
    bad = [(e["description"], got, e["output"]) for e, got in zip(exs, results) if not strict_equal(got, e["output"])]
    assert not bad, bad[:3]


def test_js_codec_never_throws_on_odd_inputs():
    calls = [
        {"type": "uplink", "input": {"fPort": 10, "bytes": []}},
        {"type": "downlink-encode", "input": {"data": None}},
        {"type": "downlink-encode", "input": {"data": {"command": "dim", "fields": None}}},
        {"type": "downlink-encode", "input": {"data": {"command": "dim", "fields": [1, 2]}}},
        {"type": "downlink-encode", "input": {"data": {"command": "schedule", "fields": {"entries": "x"}}}},
        {"type": "downlink-encode", "input": {"data": {"command": "schedule", "fields": {"entries": [3]}}}},
        {"type": "downlink-encode", "input": {"data": {}}},
    ]
    results = run_js("pole", calls)
    for r in results:
        assert len(r["errors"]) == 1 and r["warnings"] == []
    assert results[1]["errors"] == ["data must be an object with command and fields"]
    assert results[2]["errors"] == ["fPort 50 (pole dim): fields must be an object"]
    assert results[6]["errors"] == ["unknown downlink command undefined for pole"]


# ---- JavaScript and Python agree on generated inputs -----------------------------------------


SPECIAL = st.sampled_from([0, 1, 0x7F, 0x80, 0xFE, 0xFF])


@st.composite
def frames(draw, kind):
    """Uplink / downlink-decode calls for a codec: right-length frames mostly, random otherwise."""
    ports = [p for p in payload.UPLINK_PORTS + payload.DOWNLINK_PORTS
             if payload.describe(p)["kind"] in (kind, "any")] + [0, 99]
    port = draw(st.sampled_from(ports))
    if port in (0, 99):
        lay, n = None, draw(st.integers(0, 20))
    else:
        lay = payload.describe(port)
        n = lay["size"]
        if lay["repeat"] is not None:
            n += lay["repeat"]["size"] * draw(st.integers(0, lay["repeat"]["max"]))
        n = draw(st.one_of(st.just(n), st.just(n), st.integers(0, 60)))
    data = bytearray(draw(st.binary(min_size=n, max_size=n)))
    if n:  # plant sentinels, sign bits and all-ones where fields live
        for i, b in draw(st.lists(st.tuples(st.integers(0, n - 1), SPECIAL), max_size=8)):
            data[i] = b
    if data and draw(st.integers(0, 9)):
        data[0] = 1
    up = lay["dir"] == "up" if lay is not None else draw(st.booleans())
    return {"type": "uplink" if up else "downlink-decode", "input": {"fPort": port, "bytes": list(data)}}


SAFE_INT = st.integers(-(2 ** 53), 2 ** 53)  # JavaScript numbers are exact up to 2^53
# exact ties in wire units (k + 1/2 steps of 1, 1/2, 1/10, 1/100 and 15): rounding half away
# from zero and rounding half up differ on the negative ones
TIES = st.tuples(st.one_of(st.integers(-60, 60), st.integers(-20000, 20000)),
                 st.sampled_from([1, 0.5, 0.1, 0.01, 15])).map(lambda t: (t[0] + 0.5) * t[1])
NUMBER = st.one_of(SAFE_INT, st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e5, 1e5),
                   st.integers(-300, 70000), TIES, TIES)
VALUE = st.one_of(NUMBER, NUMBER, st.none(), st.booleans(), st.text(alphabet="abcxyz", max_size=4),
                  st.sampled_from(["open", "close", "fixed", "sunset", "sunrise", "nope"]))
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz_"  # no integer-like keys: JS orders those first


def field_value(f):
    """Mostly valid values for normalized field f; sometimes a negative tie or anything at all."""
    if f["enum"] is not None:
        valid = st.sampled_from(f["enum"]) | st.integers(0, len(f["enum"]))
    elif f["div"] == 1 and isinstance(f["min"], int) and isinstance(f["max"], int):
        valid = st.integers(f["min"], f["max"])
    else:
        valid = st.floats(f["min"], f["max"])
    if f["na"] is not None:
        valid = valid | st.none()
    ties = VALUE
    if f["enum"] is None and f["min"] is not None and f["min"] < 0:
        # exactly half a wire step below a representable negative value
        step = f["mul"] / f["div"]
        k = st.integers(0, max(0, int(-f["min"] / step) - 1))
        ties = k.map(lambda k: -(2 * k + 1) * f["mul"] / (2 * f["div"]))
    return st.integers(0, 19).flatmap(lambda c: valid if c < 14 else ties if c < 18 else VALUE)


def fields_of(fields):
    return st.fixed_dictionaries({}, optional={f["name"]: field_value(f) for f in fields})


@st.composite
def commands(draw, kind):
    """downlink-encode calls: mostly well-formed commands, and broken ones."""
    lays = [payload.describe(p) for p in payload.DOWNLINK_PORTS if payload.describe(p)["kind"] in (kind, "any")]
    lay = draw(st.sampled_from(lays))
    fields = draw(fields_of(lay["fields"]))
    if lay["repeat"] is not None and draw(st.integers(0, 3)):
        rep = lay["repeat"]
        fields[rep["name"]] = draw(st.lists(fields_of(rep["fields"]), max_size=13))
    if not draw(st.integers(0, 9)):
        fields[draw(st.text(alphabet=KEY_CHARS, min_size=1, max_size=5))] = draw(VALUE)
    command = lay["name"] if draw(st.integers(0, 9)) else draw(st.sampled_from(["dim", "relay", "boom"]))
    return {"type": "downlink-encode", "input": {"data": {"command": command, "fields": fields}}}


# one node run per batch: shrinking a failing batch would rerun node hundreds of times, and the
# assertion already names the first call on which the codecs disagree
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
SLOW_BATCHES = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def agree(kind, calls):
    results = run_js(kind, calls)
    for call, got in zip(calls, results):
        want = python_answer(kind, call)
        assert strict_equal(got, want), (call, got, want)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None, phases=NO_SHRINK, suppress_health_check=SLOW_BATCHES)
@given(data=st.data())
def test_js_and_python_decode_the_same_frames(kind, data):
    agree(kind, data.draw(st.lists(frames(kind), min_size=100, max_size=300)))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None, phases=NO_SHRINK, suppress_health_check=SLOW_BATCHES)
@given(data=st.data())
def test_js_and_python_encode_the_same_commands(kind, data):
    agree(kind, data.draw(st.lists(commands(kind), min_size=100, max_size=300)))

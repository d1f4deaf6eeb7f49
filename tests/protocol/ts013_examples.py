"""The shared TS013 examples (protocol/codecs/streetgrid-*.examples.json) and the Python codec's
answers in the TS013 output shape, for the tests of the Python codec and of the JS codecs."""

import json
import os

from protocol import payload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODECS = os.path.join(ROOT, "protocol", "codecs")
KINDS = ("pole", "meter")


def load_examples(kind):
    with open(os.path.join(CODECS, "streetgrid-%s.examples.json" % kind)) as f:
        return json.load(f)


def strict_equal(a, b):
    """Equality where True is not 1 and 50 equals 50.0 (JSON has one number type)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def python_answer(kind, call):
    """The Python codec's answer to a TS013 call (an example, or {"type", "input"}), in the TS013
    output shape."""
    inp = call["input"]
    try:
        if call["type"] == "uplink":
            return {"data": payload.decode_uplink(inp["fPort"], bytes(inp["bytes"])), "errors": [], "warnings": []}
        if call["type"] == "downlink-decode":
            return {"data": payload.decode_downlink(inp["fPort"], bytes(inp["bytes"])), "errors": [], "warnings": []}
        data = inp["data"]
        port, out = payload.encode_downlink(kind, data["command"], data.get("fields", {}))
        return {"bytes": list(out), "fPort": port, "errors": [], "warnings": []}
    except payload.PayloadError as e:
        return {"errors": [str(e)], "warnings": []}

"""``python -m gateway decode-batch``: MQTT batches (gateway/backhaul/batch.py) as JSON lines, for people
and scripts.

Each batch becomes one line ``{"gateway_id", "seq", "created", "records": [...]}`` (plus
``"topic"`` when read from MQTT).  Records use the SenML JSON names (``bn``, ``bt``, ``n``,
``u``, ``v``, ``vs``, ``vb``, ...) instead of the CBOR integer labels, text labels (the
``lora`` extension) stay as they are, byte strings are written as hex, CBOR tags as
``{"tag": n, "value": v}`` and non-finite floats as the strings "NaN", "Infinity", "-Infinity".

Input: a file (or ``-``, stdin) holding one batch or several back to back (a CBOR sequence,
RFC 8742, e.g. payloads saved one after the other); or ``--mqtt URL`` to subscribe (``--topic``,
default ``streetgrid/+/+/readings``) and print batches as they arrive, until ``--count``
batches or ``--timeout`` seconds.  A file that is not a valid batch is an error (one line on
stderr, exit 2); on MQTT a bad message is reported on stderr and skipped.
"""

from __future__ import annotations

import json
import math
import sys
import threading

from gateway.backhaul import batch as wire
from gateway.config import parse_mqtt_url
from protocol.payload.senml import LABELS
from protocol import cbor

__all__ = ["batch_json", "decode_stream", "main"]

NAMES = {v: k for k, v in LABELS.items()}


def _plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, cbor.Tag):
        return {"tag": v.tag, "value": _plain(v.value)}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_key(k): _plain(x) for k, x in v.items()}
    return v


def _key(k) -> str:
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).hex()
    return k if isinstance(k, str) else json.dumps(_plain(k))


def batch_json(data: bytes, topic: str | None = None) -> str:
    """One batch -> its JSON line (BatchError for a malformed batch)."""
    b = wire.decode_batch(data)
    records = []
    for r in b["records"]:
        records.append({(NAMES.get(k, str(k)) if type(k) is int else _key(k)): _plain(v)
                        for k, v in r.items()})
    out = {"gateway_id": b["gateway_id"], "seq": b["seq"], "created": b["created"],
           "records": records}
    if topic is not None:
        out["topic"] = topic
    return json.dumps(out, sort_keys=True, allow_nan=False)


def decode_stream(data: bytes) -> list[str]:
    """Every batch of a CBOR sequence -> JSON lines; BatchError names the offending offset."""
    if not data:
        raise wire.BatchError("empty input: no batch")
    lines, off = [], 0
    while off < len(data):
        try:
            _, end = cbor.loads_prefix(data, off, max_items=max(65536, len(data)),
                                       max_length=max(65536, len(data)))
        except cbor.CBORError as exc:
            raise wire.BatchError(f"at byte {off}: not valid CBOR: {exc}") from exc
        try:
            lines.append(batch_json(data[off:end]))
        except wire.BatchError as exc:
            raise wire.BatchError(f"at byte {off}: {exc}") from exc
        off = end
    return lines


def _from_file(path: str) -> int:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        print(f"decode-batch: cannot read {path!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        lines = decode_stream(data)
    except wire.BatchError as exc:
        print(f"decode-batch: {path}: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def _from_mqtt(url: str, topic: str, count: int | None, timeout: float | None) -> int:
    import paho.mqtt.client as mqtt

    try:
        host, port = parse_mqtt_url(url)
    except ValueError as exc:
        print(f"decode-batch: --mqtt {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    lock = threading.Lock()
    seen = [0]

    def on_connect(c, u, flags, rc, props):
        if rc.is_failure:
            print(f"decode-batch: MQTT connect refused: {rc}", file=sys.stderr)
            return
        c.subscribe(topic, qos=1)

    def on_message(c, u, msg):
        try:
            line = batch_json(msg.payload, msg.topic)
        except wire.BatchError as exc:
            print(f"decode-batch: {msg.topic}: {exc}", file=sys.stderr)
            return
        with lock:
            if done.is_set():
                return
            print(line, flush=True)
            seen[0] += 1
            if count is not None and seen[0] >= count:
                done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=True)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(1, 5)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"decode-batch: cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        done.wait(timeout)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if count is not None and seen[0] < count:
        print(f"decode-batch: got {seen[0]} of {count} batches", file=sys.stderr)
        return 1
    return 0


def main(args) -> int:
    if args.mqtt:
        if args.file is not None:
            print("decode-batch: give a FILE or --mqtt, not both", file=sys.stderr)
            return 2
        if args.count is not None and args.count < 1:
            print("decode-batch: --count must be >= 1", file=sys.stderr)
            return 2
        return _from_mqtt(args.mqtt, args.topic, args.count, args.timeout)
    return _from_file(args.file if args.file is not None else "-")

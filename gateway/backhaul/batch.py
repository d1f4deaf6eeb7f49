"""MQTT batch wire format of the gateway (pure functions, no I/O).

One MQTT message (QoS 1, topic ``streetgrid/<site>/<gateway_id>/readings``) carries one batch:
a deterministic CBOR map with integer keys::

    {
      1: gateway_id   text, non-empty
      2: seq          uint, strictly increasing per gateway, persistent across restarts
                      (RecordQueue.next_sequence("mqtt"))
      3: created      uint, epoch seconds (gateway clock) when the batch was built
      4: pack         SenML pack (RFC 8428, CBOR labels): array of record maps
    }

Readers must ignore unknown keys (>= 5 reserved for later use).  Delivery is at-least-once: the
same records can arrive twice (re-sent after a reconnect or a gateway restart, possibly with a
new ``seq``); consumers dedupe on (gateway_id, seq) and on the records' (bn/n, t).

Each queued item is either one CBOR-encoded SenML record (a map) or a definite-length CBOR array
of records.  They are embedded without decoding: the pack's array header is written and the
items' bytes are concatenated (an array item contributes its elements, i.e. its bytes after its
own header), so the pack stays a flat array of records.
"""

from __future__ import annotations

import struct

from protocol import cbor

__all__ = [
    "BatchError",
    "DEFAULT_PREFIX",
    "decode_batch",
    "encode_batch",
    "fit_count",
    "item_records",
    "topic",
    "MAX_OVERHEAD_FIXED",
]

DEFAULT_PREFIX = "streetgrid/"
KEY_GATEWAY, KEY_SEQ, KEY_CREATED, KEY_PACK = 1, 2, 3, 4
# map header + 4 one-byte keys + worst-case uint heads for seq, created and the array header
MAX_OVERHEAD_FIXED = 1 + 4 + 9 + 9 + 9


class BatchError(ValueError):
    """A batch (or a queued item to embed) is malformed."""


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major | n])
    if n < 0x100:
        return bytes([major | 24, n])
    if n < 0x10000:
        return struct.pack(">BH", major | 25, n)
    if n < 0x100000000:
        return struct.pack(">BI", major | 26, n)
    return struct.pack(">BQ", major | 27, n)


def _read_head(item: bytes) -> tuple[int, int, int]:
    """(major type, argument, header length) of the first CBOR data item in ``item``."""
    if not item:
        raise BatchError("empty item")
    ib = item[0]
    major, ai = ib >> 5, ib & 0x1F
    if ai < 24:
        return major, ai, 1
    if ai > 27:
        raise BatchError(f"unsupported CBOR header 0x{ib:02x} (indefinite length or reserved)")
    size = 1 << (ai - 24)
    if len(item) < 1 + size:
        raise BatchError("truncated CBOR header")
    return major, int.from_bytes(item[1 : 1 + size], "big"), 1 + size


def item_records(item: bytes) -> tuple[int, bytes]:
    """(number of records, bytes to splice into the pack) for one queued item.

    Only the header is inspected: a map is one record; a definite-length array contributes its
    elements.  Anything else raises :class:`BatchError`.
    """
    major, arg, hlen = _read_head(bytes(item))
    if major == 5:
        return 1, bytes(item)
    if major == 4:
        return arg, bytes(item[hlen:])
    raise BatchError(f"queued item is not a SenML record map or array (major type {major})")


def topic(site: str, gateway_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix><site>/<gateway_id>/readings`` (default prefix ``streetgrid/``)."""
    for name, value in (("site", site), ("gateway_id", gateway_id)):
        if not value or any(c in value for c in "/+#\0"):
            raise ValueError(f"{name} must be non-empty without '/', '+', '#' or NUL: {value!r}")
    return f"{prefix}{site}/{gateway_id}/readings"


def encode_batch(gateway_id: str, seq: int, created_s: int, records_cbor_list) -> bytes:
    """Encode one batch; ``records_cbor_list`` are queued items (CBOR record maps or arrays)."""
    if not isinstance(gateway_id, str) or not gateway_id:
        raise BatchError("gateway_id must be a non-empty str")
    for name, value in (("seq", seq), ("created_s", created_s)):
        if type(value) is not int or not 0 <= value < 1 << 64:
            raise BatchError(f"{name} must be an int in 0..2**64-1, got {value!r}")
    count = 0
    parts = []
    for item in records_cbor_list:
        n, body = item_records(item)
        count += n
        parts.append(body)
    out = bytearray(b"\xa4")
    out.append(KEY_GATEWAY)
    out += cbor.dumps(gateway_id)
    out.append(KEY_SEQ)
    out += cbor.dumps(seq)
    out.append(KEY_CREATED)
    out += cbor.dumps(created_s)
    out.append(KEY_PACK)
    out += _head(0x80, count)
    for body in parts:
        out += body
    return bytes(out)


def batch_overhead(gateway_id: str) -> int:
    """Upper bound of a batch's bytes besides the embedded items."""
    return MAX_OVERHEAD_FIXED + len(cbor.dumps(gateway_id))


def fit_count(item_sizes, max_bytes: int, gateway_id: str) -> int:
    """How many leading items (by encoded size) fit in a batch of at most ``max_bytes``.

    Always at least 1 when there is an item, so one oversized item cannot stall the queue.
    (Splicing an array item drops its header, so the real batch is never larger.)
    """
    total = batch_overhead(gateway_id)
    n = 0
    for size in item_sizes:
        total += size
        if n and total > max_bytes:
            break
        n += 1
    return n


def decode_batch(data: bytes) -> dict:
    """Decode and validate a batch -> ``{"gateway_id", "seq", "created", "records"}``.

    Raises :class:`BatchError` (a ``ValueError``) for anything malformed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BatchError("batch must be bytes")
    data = bytes(data)
    try:
        obj = cbor.loads(data, max_depth=16, max_items=max(65536, len(data)),
                         max_length=max(65536, len(data)))
    except cbor.CBORError as exc:
        raise BatchError(f"batch is not valid CBOR: {exc}") from exc
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - defensive
        raise BatchError(f"batch is not decodable: {exc}") from exc
    if not isinstance(obj, dict):
        raise BatchError("batch is not a CBOR map")
    for key in (KEY_GATEWAY, KEY_SEQ, KEY_CREATED, KEY_PACK):
        if key not in obj:
            raise BatchError(f"batch lacks key {key}")
    if any(type(k) is bool for k in obj):
        raise BatchError("batch map has a boolean key")
    gw, seq, created, pack = obj[1], obj[2], obj[3], obj[4]
    if type(gw) is not str or not gw:
        raise BatchError("batch key 1 (gateway id) must be a non-empty text string")
    for name, value in (("seq", seq), ("created", created)):
        if type(value) is not int or value < 0:
            raise BatchError(f"batch {name} must be an unsigned integer, got {value!r}")
    if not isinstance(pack, list):
        raise BatchError("batch key 4 (SenML pack) must be an array")
    for rec in pack:
        if not isinstance(rec, dict):
            raise BatchError("SenML pack element is not a record map")
    return {"gateway_id": gw, "seq": seq, "created": created, "records": pack}

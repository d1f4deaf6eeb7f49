"""ChirpStack v4 MQTT integration events -> typed events, or an EventError naming why not.

Sans-I/O: fed a topic and a payload, returns an event.  ChirpStack publishes each event on
``application/<application id>/device/<DevEUI>/event/<type>`` in one of two encodings chosen in
its config (``[integration] marshaler``): JSON (the protobuf JSON mapping: camelCase keys,
bytes as base64, 64-bit integers possibly as strings) or binary protobuf
(``chirpstack_api.integration``).  A protobuf event is turned into the same mapping with
``google.protobuf.json_format.MessageToDict``, so both encodings go through one parser and
cannot drift apart.

Only what the gateway uses is read; everything else in an event is ignored, so a newer
ChirpStack that adds fields keeps working.  A field that is present but of the wrong type is
an error rather than a guess: the event is counted and dropped, never half-stored.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

__all__ = ["EVENT_TYPES", "REASONS", "EventError", "Reception", "UpEvent", "JoinEvent",
           "AckEvent", "TxAckEvent", "parse_event", "parse_topic"]

EVENT_TYPES = ("up", "join", "ack", "txack")
REASONS = ("bad-topic", "unknown-type", "bad-encoding", "bad-field", "topic-mismatch")
MAX_PAYLOAD = 65536  # an up event with 32 gateways' rxInfo is a few KB


class EventError(ValueError):
    """Why an event was refused; ``reason`` is one of REASONS (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reception:
    """How one LoRa gateway behind ChirpStack heard the uplink (one rxInfo entry)."""

    gateway_id: str  # upper-case hex, as our forwarder EUIs
    rssi: int
    snr: float | None
    time: str | None  # RFC 3339, the gateway's or ChirpStack's time of reception


@dataclass(frozen=True)
class UpEvent:
    application_id: str
    dev_eui: bytes
    deduplication_id: str
    time: str | None
    dev_addr: int | None
    fcnt: int
    fport: int | None  # None: no FRMPayload (MAC commands only)
    confirmed: bool
    dr: int | None
    data: bytes
    frequency: int | None
    datr: str | None  # "SF7BW125", as an rxpk's datr
    receptions: tuple = ()
    tags: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JoinEvent:
    application_id: str
    dev_eui: bytes
    deduplication_id: str
    dev_addr: int | None
    tags: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AckEvent:
    """The device acknowledged (or did not) a confirmed downlink."""

    application_id: str
    dev_eui: bytes
    queue_item_id: str
    acknowledged: bool
    fcnt_down: int | None


@dataclass(frozen=True)
class TxAckEvent:
    """A LoRa gateway accepted a downlink for transmission."""

    application_id: str
    dev_eui: bytes
    queue_item_id: str
    downlink_id: int | None
    fcnt_down: int | None
    gateway_id: str | None


def parse_topic(topic: str) -> tuple[str, bytes, str]:
    """(application id, DevEUI, event type) of an integration topic."""
    parts = topic.split("/")
    if (len(parts) < 6 or parts[-6] != "application" or parts[-4] != "device"
            or parts[-2] != "event"):
        raise EventError("bad-topic", f"not application/<id>/device/<DevEUI>/event/<type>: {topic!r}")
    app_id, eui, kind = parts[-5], parts[-3], parts[-1]
    dev_eui = _eui(eui, "bad-topic", "topic DevEUI")
    if kind not in EVENT_TYPES:
        raise EventError("unknown-type", f"event type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
    return app_id, dev_eui, kind


def parse_event(topic: str, payload: bytes):
    """The typed event of one MQTT message, JSON or protobuf."""
    app_id, dev_eui, kind = parse_topic(topic)
    data = _mapping(kind, payload)
    info = _obj(data, "deviceInfo")
    eui_text = info.get("devEui")
    if eui_text is not None and _eui(eui_text, "bad-field", "deviceInfo.devEui") != dev_eui:
        raise EventError("topic-mismatch", f"deviceInfo.devEui {eui_text} is not the topic's "
                         f"{dev_eui.hex().upper()}")
    tags = _obj(info, "tags")
    if not all(isinstance(v, str) for v in tags.values()):
        raise EventError("bad-field", "deviceInfo.tags values must be strings")
    if kind == "up":
        return _up(app_id, dev_eui, data, dict(tags))
    if kind == "join":
        return JoinEvent(app_id, dev_eui, _text(data, "deduplicationId", required=True),
                         _dev_addr(data), dict(tags))
    if kind == "ack":
        return AckEvent(app_id, dev_eui, _text(data, "queueItemId", required=True),
                        _bool(data, "acknowledged"), _int(data, "fCntDown"))
    gw = _text(data, "gatewayId")
    return TxAckEvent(app_id, dev_eui, _text(data, "queueItemId", required=True),
                      _int(data, "downlinkId"), _int(data, "fCntDown"),
                      None if gw is None else gw.upper())


def _up(app_id: str, dev_eui: bytes, d: dict, tags: dict) -> UpEvent:
    raw = _text(d, "data") or ""
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EventError("bad-field", "data is not base64") from None
    fport = _int(d, "fPort")
    if fport is not None and not 0 <= fport <= 255:
        raise EventError("bad-field", f"fPort {fport} is not 0..255")
    fcnt = _int(d, "fCnt") or 0
    if not 0 <= fcnt < 1 << 32:
        raise EventError("bad-field", f"fCnt {fcnt} is not a 32-bit counter")
    rx = d.get("rxInfo", [])
    if not isinstance(rx, list) or not all(isinstance(r, dict) for r in rx):
        raise EventError("bad-field", "rxInfo must be a list of objects")
    receptions = []
    for r in rx:
        gw = _text(r, "gatewayId", required=True)
        snr = r.get("snr")
        if snr is not None and (isinstance(snr, bool) or not isinstance(snr, (int, float))):
            raise EventError("bad-field", "rxInfo.snr must be a number")
        receptions.append(Reception(gw.upper(), _int(r, "rssi") or 0,
                                    None if snr is None else float(snr), _text(r, "time")))
    tx = _obj(d, "txInfo")
    lora = _obj(_obj(tx, "modulation"), "lora")
    datr = None
    sf, bw = _int(lora, "spreadingFactor"), _int(lora, "bandwidth")
    if sf and bw:
        datr = "SF%dBW%d" % (sf, bw // 1000)
    # fPort 0 carries MAC commands only; ChirpStack leaves fPort out when there is no FRMPayload
    return UpEvent(app_id, dev_eui, _text(d, "deduplicationId", required=True), _text(d, "time"),
                   _dev_addr(d), fcnt, fport if (fport or data) else None,
                   _bool(d, "confirmed"), _int(d, "dr"), data, _int(tx, "frequency"), datr,
                   tuple(receptions), tags)


def _mapping(kind: str, payload: bytes) -> dict:
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_PAYLOAD:
        raise EventError("bad-encoding", f"payload must be bytes of at most {MAX_PAYLOAD}")
    if payload[:1] == b"{":
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise EventError("bad-encoding", f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EventError("bad-encoding", "JSON event is not an object")
        return data
    return _protobuf(kind, bytes(payload))


def _protobuf(kind: str, payload: bytes) -> dict:
    from chirpstack_api import integration
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    cls = {"up": integration.UplinkEvent, "join": integration.JoinEvent,
           "ack": integration.AckEvent, "txack": integration.TxAckEvent}[kind]
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise EventError("bad-encoding", f"not a protobuf {cls.__name__}: {exc}") from None
    return json_format.MessageToDict(msg)


def _obj(d: dict, key: str) -> dict:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise EventError("bad-field", f"{key} must be an object")
    return v


def _text(d: dict, key: str, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None or v == "":
        if required:
            raise EventError("bad-field", f"{key} is missing")
        return None
    if not isinstance(v, str):
        raise EventError("bad-field", f"{key} must be a string")
    return v


def _int(d: dict, key: str) -> int | None:
    """An integer field; the protobuf JSON mapping writes 64-bit ones as strings."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str) and v.lstrip("-").isdigit() and len(v) <= 20:
        return int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise EventError("bad-field", f"{key} must be an integer")
    return int(v)


def _bool(d: dict, key: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise EventError("bad-field", f"{key} must be true or false")
    return v


def _dev_addr(d: dict) -> int | None:
    v = _text(d, "devAddr")
    if v is None:
        return None
    if len(v) != 8:
        raise EventError("bad-field", f"devAddr {v!r} is not 8 hex digits")
    try:
        return int(v, 16)
    except ValueError:
        raise EventError("bad-field", f"devAddr {v!r} is not 8 hex digits") from None


def _eui(text: str, reason: str, what: str) -> bytes:
    if not isinstance(text, str) or len(text) != 16:
        raise EventError(reason, f"{what} {text!r} is not 16 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise EventError(reason, f"{what} {text!r} is not 16 hex digits") from None

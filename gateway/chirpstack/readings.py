"""A ChirpStack up event -> the same queued CBOR item as an uplink our own network server took.

The records are decoded from the FRMPayload with our payload tables (ChirpStack's own codec
output, ``object``, is ignored: one decoder, one set of names and units).  The first record's
``lora`` metadata has the keys of gateway/lorawan/readings.py, filled from ``rxInfo`` and
``txInfo``, plus ``"network": "chirpstack"`` and ``"dedup_id"`` (ChirpStack's
deduplicationId); ``copies`` list the LoRa gateways ChirpStack heard it through (``fwd`` is the
gateway id; there is no ``tmst``, which ChirpStack keeps to itself).

The device kind ("pole" / "meter") comes from our registry when the device is in it, else from
the device's ChirpStack tag ``streetgrid_kind`` (KIND_TAG); without either the payload cannot be
decoded and the item keeps the bytes as a payload-error, as for any undecodable payload.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.chirpstack.events import UpEvent
from gateway.lorawan.readings import parse_rxpk_time, senml_item
from gateway.lorawan.uplink import decoded_records

__all__ = ["KIND_TAG", "KINDS", "UpItem", "up_item"]

KIND_TAG = "streetgrid_kind"
KINDS = ("pole", "meter")


class UpItem(NamedTuple):
    item: bytes  # the CBOR array to queue
    error: str | None  # why the payload did not decode (the item keeps its bytes)
    records: list  # the decoded records (SenML text labels), [] when none
    message: str | None  # "report" / "alarm" / "ack" / ..., None when not decoded


def up_item(ev: UpEvent, kind: str | None, gateway_now_s: float) -> UpItem:
    """``kind``: the registry's, or None to use the device's tag."""
    kind = kind or ev.tags.get(KIND_TAG)
    t = parse_rxpk_time(ev.time)
    src = "network" if t is not None else "gateway"
    if t is None:
        t = float(gateway_now_s)
    lora = {"network": "chirpstack", "dedup_id": ev.deduplication_id,
            "dev_addr": "%08X" % (ev.dev_addr or 0), "fcnt": ev.fcnt,
            "confirmed": ev.confirmed, "time_source": src,
            "copies": [_copy(r) for r in ev.receptions]}
    if ev.fport is not None:
        lora["fport"] = ev.fport
    if ev.datr is not None:
        lora["datr"] = ev.datr
    if ev.frequency is not None:
        lora["freq"] = ev.frequency
    if ev.dr is not None:
        lora["dr"] = ev.dr
    if not ev.fport:
        return UpItem(senml_item(ev.dev_eui, t, ev.fcnt, lora, []), None, [], None)
    error = None
    if kind not in KINDS:
        error = (f"device kind unknown: not in the registry and no {KIND_TAG} tag"
                 if kind is None else f"device kind {kind!r} is not one of {', '.join(KINDS)}")
    else:
        try:
            records, message = decoded_records(ev.fport, ev.data, kind)
            return UpItem(senml_item(ev.dev_eui, t, ev.fcnt, lora, records), None, records,
                          message)
        except Exception as exc:  # PayloadError, or a decoder bug: keep the bytes either way
            error = str(exc)
    return UpItem(senml_item(ev.dev_eui, t, ev.fcnt, lora, None, ev.data.hex(), error), error,
                  [], None)


def _copy(r) -> dict:
    d = {"fwd": r.gateway_id, "rssi": r.rssi}
    if r.snr is not None:
        d["snr"] = r.snr
    if r.time is not None:
        d["time"] = r.time
    return d

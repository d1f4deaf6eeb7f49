"""One processed uplink (gateway.lorawan.uplink.Result) -> one queued item: a CBOR SenML record array.

Why one item per uplink: the queue's put is one transaction, so an uplink's records are stored
(and later published) all together or not at all, and the publisher splices the array into a
batch without decoding it (gateway/backhaul/batch.py).

Records use the RFC 8428 CBOR labels (bver -1, bn -2, bt -3, n 0, u 1, v 2, vs 3, vb 4).  The
first record also carries the SenML extension field ``"lora"`` (a text label), the radio
metadata of the frame::

    "lora": {
      "dev_addr": "26011F3A",          DevAddr, 8 hex digits
      "fcnt": 17,                      rebuilt 32-bit uplink counter
      "fport": 10,                     absent when the frame had no FPort
      "confirmed": false,
      "dr": 5, "datr": "SF7BW125",     of the best copy ("dr" absent if the region has no match)
      "freq": 868100000,               Hz, of the best copy
      "time_source": "forwarder",      where bt came from: "forwarder" or "gateway"
      "copies": [                      every forwarder that heard it, arrival order
        {"fwd": "AA555A0000000001", "rssi": -91, "snr": 7.5, "tmst": 3512348611,
         "time": "2026-11-28T06:12:01.528002Z"}      snr / time absent when not sent
      ],
      "error": "..."                   payload-error only: why the FRMPayload did not decode
    }

Record time (``bt``): with ``time_source="forwarder"`` the best copy's rxpk ``time`` (ISO 8601,
UTC when no offset is given, any number of fraction digits); when that copy has no ``time`` or
it does not parse (or is before 1978, i.e. a forwarder without a clock) the gateway clock is
used and the caller counts it (``time_fallback`` is True).  ``"gateway"``: always the gateway
clock (the time the uplink was processed).

Which records:
  * decoded payload: the records of gateway.lorawan.uplink (names and units from the payload table);
  * payload-error (good MIC, FRMPayload does not decode): one record ``n = "frm_payload"``,
    ``vs`` = the decrypted FRMPayload in hex, and ``lora.error`` -- authentic data is kept;
  * no application payload (MAC commands only): one record ``n = "lora/fcnt"``, ``v`` = FCnt,
    ``u = "count"``, so the uplink (a sign of life) is still published.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from gateway.lorawan.uplink import MIN_EPOCH, Result
from protocol import cbor, gwmp
from protocol import payload as _payload
from protocol.lorawan.region import Region, RegionError
from protocol.payload.senml import LABELS

__all__ = ["parse_rxpk_time", "uplink_item", "senml_item", "ItemError"]

_ISO = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?"
                  r"(Z|z|[+-]\d\d:?\d\d)?$")


class ItemError(ValueError):
    """The Result cannot become a queued item (neither accepted nor a payload-error)."""


def parse_rxpk_time(text: object) -> float | None:
    """ISO 8601 rxpk ``time`` -> UNIX seconds, or None when absent/unparseable/implausible.

    Accepts a ``Z`` or ``±hh:mm`` offset (none means UTC, as forwarders send it), a ``T`` or a
    space, and any number of fraction digits (GPS forwarders send nanoseconds, which
    ``datetime`` alone refuses).
    """
    if not isinstance(text, str):
        return None
    m = _ISO.match(text.strip())
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if int(s) > 60:
        return None
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(s), 59), tzinfo=timezone.utc)
    except ValueError:
        return None
    t = dt.timestamp() + (int(s) - min(int(s), 59))  # a leap second 60 -> the next second
    if frac:
        t += int(frac[:9]) / 10 ** len(frac[:9])
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        if hh > 23 or mm > 59:
            return None
        t -= sign * (hh * 3600 + mm * 60)
    if t < MIN_EPOCH:  # SenML would read it as relative time; a clockless forwarder
        return None
    return t


def _copy_dict(m) -> dict:
    d = {"fwd": m.forwarder, "rssi": m.rssi, "tmst": m.tmst}
    if m.snr is not None:
        d["snr"] = m.snr
    t = getattr(m, "time", None)
    if t is not None:
        d["time"] = t
    return d


def _record(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        out[LABELS.get(k, k)] = v
    return out


def uplink_item(result: Result, region: Region | None, gateway_now_s: float,
                time_source: str = "forwarder") -> tuple[bytes, bool]:
    """(CBOR array of SenML records, time_fallback) for one accepted or payload-error Result.

    ``gateway_now_s`` is the gateway clock (UNIX seconds) used when the forwarder's time is
    not used; ``time_fallback`` says the forwarder's time was wanted but not usable.
    """
    if not (result.accepted or result.reason == "payload-error") or result.uplink is None:
        raise ItemError(f"only accepted or payload-error results are queued, not {result.reason!r}")
    uplink = result.uplink
    best = uplink.best()
    fallback = False
    t = None
    if time_source == "forwarder":
        t = parse_rxpk_time(getattr(best, "time", None))
        fallback = t is None
    src = "forwarder" if t is not None else "gateway"
    if t is None:
        t = float(gateway_now_s)
    lora = {"dev_addr": "%08X" % (result.dev_addr or 0), "fcnt": result.fcnt,
            "confirmed": bool(result.confirmed), "datr": best.datr, "freq": best.freq_hz,
            "time_source": src, "copies": [_copy_dict(m) for m in uplink.copies]}
    if result.fport is not None:
        lora["fport"] = result.fport
    if region is not None:
        try:
            lora["dr"] = gwmp.dr_from_datr(region, best.datr)
        except (RegionError, TypeError, ValueError):
            pass
    return senml_item(result.dev_eui, t, result.fcnt, lora, result.records if result.accepted
                      else None, result.payload_hex, result.error), fallback


def senml_item(dev_eui: bytes, t: float, fcnt: int | None, lora: dict, records: list | None,
               payload_hex: str | None = None, error: str | None = None) -> bytes:
    """The queued CBOR item of one uplink, whoever ran the network: ``records`` decoded (an
    empty list: a sign of life, "lora/fcnt"), or None for a payload that did not decode (its
    hex kept as "frm_payload", ``error`` in the metadata)."""
    if t == int(t):  # a whole second is an integer: shorter in CBOR
        t = int(t)
    base = {"bver": _payload.SENML_BVER, "bn": "urn:dev:eui64:%s:" % dev_eui.hex(), "bt": t}
    if records:
        records = [dict(r) for r in records]
        records[0].update(base)
    elif records is not None:
        records = [dict(base, n="lora/fcnt", v=fcnt, u="count")]
    else:
        records = [dict(base, n="frm_payload", vs=payload_hex or "")]
        lora["error"] = error or "payload-error"
    out = [_record(r) for r in records]
    out[0]["lora"] = lora
    return cbor.dumps(out)

"""What the demo shows: one compact terminal line per uplink or Modbus poll, from the gateway's
MQTT batches.

The demo reads what a real consumer reads (the CBOR batch of gateway/backhaul/batch.py with SenML
records, gateway/lorawan/readings.py and gateway/modbus/readings.py), so the line proves the whole path:
time, device, the decoded fields with their units, and where it came from: the frame counter,
the best copy's RSSI/SNR and the forwarders that heard it, or the Modbus bus and address.
"""

import math
from datetime import datetime, timezone

from gateway.backhaul.batch import decode_batch
from protocol.payload.senml import LABELS

_NAMES = dict((v, k) for k, v in LABELS.items())
_UNITS = {"/100": "%", "Cel": "°C", "%RH": "%RH", "lx": "lx", "W": "W", "Wh": "Wh", "deg": "°",
          "cdeg": "c°", "V": "V", "A": "A", "Hz": "Hz", "count": "", "/": ""}
_SHORT = {"dim_level": "dim", "lamp_power": "lamp", "lamp_energy": "energy",
          "ambient_light": "light", "temperature": "temp", "humidity": "rh",
          "supply_voltage": "supply", "lamp_current": "current", "tilt_angle": "tilt",
          "alarm_count": "alarms#", "import_energy": "import", "export_energy": "export",
          "active_power": "power", "power_factor": "pf", "frequency": "f",
          "voltage/l1": "V1", "voltage/l2": "V2", "voltage/l3": "V3",
          "energy/import": "import", "energy/export": "export"}


def _plain_record(rec):
    return dict((_NAMES.get(k, k) if isinstance(k, int) else k, v) for k, v in rec.items())


def uplinks(batch_bytes):
    """A batch -> one dict per uplink or Modbus poll: eui (hex, or "<bus>.<address>" for a
    Modbus meter), t (epoch s), fields [(name, value, unit)], bits {bitmap name: [names of the
    bits set]} (status, alarms), lora (the radio metadata, {} if absent), modbus (bus and
    address, {} if absent)."""
    out = []
    cur = None
    for rec in decode_batch(batch_bytes)["records"]:
        rec = _plain_record(rec)
        if "bn" in rec:
            cur = {"eui": rec["bn"].rstrip(":").rsplit(":", 1)[-1].upper(), "t": rec.get("bt"),
                   "fields": [], "bits": {}, "lora": rec.get("lora") or {},
                   "modbus": rec.get("modbus") or {}}
            out.append(cur)
        if cur is None:
            continue  # records before any base name: not from this gateway's uplink items
        name = rec.get("n", "")
        value = rec.get("v", rec.get("vs", rec.get("vb")))
        if "/" in name and isinstance(value, bool):  # one bit of a bitmap record
            group, bit = name.split("/", 1)
            bits = cur["bits"].setdefault(group, [])
            if value and bit != "alarm":  # status/alarm repeats what the alarms bits say
                bits.append(bit)
        elif name and name not in ("status", "alarms", "lora/fcnt"):  # bitmaps: their bits;
            cur["fields"].append((name, value, rec.get("u")))          # fcnt: the radio part
    return out


def _number(v):
    if isinstance(v, float):
        return ("%.1f" % v).rstrip("0").rstrip(".") if abs(v) < 1000 else "%d" % round(v)
    return str(v)


def format_uplink(up, names=None):
    """The terminal line of one uplink or poll; names maps DevEUI hex (or a Modbus meter's
    "<BUS>.<ADDRESS>", upper case) -> device name."""
    t = up["t"]
    when = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(t, (int, float)) else "????-??-?? ??:??:??")
    who = (names or {}).get(up["eui"], up["eui"])
    parts = []
    for name, value, unit in up["fields"]:
        label = _SHORT.get(name, name)
        if unit == "rad" and isinstance(value, (int, float)):
            value, unit = round(math.degrees(value), 1), "deg"
        u = _UNITS.get(unit, unit or "")
        sep = "" if u in ("%", "°", "°C") else " "
        parts.append("%s %s%s%s" % (label, _number(value), sep if u else "", u))
    if up["bits"].get("status"):
        parts.append("[%s]" % " ".join(up["bits"]["status"]))
    if "alarms" in up["bits"]:
        parts.append("ALARM %s" % (",".join(up["bits"]["alarms"]) or "cleared"))
    lora = up["lora"]
    radio = []
    mb = up.get("modbus") or {}
    if mb:
        radio.append("modbus %s address %s" % (mb.get("bus", "?"), mb.get("address", "?")))
    if "fcnt" in lora:
        radio.append("fcnt %d" % lora["fcnt"])
    copies = lora.get("copies") or []
    if copies:
        best = max(copies, key=lambda c: (c.get("snr", -99), c.get("rssi", -999)))
        radio.append("rssi %d dBm" % best.get("rssi", 0))
        if "snr" in best:
            radio.append("snr %s dB" % _number(float(best["snr"])))
        fwds = [(names or {}).get(c.get("fwd", "").upper(), c.get("fwd", "?")) for c in copies]
        radio.append("via %s" % ",".join(fwds))
    return "%s  %-10s %s  | %s" % (when, who, "  ".join(parts), "  ".join(radio))

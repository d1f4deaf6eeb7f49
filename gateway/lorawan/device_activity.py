"""Per-device activity since the gateway started, for the ``devices`` section of stats.json.

The counters elsewhere in stats.json are per gateway: they cannot tell a field technician
whether *the* device they just installed joined and sent its first uplink.  This keeps, per
DevEUI, the little that answers that question (see :meth:`DeviceActivity.snapshot`).

Memory is bounded by the registry: only registry devices can have a join accepted or a data
uplink authenticated, so there is at most one entry per registered device.  It lives in memory
only and starts empty at every start, like the other counters.
"""

from __future__ import annotations

from gateway.lorawan.uplink import Result

__all__ = ["DeviceActivity"]


class _Device:
    __slots__ = ("joins", "last_join", "dev_addr", "uplinks", "uplinks_total", "last_uplink",
                 "fcnt", "fport", "rssi", "snr", "alarms")

    def __init__(self) -> None:
        self.joins = 0
        self.last_join: float | None = None
        self.dev_addr: int | None = None
        self.uplinks = 0
        self.uplinks_total = 0
        self.last_uplink: float | None = None
        self.fcnt: int | None = None
        self.fport: int | None = None
        self.rssi: float | None = None
        self.snr: float | None = None
        self.alarms: list[str] | None = None  # active alarms, from its last alarm frame

    def as_dict(self) -> dict:
        return {
            "joins": self.joins,
            "last_join": _ms(self.last_join),
            "dev_addr": None if self.dev_addr is None else "%08X" % self.dev_addr,
            "uplinks": self.uplinks,
            "uplinks_total": self.uplinks_total,
            "last_uplink": _ms(self.last_uplink),
            "fcnt": self.fcnt,
            "fport": self.fport,
            "rssi": self.rssi,
            "snr": self.snr,
            "alarms": self.alarms,
        }


class DeviceActivity:
    """Joins and authentic uplinks per DevEUI, so an installer can confirm one device works.

    Only plain attribute and dict updates, no I/O: called from ForwarderServer's hot path, it
    must never raise there nor slow it down.
    """

    def __init__(self) -> None:
        self._devices: dict[bytes, _Device] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def _get(self, dev_eui: bytes) -> _Device:
        d = self._devices.get(dev_eui)
        if d is None:
            d = self._devices[dev_eui] = _Device()
        return d

    def joined(self, dev_eui: bytes, dev_addr: int, now: float) -> None:
        """An accepted join-request.  It restarts ``uplinks``: the question after a (re)join is
        whether the *new* session carries data."""
        d = self._get(bytes(dev_eui))
        d.joins += 1
        d.last_join = now
        d.dev_addr = dev_addr
        d.uplinks = 0

    def uplink(self, result: Result, now: float) -> None:
        """An authenticated data uplink: accepted, or ``payload-error`` (good MIC, fresh counter,
        undecodable payload -- still proof the device is alive and its session works)."""
        if result.dev_eui is None:  # not a device's frame; cannot happen for those two outcomes
            return
        d = self._get(bytes(result.dev_eui))
        d.uplinks += 1
        d.uplinks_total += 1
        d.last_uplink = now
        if result.dev_addr is not None:  # also known when the join happened before a restart
            d.dev_addr = result.dev_addr
        d.fcnt = result.fcnt
        d.fport = result.fport
        up = result.uplink
        best = up.best() if up is not None and up.copies else None
        d.rssi = None if best is None else best.rssi
        d.snr = None if best is None else best.snr
        if result.message == "alarm":  # the frame carries the whole bitmap of active alarms
            d.alarms = [r["n"][7:] for r in result.records
                        if r.get("n", "").startswith("alarms/") and r.get("vb") is True]

    def snapshot(self) -> dict:
        """``{DevEUI hex: {joins, last_join, dev_addr, uplinks, uplinks_total, last_uplink,
        fcnt, fport, rssi, snr, alarms}}``, JSON types only; a field never seen yet is None
        (``alarms``: the active alarms of the device's last alarm frame)."""
        return {eui.hex().upper(): d.as_dict() for eui, d in sorted(self._devices.items())}


def _ms(t: float | None) -> float | None:
    return None if t is None else round(t, 3)

"""Sans-I/O de-duplication of one LoRaWAN frame heard by several packet forwarders.

Every forwarder in range of a device sends its own copy of the frame.  Copies are grouped by
their PHYPayload bytes (identical copies: same frame, same FCnt, same MIC).  A group opens on
its first copy and its window (default 200 ms) runs from that copy's arrival; the group is
released by :meth:`Deduplicator.due` once the window has closed, as one :class:`Uplink` carrying
the radio metadata (:class:`RadioMeta`) of every copy.

Time: the caller passes ``now`` as **monotonic seconds** (a float, e.g. ``time.monotonic()``;
never wall-clock time, which can jump).  Calls are expected with non-decreasing ``now``; a
``now`` lower than one already seen is treated as the highest seen so far.

Window boundaries: a copy arriving at ``first + t`` with ``0 <= t < window`` joins the group;
at ``t >= window`` the window is closed and the copy is *late*.  ``due(now)`` releases every
group with ``now >= first + window``, oldest first.

Release cadence: :meth:`Deduplicator.next_deadline` (when the caller should call ``due``) is
never earlier than ``release_every_s`` (default 20 ms) after the last release that returned
something.  Under load many groups then leave together, so the caller commits their frame
counters and records in one transaction instead of one per group (one fsync each), at the cost
of at most ``release_every_s`` extra latency.  ``due(now)`` itself still releases every group
whose window has closed; 0 turns the cadence off.

Late copies: a copy whose group is closed (released or merely due) is counted in
``counters["late"]`` and never emitted again.  Released keys are remembered for ``remember_s``
seconds (default 60) and at most ``max_remembered`` of them (oldest evicted first), so memory
is bounded.  A copy arriving after its key was forgotten opens a new group; the frame counter
check downstream rejects it as a replay.  The same holds for a device's own retransmission of
an identical frame (same FCnt, same bytes), which is a replay anyway.

Counters (``counters`` dict, for operators): ``copies`` (every add), ``groups`` (uplinks
released), ``merged`` (extra copies folded into an open group), ``late`` (copies after the
window; duplicates dropped), ``forgotten`` (released keys evicted by the size bound before
their time).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["RadioMeta", "Uplink", "Deduplicator", "DEFAULT_WINDOW_S"]

DEFAULT_WINDOW_S = 0.2
DEFAULT_REMEMBER_S = 60.0
DEFAULT_MAX_REMEMBERED = 65536
DEFAULT_RELEASE_EVERY_S = 0.02


@dataclass(frozen=True, slots=True)
class RadioMeta:
    """How one forwarder heard one copy.  forwarder: gateway EUI as upper-case hex; snr: the
    rxpk ``lsnr`` (dB, None for FSK); freq_hz: int; tmst: the forwarder's own 32-bit us counter
    (needed to schedule a class-A downlink through that forwarder)."""

    forwarder: str
    rssi: float
    snr: float | None
    freq_hz: int
    datr: str | int
    tmst: int

    @classmethod
    def from_rxpk(cls, gateway_eui: bytes | str, rxpk) -> "RadioMeta":
        """From a protocol.gwmp.Rxpk and the EUI of the PUSH_DATA that carried it."""
        fw = gateway_eui.hex().upper() if isinstance(gateway_eui, (bytes, bytearray)) else str(gateway_eui)
        return cls(fw, rxpk.rssi, rxpk.lsnr, rxpk.freq_hz, rxpk.datr, rxpk.tmst)

    def as_dict(self) -> dict:
        return {"forwarder": self.forwarder, "rssi": self.rssi, "snr": self.snr,
                "freq": self.freq_hz, "datr": self.datr, "tmst": self.tmst}


def _rank(m: RadioMeta) -> tuple[float, float]:
    return (float("-inf") if m.snr is None else m.snr, m.rssi)


@dataclass(slots=True)
class Uplink:
    """One de-duplicated frame: the PHYPayload and every copy's metadata, in arrival order."""

    phy: bytes
    copies: list[RadioMeta] = field(default_factory=list)
    first_seen: float = 0.0  # monotonic seconds of the first copy

    def best(self) -> RadioMeta:
        """Copy with the highest SNR, then highest RSSI (ties: the earliest); the forwarder to
        use for the downlink.  A copy without SNR ranks below any with one."""
        best = self.copies[0]
        for m in self.copies[1:]:
            if _rank(m) > _rank(best):
                best = m
        return best


class Deduplicator:
    """See the module docstring."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, *, remember_s: float = DEFAULT_REMEMBER_S,
                 max_remembered: int = DEFAULT_MAX_REMEMBERED,
                 release_every_s: float = DEFAULT_RELEASE_EVERY_S) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if not remember_s >= 0:
            raise ValueError(f"remember_s must be >= 0, got {remember_s!r}")
        if not isinstance(max_remembered, int) or max_remembered < 0:
            raise ValueError(f"max_remembered must be an int >= 0, got {max_remembered!r}")
        if not release_every_s >= 0:
            raise ValueError(f"release_every_s must be >= 0, got {release_every_s!r}")
        self.release_every_s = float(release_every_s)
        self._last_release = float("-inf")
        self.window_s = float(window_s)
        self.remember_s = float(remember_s)
        self.max_remembered = max_remembered
        self._open: dict[bytes, Uplink] = {}  # insertion order == first-arrival order
        self._released: OrderedDict[bytes, float] = OrderedDict()  # key -> release time
        self._now = float("-inf")
        self.counters = {"copies": 0, "groups": 0, "merged": 0, "late": 0, "forgotten": 0}

    def _clock(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    def __len__(self) -> int:
        """Number of open (not yet released) groups."""
        return len(self._open)

    def add(self, phy: bytes, meta: RadioMeta, now: float) -> None:
        """Record one received copy at monotonic time ``now`` (seconds)."""
        now = self._clock(now)
        key = bytes(phy)
        self.counters["copies"] += 1
        up = self._open.get(key)
        if up is not None:
            if now - up.first_seen < self.window_s:
                up.copies.append(meta)
                self.counters["merged"] += 1
            else:
                self.counters["late"] += 1
            return
        if key in self._released:
            self.counters["late"] += 1
            return
        self._open[key] = Uplink(key, [meta], now)

    def due(self, now: float) -> list[Uplink]:
        """Release (oldest first) every group whose window has closed by ``now``."""
        now = self._clock(now)
        out: list[Uplink] = []
        while self._open:
            key, up = next(iter(self._open.items()))
            if now - up.first_seen < self.window_s:
                break
            del self._open[key]
            out.append(up)
            self._released[key] = now
        self.counters["groups"] += len(out)
        if out:
            self._last_release = now
        self._prune(now)
        return out

    def next_deadline(self) -> float | None:
        """Monotonic time to call :meth:`due` next (for a timer), or None when nothing is open:
        when the oldest open group becomes due, but not before the release cadence allows."""
        for up in self._open.values():
            return max(up.first_seen + self.window_s, self._last_release + self.release_every_s)
        return None

    def _prune(self, now: float) -> None:
        rel = self._released
        while rel:
            key, t = next(iter(rel.items()))
            if now - t < self.remember_s:
                break
            del rel[key]
        while len(rel) > self.max_remembered:
            rel.popitem(last=False)
            self.counters["forgotten"] += 1

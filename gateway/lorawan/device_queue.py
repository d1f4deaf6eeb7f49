"""Application downlinks waiting for their device's next uplink (LoRaWAN class A).

A class-A device listens only right after it transmits, so a command for it (dim, schedule,
config, ...) waits here until the device's next data uplink; ForwarderServer then sends the
oldest one in that uplink's RX1/RX2 window (with FCtrl.ACK when the uplink was confirmed and
FCtrl.FPending when more are waiting).  A downlink that could not be sent (refused by the
forwarder in RX1 and RX2, no downlink path) goes back to the front of its device's queue.

The queue itself is in memory; the command ledger (gateway/commands/ledger.py) keeps what
it holds on disk and fills it again at start, and ``on_sent`` tells it which downlink left.
At most ``max_per_device`` commands wait per device; more are refused with
:class:`DeviceQueueFull`.

Counters (``counters``): queued, sent (confirmed by TX_ACK), requeued, refused (queue full).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["AppDownlink", "DeviceQueue", "DeviceQueueFull"]


class DeviceQueueFull(ValueError):
    """The device already has ``max_per_device`` downlinks waiting."""


@dataclass(frozen=True, slots=True)
class AppDownlink:
    """One application payload for a device: FRMPayload (plaintext) on fport."""

    fport: int
    payload: bytes
    label: str = ""  # for logs, e.g. "dim"
    ref: int | None = None  # its row in gateway.commands.ledger (None: not tracked)


class DeviceQueue:
    """See the module docstring.  Keys are DevEUIs (8 bytes)."""

    def __init__(self, max_per_device: int = 8) -> None:
        self.max_per_device = max_per_device
        self._q: dict[bytes, deque[AppDownlink]] = {}
        self.counters = {"queued": 0, "sent": 0, "requeued": 0, "refused": 0}
        self.on_sent = None  # (dev_eui, AppDownlink) -> None, when a downlink has left
        self.on_push = None  # (dev_eui) -> None, when a downlink starts waiting (ChirpStack's)

    def __len__(self) -> int:
        return sum(len(q) for q in self._q.values())

    def pending(self, dev_eui: bytes) -> int:
        q = self._q.get(bytes(dev_eui))
        return 0 if q is None else len(q)

    def push(self, dev_eui: bytes, d: AppDownlink) -> int:
        """Queue d behind the device's other downlinks; returns how many are now waiting."""
        if not 1 <= d.fport <= 223:
            raise ValueError(f"application FPort must be 1..223, got {d.fport}")
        q = self._q.setdefault(bytes(dev_eui), deque())
        if len(q) >= self.max_per_device:
            self.counters["refused"] += 1
            raise DeviceQueueFull(f"{bytes(dev_eui).hex().upper()} already has {len(q)} downlinks waiting")
        q.append(d)
        self.counters["queued"] += 1
        n = len(q)
        if self.on_push is not None:
            self.on_push(bytes(dev_eui))
        return n

    def restore(self, dev_eui: bytes, d: AppDownlink) -> None:
        """Queue again a downlink accepted before a restart (no limit: it was accepted)."""
        self._q.setdefault(bytes(dev_eui), deque()).append(d)

    def pop(self, dev_eui: bytes) -> AppDownlink | None:
        """The device's oldest waiting downlink (removed), or None."""
        key = bytes(dev_eui)
        q = self._q.get(key)
        if not q:
            return None
        d = q.popleft()
        if not q:
            del self._q[key]
        return d

    def push_front(self, dev_eui: bytes, d: AppDownlink) -> None:
        """Put back a downlink that could not be sent (it stays first; no size limit)."""
        self._q.setdefault(bytes(dev_eui), deque()).appendleft(d)
        self.counters["requeued"] += 1

    def sent(self, dev_eui: bytes, d: AppDownlink) -> None:
        self.counters["sent"] += 1
        if self.on_sent is not None:
            self.on_sent(bytes(dev_eui), d)

    def drop(self, dev_eui: bytes, ref: int) -> bool:
        """Take the downlink with ledger ref out of the device's queue (it expired)."""
        q = self._q.get(bytes(dev_eui))
        for d in list(q or ()):
            if d.ref == ref:
                q.remove(d)
                if not q:
                    del self._q[bytes(dev_eui)]
                return True
        return False

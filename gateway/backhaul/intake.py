"""Where accepted uplinks enter the durable queue, with a bounded in-memory backlog for when it
refuses them.

The durable queue (gateway/backhaul/store.py) never evicts and refuses new items with ``QueueFull`` when
its byte bound or the disk is full (or fails with another ``QueueError``).  An accepted uplink
has already moved the device's frame counter, so the device will never resend it: dropping it
here would lose it for good.  :class:`Intake` therefore holds refused items, in order, in a
``deque`` of at most ``backlog_max`` items and :meth:`retry` puts them into the queue once it
has room again (the service calls it every second and after each publish).  While the backlog
is not empty new items go behind it, so the order of readings is kept.

When even the backlog is full the *newest* item is dropped: counted in ``dropped`` and logged
at ERROR with the number lost so far -- this is the only place accepted data can be lost
(besides SIGKILL/power loss while items sit in the backlog, which ``backlog`` in stats.json
shows).  An item larger than the whole queue can never be stored; it is dropped the same way
(``too_large``).

Counters (``counters``): queued (items in the durable queue), held (items that went to the
backlog), flushed (backlog items later queued), dropped, too_large, queue_full, queue_error;
``len(intake)`` is the current backlog.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from gateway.backhaul.store import QueueError, QueueFull, RecordQueue

__all__ = ["Intake"]

log = logging.getLogger(__name__)


class Intake:
    """See the module docstring."""

    def __init__(self, queue: RecordQueue, backlog_max: int = 10_000,
                 on_queued: Callable[[], object] | None = None) -> None:
        self.queue = queue
        self.backlog_max = backlog_max
        self.on_queued = on_queued
        self._backlog: deque[bytes] = deque()
        self.counters = {"queued": 0, "held": 0, "flushed": 0, "dropped": 0, "too_large": 0,
                         "queue_full": 0, "queue_error": 0}

    def __len__(self) -> int:
        return len(self._backlog)

    def _store(self, item: bytes) -> str:
        """'ok', 'refused' (retry later) or 'never' (can never fit)."""
        try:
            self.queue.put([item])
        except QueueFull as exc:
            self.counters["queue_full"] += 1
            if self.counters["queue_full"] == 1 or self.counters["queue_full"] % 1000 == 0:
                log.warning("durable queue refuses items (%s); holding them in memory", exc)
            return "refused"
        except QueueError as exc:
            self.counters["queue_error"] += 1
            log.error("durable queue failed (%s); holding the item in memory", exc)
            return "refused"
        except ValueError as exc:
            self.counters["too_large"] += 1
            log.error("ACCEPTED DATA LOST: item of %d bytes can never fit the queue: %s", len(item), exc)
            return "never"
        self.counters["queued"] += 1
        return "ok"

    def put(self, item: bytes) -> bool:
        """Queue one item (or hold it); False only when it was dropped (counted, logged)."""
        return self.put_many([item]) == 1

    def put_many(self, items: list[bytes]) -> int:
        """Queue items in one transaction (one fsync) when possible, else one by one, holding
        what the queue refuses; returns how many were queued or held (the rest were dropped)."""
        items = [bytes(i) for i in items]
        if not items:
            return 0
        if self._backlog:
            self.retry()
        if not self._backlog and len(items) > 1:
            try:
                self.queue.put(items)
            except (QueueError, ValueError):
                pass  # retried one by one below, which counts and logs each outcome
            else:
                self.counters["queued"] += len(items)
                self._notify()
                return len(items)
        kept = 0
        queued = False
        for item in items:
            if not self._backlog:
                status = self._store(item)
                if status == "ok":
                    kept += 1
                    queued = True
                    continue
                if status == "never":
                    continue
            if len(self._backlog) >= self.backlog_max:
                self.counters["dropped"] += 1
                log.error("ACCEPTED DATA LOST: durable queue full and in-memory backlog full "
                          "(%d items); %d items dropped so far", len(self._backlog),
                          self.counters["dropped"])
                continue
            self._backlog.append(item)
            self.counters["held"] += 1
            kept += 1
        if queued:
            self._notify()
        return kept

    def retry(self) -> int:
        """Move backlog items into the durable queue, oldest first; return how many moved."""
        moved = 0
        while self._backlog:
            status = self._store(self._backlog[0])
            if status == "refused":
                break
            self._backlog.popleft()
            if status == "ok":
                moved += 1
                self.counters["flushed"] += 1
        if moved:
            log.info("moved %d held items into the durable queue (%d still held)", moved,
                     len(self._backlog))
            self._notify()
        return moved

    def _notify(self) -> None:
        if self.on_queued is not None:
            self.on_queued()

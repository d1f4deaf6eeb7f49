"""One log line per rejected frame, with its reason, without letting a flood drown the log.

Operators need to see why a device's frames are refused (replay, bad MIC, unknown DevAddr...),
but a replaying attacker or a misprovisioned fleet can send thousands a second. So each reason
gets at most ``per_reason_per_s`` lines a second; the rest are counted and summed up in one line
when the reason's next second starts. Counting in stats.json is done elsewhere and is never
limited.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

__all__ = ["RejectionLog"]

RECENT = 20


class RejectionLog:
    def __init__(self, logger: logging.Logger, per_reason_per_s: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.limit = per_reason_per_s
        self.clock = clock
        self._windows: dict[str, list] = {}  # reason -> [second, lines, suppressed]
        # the last RECENT rejections, every one (not rate-limited), for the status page
        self.recent: deque = deque(maxlen=RECENT)

    def rejected(self, what: str, reason: str, detail: str) -> None:
        """Log ``<what> rejected (<reason>): <detail>``, within the reason's rate."""
        self.recent.append({"t": round(time.time(), 3), "what": what, "reason": reason,
                            "detail": detail})
        now = int(self.clock())
        w = self._windows.get(reason)
        if w is None or w[0] != now:
            if w is not None and w[2]:
                self.log.warning("%d more %s rejections (%s) in that second, not logged one by one",
                                 w[2], what, reason)
            w = self._windows[reason] = [now, 0, 0]
        if w[1] < self.limit:
            w[1] += 1
            self.log.warning("%s rejected (%s): %s", what, reason, detail)
        else:
            w[2] += 1

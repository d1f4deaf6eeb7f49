"""Bucket counts for a Prometheus histogram, kept by the thread that measures and read as one
snapshot. prometheus-client's own Histogram lives in a process-wide registry; the gateway's
metrics come from one service snapshot per scrape (gateway/operations/http_server.py), so the counts
live with the service and are only rendered by the collector."""

from __future__ import annotations

import bisect
import threading

# seconds: a PUBACK on loopback takes about a millisecond, one across a city's backhaul a few
# hundred; above 10 s something is wrong
PUBLISH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, bounds=PUBLISH_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value

    def snapshot(self) -> dict:
        """{"buckets": [[le, cumulative count], ...], "count": n, "sum": s}, le "+Inf" last."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, running = [], 0
        for le, n in zip(self.bounds + ("+Inf",), counts):
            running += n
            out.append([le, running])
        return {"buckets": out, "count": running, "sum": round(total, 6)}

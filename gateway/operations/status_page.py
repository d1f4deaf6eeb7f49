"""The live status page: what an operator looks at instead of reading stats.json.

``/`` serves gateway/operations/static/status.html (with status.js and status.css: no inline script, so
the page runs under a strict Content-Security-Policy), which opens ``/events``: a Server-Sent
Events stream of :func:`page_view` once a second. Why SSE: one direction is all the page
needs, the browser reconnects by itself, and it is plain HTTP a WSGI thread can serve.

page_view is a compact, bounded view of one service snapshot: every forwarder, the
MAX_DEVICES devices that matter most (open alarms first, then the most recently heard), the
Modbus meters, the queue and the broker, the last rejections. The page keeps its own history
for the sparklines (uplinks per second from the accepted counter, queue depth).
"""

from __future__ import annotations

import json
import os
import threading
import time

from gateway.operations.health import readiness

__all__ = ["page_view", "static_file", "EventStreams", "MAX_STREAMS"]

MAX_DEVICES = 50
MAX_STREAMS = 8  # open /events at once; each holds a server thread
INTERVAL_S = 1.0
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
FILES = {"/": "status.html", "/status.js": "status.js", "/status.css": "status.css"}


def static_file(path: str) -> tuple[bytes, str] | None:
    """(body, content type) of a page file by URL path, None if it is not one."""
    name = FILES.get(path)
    if name is None:
        return None
    with open(os.path.join(_STATIC, name), "rb") as f:
        return f.read(), _TYPES[os.path.splitext(name)[1]]


def _device_rows(devices: dict, now: float) -> list[dict]:
    rows = []
    for eui, d in devices.items():
        last = d.get("last_uplink") or d.get("last_join")
        rows.append({"eui": eui, "dev_addr": d.get("dev_addr"), "fcnt": d.get("fcnt"),
                     "rssi": d.get("rssi"), "snr": d.get("snr"), "uplinks": d.get("uplinks_total"),
                     "alarms": d.get("alarms") or [],
                     "last_s": None if last is None else round(max(0.0, now - last), 1)})
    rows.sort(key=lambda r: (not r["alarms"], r["last_s"] if r["last_s"] is not None else 1e18,
                             r["eui"]))
    return rows[:MAX_DEVICES]


def page_view(s: dict) -> dict:
    """The status page's data from one GatewayService.snapshot() (JSON types only)."""
    now = s.get("time", time.time())
    up, fs, pub = s.get("uplink", {}), s.get("forwarder_server", {}), s.get("publisher", {})
    q, cm = s.get("queue", {}), s.get("commands", {})
    rejected = {k: v for k, v in up.items() if k not in ("accepted", "join") and v}
    if fs.get("crc-bad"):
        rejected["crc-bad"] = fs["crc-bad"]
    devices = s.get("devices", {})
    return {
        "gateway": {"id": s.get("gateway_id"), "site": s.get("site"),
                    "uptime_s": s.get("uptime_s"), "time": now},
        "ready": readiness(s),
        "totals": {"uplinks_accepted": up.get("accepted", 0),
                   "uplinks_rejected": sum(rejected.values()), "rejected_by_reason": rejected,
                   "joins": fs.get("joins-accepted", 0), "downlinks": fs.get("downlinks", 0),
                   "records_acked": pub.get("acked_records", 0)},
        "mqtt": {"broker": pub.get("broker"), "connected": bool(pub.get("connected")),
                 "last_error": pub.get("last_error", ""), "inflight": pub.get("inflight", 0)},
        "queue": {k: q.get(k) for k in ("records", "used_bytes", "max_bytes", "oldest_age_s",
                                        "error") if k in q},
        "forwarders": [{"eui": eui, "addr": f.get("addr"), "last_seen_s": f.get("last_pull_s"),
                        "rx": f.get("rx", 0), "tx": f.get("tx", 0)}
                       for eui, f in sorted(s.get("forwarders", {}).items())],
        "devices": {"count": len(devices),
                    "with_alarms": sum(1 for d in devices.values() if d.get("alarms")),
                    "shown": _device_rows(devices, now)},
        "modbus": [{"bus": name, "meters": [
            {"address": int(a), "polls": m.get("polls", 0), "timeouts": m.get("timeouts", 0),
             "crc_errors": m.get("crc_errors", 0), "failed_polls": m.get("failed_polls", 0)}
            for a, m in sorted(b.get("meters", {}).items(), key=lambda kv: int(kv[0]))]}
            for name, b in sorted(s.get("modbus", {}).items())],
        "commands": {k: cm.get(k, 0) for k in ("accepted", "rejected", "sent", "acknowledged",
                                               "failed", "expired", "waiting")},
        "rejections": list(reversed(s.get("rejections", [])))[:20],
    }


class EventStreams:
    """At most MAX_STREAMS open /events; stop() ends them all (the server is shutting down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0
        self.refused = 0
        self.stopping = threading.Event()
        self._latest = (float("-inf"), b"")  # (monotonic time, event body) shared by all pages

    def take(self) -> bool:
        with self._lock:
            if self.open >= MAX_STREAMS:
                self.refused += 1
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1

    def _body(self, snapshot) -> bytes:
        """The current view, taken at most once per half interval however many pages are open:
        a snapshot is work on the event loop (all devices), not to be repeated per page."""
        with self._lock:
            at, body = self._latest
            if time.monotonic() - at < INTERVAL_S / 2:
                return body
        body = json.dumps(page_view(snapshot()), separators=(",", ":")).encode()
        with self._lock:
            self._latest = (time.monotonic(), body)
        return body

    def stream(self, snapshot):
        """The SSE body: ``retry`` once, then one ``data:`` event per INTERVAL_S until the
        client goes away (the write fails) or the server stops. Call after take()."""
        try:
            yield b"retry: 2000\n\n"
            while not self.stopping.is_set():
                try:
                    yield b"data: " + self._body(snapshot) + b"\n\n"
                except TimeoutError as exc:  # the event loop did not answer: say so
                    yield b"event: stalled\ndata: " + json.dumps(str(exc)).encode() + b"\n\n"
                self.stopping.wait(INTERVAL_S)
        finally:
            self.give_back()

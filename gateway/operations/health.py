"""When the gateway is healthy and ready, from one service snapshot: the one rule shared by
/readyz, the status page and `python -m gateway status`."""

from __future__ import annotations

__all__ = ["backhaul_problems", "readiness", "QUEUE_READY_FULL"]

QUEUE_READY_FULL = 0.9  # broker down and the queue this full = not ready


def backhaul_problems(s: dict) -> list[str]:
    """What keeps accepted records from a safe way to the broker, from a snapshot: a failing
    durable queue, or the broker down while the queue is QUEUE_READY_FULL or fuller. Shared by
    /readyz and `python -m gateway status`."""
    why = []
    q = s.get("queue", {})
    if "error" in q:
        why.append("the durable queue fails: %s" % q["error"])
    full = q.get("used_bytes", 0) / q["max_bytes"] if q.get("max_bytes") else 0.0
    if not s.get("publisher", {}).get("connected") and full >= QUEUE_READY_FULL:
        why.append("MQTT is down and the queue is %.0f %% full" % (100 * full))
    return why


def readiness(s: dict) -> list[str]:
    """Why the gateway is not ready to take uplinks ([] = ready)."""
    why = [] if s.get("udp", {}).get("port") else ["the GWMP socket is not bound"]
    return why + backhaul_problems(s)

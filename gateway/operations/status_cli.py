"""``python -m gateway status``: the gateway's state for a person, and an exit status a health
check can use; from the gateway's ``/status.json`` (``--url``: the state right now) or from its
stats.json (``--stats``).

Why stats.json too: the gateway rewrites it every stats_interval_s, atomically, so reading it
needs no connection to a running process, works for a gateway that died (a stale file says
so) or one whose HTTP endpoint is off, and costs the gateway nothing. A gateway that does not
answer on --url is unhealthy (exit 1).

Unhealthy (exit 1): the file is older than --max-age (the gateway is not running, or hung);
the broker is disconnected while the durable queue is 90 % full or more (records would soon
wait in memory, then be refused); records were refused for lack of room. Exit 2: no readable
stats file.
"""

from __future__ import annotations

import json
import sys
import time

from gateway.operations.health import backhaul_problems


def verdict(s: dict, age_s: float, max_age_s: float) -> list[str]:
    """What is wrong, one line each; [] when healthy."""
    bad = []
    if age_s > max_age_s:
        bad.append("stats.json is %.0f s old (more than %.0f s): is the gateway running?"
                   % (age_s, max_age_s))
    bad += backhaul_problems(s)  # the same rule as /readyz
    dropped = s.get("intake", {}).get("dropped", 0)
    if dropped:
        bad.append("%d records refused for lack of room (intake.dropped)" % dropped)
    return bad


def render(s: dict, age_s: float) -> list[str]:
    fs, up, q, pub = (s.get(k, {}) for k in ("forwarder_server", "uplink", "queue", "publisher"))
    rejected = {k: v for k, v in up.items() if k not in ("accepted", "join") and v}
    lines = [
        "gateway %s (site %s): up %.0f s, stats %.0f s old"
        % (s.get("gateway_id"), s.get("site"), s.get("uptime_s", 0), age_s),
        "uplinks: %d accepted, %d rejected%s; joins %d accepted"
        % (up.get("accepted", 0), sum(rejected.values()),
           " (%s)" % ", ".join("%s %d" % kv for kv in sorted(rejected.items())) if rejected
           else "", fs.get("joins-accepted", 0)),
        "mqtt %s: %s, %d batches acked (%d records), %d in flight"
        % (pub.get("broker", "?"), "connected" if pub.get("connected") else "DISCONNECTED",
           pub.get("acked", 0), pub.get("acked_records", 0), pub.get("inflight", 0)),
        "queue: %d records, %d of %d bytes" % (q.get("records", 0), q.get("used_bytes", 0),
                                             q.get("max_bytes", 0)),
    ]
    fwd = s.get("forwarders", {})
    lines.append("forwarders: %d" % len(fwd))
    for eui, f in sorted(fwd.items()):
        lines.append("  %s at %s, last seen %.0f s ago" % (eui, f.get("addr"),
                                                          f.get("last_pull_s", 0)))
    for name, bus in sorted(s.get("modbus", {}).items()):
        meters = bus.get("meters", {})
        lines.append("modbus %s: %d meters, %d polls, %d timeouts, %d CRC errors" % (
            name, len(meters), sum(m.get("polls", 0) for m in meters.values()),
            sum(m.get("timeouts", 0) for m in meters.values()),
            sum(m.get("crc_errors", 0) for m in meters.values())))
    devices = s.get("devices", {})
    lines.append("devices heard: %d" % len(devices))
    if not pub.get("connected") and pub.get("last_error"):
        lines.append("warning: MQTT is down: %s" % pub["last_error"])
    return lines


def fetch(url: str, timeout_s: float = 10.0) -> dict:
    """The gateway's snapshot from its HTTP endpoint (OSError or ValueError if none)."""
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/status.json", timeout=timeout_s) as r:
        return json.load(r)


def main(args) -> int:
    if getattr(args, "url", None):
        try:
            s = fetch(args.url)
        except (OSError, ValueError) as exc:
            print("gateway status: %s does not answer: %s" % (args.url, exc))
            print("UNHEALTHY: no answer from the gateway at %s" % args.url)
            return 1
    else:
        try:
            with open(args.stats) as f:
                s = json.load(f)
        except (OSError, ValueError) as exc:
            print("gateway status: cannot read %s: %s" % (args.stats, exc), file=sys.stderr)
            return 2
    age = max(0.0, time.time() - float(s.get("time", 0)))
    for line in render(s, age):
        print(line)
    bad = verdict(s, age, args.max_age)
    for line in bad:
        print("UNHEALTHY: " + line)
    if not bad:
        print("healthy")
    return 1 if bad else 0

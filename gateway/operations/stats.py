"""Operator statistics: one JSON snapshot of every counter, written atomically, and its one-line
summary for the log.

Atomic because monitoring scripts and tests read ``stats.json`` while the gateway rewrites it:
the file is written to a temporary name in the same directory and renamed over the old one, so
a reader sees the previous or the new snapshot, never half of one.  The same writer produces
the ``--ready-file``.  The snapshot's sections are described in docs/operator-guide.md.
"""

from __future__ import annotations

import json
import os
import tempfile

__all__ = ["write_json_atomic", "summary_line"]


def write_json_atomic(path: str, obj: object) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _nonzero(d: dict, prefix: str = "", skip=()) -> str:
    parts = ["%s=%s" % (k[len(prefix):], v) for k, v in sorted(d.items())
             if k.startswith(prefix) and k not in skip and v]
    return ",".join(parts) or "-"


def summary_line(s: dict) -> str:
    """The log line for a snapshot: the numbers an operator looks at first."""
    fs = s["forwarder_server"]
    up = s["uplink"]
    pub = s["publisher"]
    q = s["queue"]
    intake = s["intake"]
    return ("stats: forwarders=%d uplinks=%d accepted=%d rejected[%s] joins=%d "
            "downlinks rx1=%d rx2=%d failed=%d queued=%d queue=%d backlog=%d dropped=%d "
            "published=%d acked_records=%d mqtt=%s malformed=%d" % (
                len(s["forwarders"]), fs.get("uplinks", 0), up.get("accepted", 0),
                _nonzero(up, skip=("accepted", "join")), fs.get("joins-accepted", 0),
                fs.get("downlink-rx1", 0), fs.get("downlink-rx2", 0), fs.get("downlink-failed", 0),
                intake.get("queued", 0), q.get("records", 0), intake.get("backlog", 0),
                intake.get("dropped", 0) + intake.get("too_large", 0), pub.get("published", 0),
                pub.get("acked_records", 0), "up" if pub.get("connected") else "down",
                fs.get("malformed", 0)))

"""The gateway's log lines: text for a person at a terminal, or one JSON object per line for a
log shipper (journald, Loki, Elasticsearch), which would otherwise have to parse free text.

JSON keys: ``ts`` (UTC, ISO 8601 with ms), ``level``, ``logger``, ``msg``, and ``exc`` with the
traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {"ts": "%s.%03dZ" % (ts, int(record.msecs)), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for [log] format ("text" or "json")."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)

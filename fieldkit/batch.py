"""Provisioning a CSV of devices in a row, resumable.

Why a journal: a batch of 200 poles stops (a cable, a flat laptop battery, a board that does not
answer); running the same command again must go on with the next device, not redo or duplicate
the ones done. Each finished DevEUI is appended to FILE.csv.done and fsync'd before the next row
starts; a row that stopped after its registry entry was written is finished with the registered
AppKey (provision(resume=True)), never registered twice.

CSV columns: kind, dev_eui (required); port, name, site, board, join_eui, app_key, label
(optional: an empty cell takes the command line's value or the default); any other column is a
config setting (its header the key, its cell the value, JSON or a string), empty cells skipped.
"""

import csv
import os

from fieldkit import device_config
from fieldkit.provision import NO_JOIN_SERVER, provision

_FIELDS = ("kind", "dev_eui", "port", "name", "site", "board", "join_eui", "app_key", "label")


class BatchError(ValueError):
    """The CSV itself is unusable (a missing column, a bad row): names the line."""


def read_rows(path):
    """[(line number, {field: value}, [(key, value) settings])] of the CSV."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise BatchError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in ("kind", "dev_eui") if c not in (reader.fieldnames or ())]
        if missing:
            raise BatchError("%s: missing column(s) %s" % (path, ", ".join(missing)))
        rows = []
        for row in reader:
            line = reader.line_num
            fields = dict((k, (row.get(k) or "").strip()) for k in _FIELDS)
            if not fields["kind"] or not fields["dev_eui"]:
                raise BatchError("%s line %d: kind and dev_eui must not be empty" % (path, line))
            settings = []
            for k, v in row.items():
                if k is None:
                    raise BatchError("%s line %d: more cells than columns" % (path, line))
                if k not in _FIELDS and v is not None and v.strip():
                    settings.append(device_config.parse_setting("%s=%s" % (k.strip(), v.strip())))
            rows.append((line, fields, settings))
    return rows


def journal_path(csv_path):
    return csv_path + ".done"


def done_set(csv_path):
    """DevEUIs (upper-case hex) already provisioned by earlier runs of this batch."""
    try:
        with open(journal_path(csv_path)) as f:
            return set(line.strip().upper() for line in f if line.strip())
    except FileNotFoundError:
        return set()


def _mark_done(csv_path, dev_eui):
    with open(journal_path(csv_path), "a") as f:
        f.write(dev_eui + "\n")
        f.flush()
        os.fsync(f.fileno())


def run(csv_path, registry, port=None, site="unassigned", join_eui=NO_JOIN_SERVER,
        label_dir=None, out=print, progress=None):
    """Provision every row not done yet; stops at the first failure (raised, naming the line),
    so the technician fixes it and runs the same command again. progress(done, total) is called
    after each row. -> (provisioned now, skipped as done before)."""
    rows = read_rows(csv_path)
    done = done_set(csv_path)
    now = skipped = 0
    for i, (line, f, settings) in enumerate(rows):
        eui = f["dev_eui"].replace(":", "").replace("-", "").upper()
        if eui in done:
            skipped += 1
        else:
            p = f["port"] or port
            if not p:
                raise BatchError("%s line %d: no port (give --port or a port column)"
                                 % (csv_path, line))
            label_path = f["label"] or (os.path.join(label_dir, eui + ".svg") if label_dir else None)
            try:
                r = provision(p, f["kind"], eui, registry, join_eui=f["join_eui"] or join_eui,
                              app_key=f["app_key"] or None, board=f["board"] or None,
                              site=f["site"] or site, name=f["name"] or None,
                              settings=settings, label_path=label_path, out=out, resume=True)
            except Exception as e:
                e.args = ("%s line %d: %s" % (csv_path, line, e),) + tuple(e.args[1:])
                raise
            _mark_done(csv_path, r.dev_eui)
            now += 1
        if progress is not None:
            progress(i + 1, len(rows))
    return now, skipped

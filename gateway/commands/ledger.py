"""The gateway's durable memory of commands: those waiting for their device, those sent and
waiting for its acknowledgement, the nonces of signed commands, and the results not yet
acknowledged by the broker (``<data_dir>/commands.db``).

Why on disk: a command for a class-A device can wait hours for the device's next uplink. A
gateway restart in that time must neither forget the command (the operator was told
"accepted") nor forget the nonces (a replay after a restart would run it twice), nor lose a
result the broker never acknowledged. Opened like the other SQLite files (sqlite_file):
WAL, synchronous=FULL, marked as ours.

Used from the event loop's thread only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.lorawan.device_queue import AppDownlink
from gateway.sqlite_file import FileMismatch, is_corrupt, prepare

__all__ = ["CommandLedger", "LedgerError", "Entry"]

APPLICATION_ID = 0x53474344  # "SGCD"
SCHEMA_VERSION = 1
NONCE_PRUNE_EVERY = 256  # inserts between deletions of nonces older than the window

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE commands (
    ref      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL,   -- the operator's command id
    dev_eui  BLOB    NOT NULL,
    fport    INTEGER NOT NULL,
    payload  BLOB    NOT NULL,
    label    TEXT    NOT NULL,
    dl_seq   INTEGER,            -- the command's seq field: the device's ack echoes it
    state    TEXT    NOT NULL,   -- 'waiting' for the device, or 'sent' (waiting for its ack)
    accepted REAL    NOT NULL,
    expires  REAL    NOT NULL
);
CREATE INDEX commands_ack ON commands (dev_eui, fport, dl_seq);
CREATE TABLE nonces (
    nonce TEXT PRIMARY KEY,
    ts    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    oid  INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL           -- one JSON result for the command-results topic
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


class LedgerError(Exception):
    """commands.db cannot be opened or written; the message names the file."""


@dataclass(frozen=True, slots=True)
class Entry:
    ref: int
    id: str
    dev_eui: bytes
    app: AppDownlink
    dl_seq: int | None
    state: str


class CommandLedger:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            prepare(self._db, path, label="command ledger", synchronous="FULL",
                    application_id=APPLICATION_ID, schema_version=SCHEMA_VERSION,
                    schema=_SCHEMA)
        except (sqlite3.Error, FileMismatch) as exc:
            kind = "corrupt" if isinstance(exc, sqlite3.Error) and is_corrupt(exc) else "unusable"
            raise LedgerError(f"command ledger {path!r} is {kind}: {exc}") from exc
        self._nonce_inserts = 0

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args=()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise LedgerError(f"command ledger {self.path!r}: {exc}") from exc

    # ---- nonces (gateway.commands.auth.CommandGate) -----------------------------------------

    def seen(self, nonce: str, ts: int, now: float, window_s: float) -> bool:
        """Record the nonce; True if it was there already. Nonces older than the window are
        forgotten now and then: their commands fail the timestamp check anyway."""
        self._nonce_inserts += 1
        if self._nonce_inserts % NONCE_PRUNE_EVERY == 0:
            self._write("DELETE FROM nonces WHERE ts < ?", (int(now - 2 * window_s),))
        return self._write("INSERT OR IGNORE INTO nonces VALUES (?, ?)",
                           (nonce, ts)).rowcount == 0

    # ---- commands ----------------------------------------------------------------------------

    def accept(self, cid: str, dev_eui: bytes, app: AppDownlink, dl_seq: int | None,
               now: float, ttl_s: float) -> AppDownlink:
        """Store a command that will wait for its device; -> the AppDownlink carrying its ref."""
        cur = self._write(
            "INSERT INTO commands (id, dev_eui, fport, payload, label, dl_seq, state, accepted, "
            "expires) VALUES (?, ?, ?, ?, ?, ?, 'waiting', ?, ?)",
            (cid, bytes(dev_eui), app.fport, bytes(app.payload), app.label, dl_seq, now,
             now + ttl_s))
        return AppDownlink(app.fport, app.payload, app.label, ref=cur.lastrowid)

    def _entry(self, row) -> Entry:
        ref, cid, dev, fport, data, label, dl_seq, state = row
        return Entry(ref, cid, bytes(dev), AppDownlink(fport, bytes(data), label, ref=ref),
                     dl_seq, state)

    _COLS = "ref, id, dev_eui, fport, payload, label, dl_seq, state"

    def get(self, ref: int) -> Entry | None:
        row = self._db.execute(f"SELECT {self._COLS} FROM commands WHERE ref = ?",
                               (ref,)).fetchone()
        return None if row is None else self._entry(row)

    def waiting(self) -> list[Entry]:
        """Commands still waiting for their device, oldest first (to queue again at start)."""
        return [self._entry(r) for r in self._db.execute(
            f"SELECT {self._COLS} FROM commands WHERE state = 'waiting' ORDER BY ref")]

    def mark_sent(self, ref: int) -> Entry | None:
        """The downlink left: the command now waits for the device's ack (or is done when it
        has no seq to ack). -> the entry, or None when unknown."""
        e = self.get(ref)
        if e is None:
            return None
        if e.dl_seq is None:
            self.remove(ref)
        else:
            self._write("UPDATE commands SET state = 'sent' WHERE ref = ?", (ref,))
        return e

    def acked(self, dev_eui: bytes, fport: int, dl_seq: int) -> Entry | None:
        """The sent command the device's ack (fPort, seq) answers, removed; None if none."""
        row = self._db.execute(
            f"SELECT {self._COLS} FROM commands WHERE dev_eui = ? AND fport = ? AND dl_seq = ? "
            "AND state = 'sent' ORDER BY ref LIMIT 1", (bytes(dev_eui), fport, dl_seq)).fetchone()
        if row is None:
            return None
        self.remove(row[0])
        return self._entry(row)

    def expire(self, now: float) -> list[Entry]:
        """Commands past their ttl (not sent, or sent and never acknowledged), removed."""
        rows = self._db.execute(f"SELECT {self._COLS} FROM commands WHERE expires <= ? "
                                "ORDER BY ref", (now,)).fetchall()
        if rows:
            self._write("DELETE FROM commands WHERE expires <= ?", (now,))
        return [self._entry(r) for r in rows]

    def remove(self, ref: int) -> None:
        self._write("DELETE FROM commands WHERE ref = ?", (ref,))

    def counts(self) -> dict:
        out = {"waiting": 0, "sent": 0}
        for state, n in self._db.execute("SELECT state, count(*) FROM commands GROUP BY state"):
            out[state] = n
        return out

    # ---- results outbox ----------------------------------------------------------------------

    def add_result(self, body: str) -> int:
        return self._write("INSERT INTO outbox (body) VALUES (?)", (body,)).lastrowid

    def results(self, after: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        return self._db.execute("SELECT oid, body FROM outbox WHERE oid > ? ORDER BY oid "
                                "LIMIT ?", (after, limit)).fetchall()

    def result_delivered(self, oid: int) -> None:
        self._write("DELETE FROM outbox WHERE oid = ?", (oid,))

    def outbox_size(self) -> int:
        return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

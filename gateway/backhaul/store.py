"""Durable on-disk record queue for the gateway (SQLite in WAL mode, stdlib ``sqlite3``).

Readings (CBOR-encoded SenML records from LoRaWAN and Modbus) are appended with
:meth:`RecordQueue.put` as soon as they arrive, the MQTT publisher builds size-bounded batches
with :meth:`RecordQueue.peek` and deletes them with :meth:`RecordQueue.ack` only after the
broker's PUBACK.  Nothing is held only in memory, so an uplink outage, a crash or a power cut
does not lose accepted readings.

Durability
    The database runs in WAL mode with ``PRAGMA synchronous=FULL`` (the default here): every
    commit fsyncs the write-ahead log before returning.  So once ``put`` (or
    ``ack``/``next_sequence``) returns, the change survives SIGKILL *and* power loss (given
    storage that honours fsync; cheap SD cards/USB sticks that lie about flushes are outside
    what software can fix).  ``synchronous=NORMAL`` is accepted for benchmarking or for storage
    where fsync is too slow: it still survives a process crash (SIGKILL) without corruption, but
    the most recent commits may be rolled back by a power cut. ``OFF`` is refused.  A newly
    created database file also has its directory fsynced.

Delivery semantics: at-least-once
    There are no leases: ``peek`` does not hide records.  After a crash, everything not yet
    acked is published again.  Consumers dedupe with the per-batch sequence number from
    :meth:`next_sequence` (persistent and strictly increasing, with gaps after a crash) and the record ids/timestamps
    inside the batch.

Bounded storage / back-pressure policy
    The queue never evicts an accepted record.  Each record is accounted as ``len(payload) +
    RECORD_OVERHEAD`` bytes (the overhead also bounds floods of tiny records); when a batch
    would take the total past ``max_bytes``, ``put`` raises :class:`QueueFull`
    (``reason="max_bytes"``) and stores *nothing* of that batch.  A real "database or disk is
    full" from SQLite raises :class:`QueueFull` (``reason="disk"``) as well, the failed
    transaction is rolled back, and the queue keeps working once space frees (acks free pages,
    which SQLite reuses).  The caller counts/logs the rejection and applies back-pressure (e.g.
    stop polling, keep the reading in its bounded in-RAM window, or drop it *explicitly* with a
    metric) -- the decision is visible, never silent.  The file size tracks ``max_bytes`` plus
    SQLite's page/index slack and a WAL bounded by ``journal_size_limit``.

Threading / asyncio
    The API is synchronous; every call is one short transaction (one fsync per commit).  From
    asyncio, calling it inline is acceptable for small batches; if fsync latency matters, run
    the calls in a thread executor (``await loop.run_in_executor(None, queue.put, records)``).
    The connection is opened with ``check_same_thread=False`` and every call is serialised by an
    internal lock, so one ``RecordQueue`` may be used from the event loop and executor threads.
    Only one process should own a queue file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from gateway.sqlite_file import FileMismatch, check_sync_mode, is_corrupt, is_full, prepare

__all__ = [
    "DEFAULT_MAX_BYTES",
    "QueueCorrupt",
    "QueueError",
    "QueueFull",
    "QueueStats",
    "Record",
    "RecordQueue",
    "RECORD_OVERHEAD",
]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53475131  # "SGQ1": marks the file as a streetgrid queue
RECORD_OVERHEAD = 64  # bytes accounted per record on top of its payload (row, index, metadata)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_KIND_LEN = 32
WAL_SIZE_LIMIT = 4 * 1024 * 1024  # WAL file is truncated back to this after checkpoints
_ID_CHUNK = 500  # ids per DELETE statement (stays below SQLite's host-parameter limit)
SEQUENCE_BLOCK = 64  # next_sequence values reserved per commit


class QueueError(Exception):
    """Any failure of the durable queue (the underlying ``sqlite3`` error is the ``__cause__``)."""


class QueueFull(QueueError):
    """The record batch was *not* stored: the queue is at ``max_bytes`` or storage is full.

    ``reason`` is ``"max_bytes"`` or ``"disk"``.  Nothing already accepted was evicted.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class QueueCorrupt(QueueError):
    """The file at the queue path is not a (healthy) streetgrid queue database."""


@dataclass(frozen=True, slots=True)
class Record:
    """A record to enqueue: an opaque payload (e.g. CBOR SenML) plus small metadata."""

    payload: bytes
    kind: str = ""  # e.g. "lorawan", "modbus"; at most MAX_KIND_LEN characters
    created: float | None = None  # UNIX time; defaults to the time of put()


@dataclass(frozen=True, slots=True)
class QueueStats:
    records: int
    payload_bytes: int
    used_bytes: int  # accounted bytes (payload + RECORD_OVERHEAD per record), compared to max_bytes
    max_bytes: int
    file_bytes: int  # database + WAL file sizes on disk
    oldest_id: int | None
    newest_id: int | None
    oldest_created: float | None = None  # UNIX time the oldest record was put


_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, even after acks
    created REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    payload BLOB    NOT NULL
);
CREATE TABLE usage (
    singleton     INTEGER PRIMARY KEY CHECK (singleton = 0),
    records       INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL
);
INSERT INTO usage VALUES (0, 0, 0);
CREATE TRIGGER records_after_insert AFTER INSERT ON records BEGIN
    UPDATE usage SET records = records + 1, payload_bytes = payload_bytes + length(NEW.payload)
    WHERE singleton = 0;
END;
CREATE TRIGGER records_after_delete AFTER DELETE ON records BEGIN
    UPDATE usage SET records = records - 1, payload_bytes = payload_bytes - length(OLD.payload)
    WHERE singleton = 0;
END;
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


class RecordQueue:
    """Durable FIFO of byte records on SQLite (see the module docstring for the guarantees)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        synchronous: str = "FULL",
        *,
        check_integrity: bool = True,
        timeout: float = 5.0,
    ) -> None:
        sync = check_sync_mode(synchronous)
        if max_bytes <= RECORD_OVERHEAD:
            raise ValueError(f"max_bytes must be > {RECORD_OVERHEAD}, not {max_bytes}")
        self.path = os.fspath(path)
        self.max_bytes = int(max_bytes)
        self.synchronous = sync
        self._lock = threading.Lock()
        self._seq_blocks: dict[str, list[int]] = {}  # name -> [next value, last reserved value]
        if os.path.isdir(self.path):
            raise QueueError(f"queue path {self.path!r} is a directory")
        try:
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open queue database {self.path!r}: {exc}") from exc
        try:
            self._setup(conn, check_integrity)
        except sqlite3.Error as exc:
            conn.close()
            if is_corrupt(exc):
                raise QueueCorrupt(
                    f"{self.path!r} is not a valid SQLite queue database ({exc}); "
                    "move it aside to start an empty queue"
                ) from exc
            if is_full(exc):
                raise QueueFull(
                    f"cannot initialise queue {self.path!r}: database or disk is full",
                    reason="disk",
                ) from exc
            raise QueueError(f"cannot open queue database {self.path!r}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def _setup(self, conn: sqlite3.Connection, check_integrity: bool) -> None:
        try:
            prepare(conn, self.path, label="queue", synchronous=self.synchronous,
                    application_id=APPLICATION_ID, schema_version=SCHEMA_VERSION, schema=_SCHEMA,
                    pragmas=(f"journal_size_limit={WAL_SIZE_LIMIT}",), check_integrity=check_integrity)
        except FileMismatch as exc:
            if exc.kind in ("integrity", "foreign"):
                raise QueueCorrupt(str(exc)) from exc
            raise QueueError(str(exc)) from exc

    # -- helpers -------------------------------------------------------------------------------

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueError(f"queue {self.path!r} is closed")
        return self._conn

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _translate(self, exc: sqlite3.Error, op: str) -> QueueError:
        if is_full(exc):
            return QueueFull(
                f"{op} on queue {self.path!r} failed: database or disk is full; nothing was "
                "written (retry after acks or after space frees)",
                reason="disk",
            )
        if is_corrupt(exc):
            return QueueCorrupt(f"{op} on queue {self.path!r} failed: corrupt database ({exc})")
        return QueueError(f"{op} on queue {self.path!r} failed: {exc}")

    # -- API -----------------------------------------------------------------------------------

    def put(self, records: Iterable[bytes | bytearray | memoryview | Record]) -> list[int]:
        """Append a batch atomically (one transaction, one fsync); return the new ids in order.

        Items are ``bytes``-like payloads or :class:`Record`.  When the function returns, every
        record is durable.  On :class:`QueueFull` (or any error) none of the batch was stored.
        A batch that could never fit (larger than ``max_bytes``) raises ``ValueError``.
        """
        now = time.time()
        rows: list[tuple[float, str, bytes]] = []
        batch_bytes = 0
        for item in records:
            if isinstance(item, Record):
                payload, kind, created = item.payload, item.kind, item.created
            elif isinstance(item, (bytes, bytearray, memoryview)):
                payload, kind, created = item, "", None
            else:
                raise TypeError(f"record must be bytes or Record, not {type(item).__name__}")
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            if not isinstance(kind, str) or len(kind) > MAX_KIND_LEN:
                raise ValueError(f"kind must be a str of at most {MAX_KIND_LEN} characters")
            payload = bytes(payload)
            rows.append((now if created is None else float(created), kind, payload))
            batch_bytes += len(payload) + RECORD_OVERHEAD
        if not rows:
            return []
        if batch_bytes > self.max_bytes:
            raise ValueError(
                f"batch of {len(rows)} records ({batch_bytes} accounted bytes) can never fit in "
                f"max_bytes={self.max_bytes}; split it"
            )
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                used = self._used_bytes(conn)
                if used + batch_bytes > self.max_bytes:
                    conn.execute("ROLLBACK")
                    raise QueueFull(
                        f"queue {self.path!r} is full: {used} of {self.max_bytes} bytes used, "
                        f"batch of {len(rows)} records needs {batch_bytes}; nothing was stored",
                        reason="max_bytes",
                    )
                ids = []
                for row in rows:
                    cur = conn.execute(
                        "INSERT INTO records (created, kind, payload) VALUES (?, ?, ?)", row
                    )
                    ids.append(cur.lastrowid)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._translate(exc, "put") from exc
            return ids

    def peek(self, max_records: int = 100, max_bytes: int | None = None,
             after_id: int | None = None) -> list[tuple[int, bytes]]:
        """Return up to ``max_records`` oldest ``(id, payload)`` pairs, FIFO, without removing them.

        The sum of the payload sizes stays within ``max_bytes`` -- except that the first record is
        always returned even if it alone is larger, so an oversized record cannot stall the queue.
        ``after_id``: only records with a larger id, so a publisher with batches in flight reads
        just the next batch instead of re-reading (and skipping) everything still unacknowledged.
        """
        if max_records <= 0:
            return []
        with self._lock:
            conn = self._require_open()
            out: list[tuple[int, bytes]] = []
            total = 0
            try:
                cur = conn.execute(
                    "SELECT id, payload FROM records WHERE id > ? ORDER BY id LIMIT ?",
                    (-1 if after_id is None else int(after_id), int(max_records)),
                )
                try:
                    for rid, payload in cur:
                        if out and max_bytes is not None and total + len(payload) > max_bytes:
                            break
                        out.append((rid, bytes(payload)))
                        total += len(payload)
                finally:
                    cur.close()  # end the read transaction so checkpoints are not held back
            except sqlite3.Error as exc:
                raise self._translate(exc, "peek") from exc
            return out

    def ack(self, ids: Iterable[int]) -> int:
        """Delete exactly these ids in one durable transaction; return how many existed.

        Idempotent: unknown or already-acked ids are ignored.  Call only after the broker's PUBACK.
        """
        unique = sorted({int(i) for i in ids})
        if not unique:
            return 0
        with self._lock:
            conn = self._require_open()
            deleted = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                for start in range(0, len(unique), _ID_CHUNK):
                    chunk = unique[start : start + _ID_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    cur = conn.execute(f"DELETE FROM records WHERE id IN ({marks})", chunk)
                    deleted += cur.rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._translate(exc, "ack") from exc
            return deleted

    def next_sequence(self, name: str) -> int:
        """Increment and return the persistent counter ``name`` (first value 1).

        Committed durably before returning, so a value is never handed out twice, even across
        SIGKILL or power loss.  Values are reserved ``SEQUENCE_BLOCK`` at a time (one commit,
        one fsync per block instead of per value: the publisher takes one per MQTT batch);
        :meth:`close` gives the unused rest back, so after a clean close the next value follows
        the last one, while after a crash up to ``SEQUENCE_BLOCK`` values are skipped.
        """
        with self._lock:
            conn = self._require_open()
            block = self._seq_blocks.get(name)
            if block is None or block[0] > block[1]:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO counters (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                        (name, SEQUENCE_BLOCK),
                    )
                    last = conn.execute(
                        "SELECT value FROM counters WHERE name = ?", (name,)
                    ).fetchone()[0]
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(conn)
                    raise self._translate(exc, "next_sequence") from exc
                block = self._seq_blocks[name] = [last - SEQUENCE_BLOCK + 1, last]
            value = block[0]
            block[0] += 1
            return value

    def _release_sequences(self, conn: sqlite3.Connection) -> None:
        """Give unused reserved sequence values back (clean close); a failure only skips them."""
        unused = [(b[0] - 1, name, b[1]) for name, b in self._seq_blocks.items() if b[0] <= b[1]]
        self._seq_blocks.clear()
        if not unused:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE counters SET value = ? WHERE name = ? AND value = ?", unused)
            conn.execute("COMMIT")
        except sqlite3.Error:
            self._rollback(conn)

    def stats(self) -> QueueStats:
        with self._lock:
            conn = self._require_open()
            try:
                records, payload_bytes = conn.execute(
                    "SELECT records, payload_bytes FROM usage WHERE singleton = 0"
                ).fetchone()
                oldest, newest = conn.execute("SELECT min(id), max(id) FROM records").fetchone()
                created = None if oldest is None else conn.execute(
                    "SELECT created FROM records WHERE id = ?", (oldest,)).fetchone()[0]
            except sqlite3.Error as exc:
                raise self._translate(exc, "stats") from exc
        file_bytes = 0
        for suffix in ("", "-wal"):
            try:
                file_bytes += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return QueueStats(
            records=records,
            payload_bytes=payload_bytes,
            used_bytes=payload_bytes + records * RECORD_OVERHEAD,
            max_bytes=self.max_bytes,
            file_bytes=file_bytes,
            oldest_id=oldest,
            newest_id=newest,
            oldest_created=created,
        )

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        records, payload_bytes = conn.execute(
            "SELECT records, payload_bytes FROM usage WHERE singleton = 0"
        ).fetchone()
        return payload_bytes + records * RECORD_OVERHEAD

    def __len__(self) -> int:
        return self.stats().records

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Give unused sequence values back, close the connection (checkpoints the WAL).
        Idempotent."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                self._release_sequences(conn)
                conn.close()

    def __enter__(self) -> RecordQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

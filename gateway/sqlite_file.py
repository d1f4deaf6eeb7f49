"""Opening one of the gateway's SQLite files durably: shared by the record queue and the session store.

Both keep data that must survive SIGKILL and power loss, so both open their file the same way:
WAL journal, a chosen `synchronous` level, and an application_id / user_version pair that marks
the file as ours, so a foreign or newer file is refused instead of being written into. A new file
gets its schema and a directory fsync (so the file's name is durable too).
"""

from __future__ import annotations

import os
import sqlite3

SYNC_MODES = ("NORMAL", "FULL", "EXTRA")


class FileMismatch(Exception):
    """The file opened but is not what the caller expects. kind: "wal", "integrity",
    "foreign" (another program's database) or "version" (another schema version)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def errcode(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # primary code of an extended code


def is_full(exc: sqlite3.Error) -> bool:
    return errcode(exc) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def is_corrupt(exc: sqlite3.Error) -> bool:
    return errcode(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        "file is not a database" in str(exc) or "malformed" in str(exc)
    )


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_sync_mode(synchronous: str) -> str:
    sync = str(synchronous).upper()
    if sync not in SYNC_MODES:
        raise ValueError(f"synchronous must be one of {SYNC_MODES}, not {synchronous!r}")
    return sync


def prepare(conn: sqlite3.Connection, path: str, *, label: str, synchronous: str,
            application_id: int, schema_version: int, schema: str,
            pragmas: tuple[str, ...] = (), check_integrity: bool = False) -> None:
    """Set WAL and synchronous, then create the schema in a new file or check an existing one.

    Raises FileMismatch, or sqlite3.Error (a non-SQLite file fails on the first statement with
    SQLITE_NOTADB) for the caller to translate into its own errors.
    """
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise FileMismatch("wal", f"could not put {path!r} in WAL mode (journal_mode={mode})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    if check_integrity:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            raise FileMismatch(
                "integrity", f"{path!r} failed SQLite quick_check: {'; '.join(map(str, result[:5]))}")
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").fetchone()[0]
        if tables:
            raise FileMismatch("foreign", f"{path!r} is an SQLite database but not a streetgrid {label}")
        try:
            conn.executescript(schema)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        fsync_dir(path)
    elif app_id != application_id:
        raise FileMismatch("foreign", f"{path!r} is an SQLite database but not a streetgrid {label} "
                                      f"(application_id={app_id:#x})")
    elif version != schema_version:
        raise FileMismatch("version", f"{path!r} has {label} schema version {version}, "
                                      f"expected {schema_version}")

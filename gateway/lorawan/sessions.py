"""Durable LoRaWAN 1.0.x session store on SQLite (one active session per device).

Durability is the same as gateway.backhaul.store.RecordQueue: WAL mode with ``PRAGMA
synchronous=FULL`` (every commit fsyncs the WAL before returning; ``NORMAL``/``EXTRA`` may be
chosen, ``OFF`` is refused), the directory is fsynced when the file is created, the file is
marked with its own ``application_id`` and ``user_version``.  Every mutating call is one
``BEGIN IMMEDIATE`` transaction, so when it returns the change survives SIGKILL and power loss.

Per device (DevEUI) the store keeps
    * the session: dev_addr, nwk_s_key, app_s_key, fcnt_up (last accepted uplink counter, or
      None before the first uplink), fcnt_down (the next downlink counter to use), join_time,
      join_nonce and dev_nonce of the join that created it;
    * join state that outlives sessions: the last JoinNonce issued (a per-device counter,
      strictly increasing as LoRaWAN 1.0.4 requires; first value 1), the last DevNonce
      accepted, and the set of all DevNonces accepted.

DevNonce policy (``dev_nonce_mode``)
    ``"counter"`` (default, LoRaWAN 1.0.4): DevNonce is a counter; any nonce <= the last
    accepted one is a replay.  ``"random"`` (fallback for LoRaWAN 1.0.2 devices with random
    DevNonces): only a nonce seen before is a replay.  The mode is a store default and can be
    overridden per call (the registry carries a per-device setting).  A nonce is recorded only
    by a successful :meth:`SessionStore.save_join`, i.e. after the caller has checked the MIC.

DevAddr allocation
    LoRaWAN 1.0 splits the 32-bit DevAddr into NwkID (7 MSBs) | NwkAddr (25 bits); NwkID is the
    7 LSBs of the NetID.  For the "private"/experimental NetIDs 0x000000 and 0x000001 and for
    type-0 NetIDs such as 0x000013 (The Things Network) this is exactly the LoRaWAN Backend
    Interfaces type-0 layout (prefix bit 0 + 6-bit NwkID), e.g. NetID 0x000013 -> DevAddrs
    0x26000000..0x27FFFFFF.  ``nwk_id`` (0..127) is configurable; ``SessionStore.for_net_id``
    derives it as ``net_id & 0x7F``.  NwkAddr is drawn at random (``secrets``) and checked
    against the store (``dev_addr`` is UNIQUE), so a DevAddr is never shared by two active
    sessions; a device that rejoins gets a fresh DevAddr and its old one is freed.

Frame counters
    :meth:`accept_uplink` moves fcnt_up forward only (a conditional UPDATE, atomic in SQLite);
    :meth:`accept_uplinks` does the same for a whole batch in one commit (one fsync);
    :meth:`next_fcnt_down` increments fcnt_down durably and returns the value to use, so call it
    *before* sending: a crash after it skips a counter value but never reuses one.

Cache: the store keeps the sessions it has read or written in memory, by DevAddr (at most
``max_cached``; all of them are loaded at open when they fit), and updates them only after a
successful COMMIT, so the uplink hot path
(:meth:`get_by_dev_addr`) does not hit SQLite each time.  Hence the file must not be changed
behind the back of an open store (only one process should own it anyway).

Threading: synchronous API, one internal lock, ``check_same_thread=False`` (event loop plus
executor threads may share one store).  Only one process should own the file.  Keys never
appear in ``repr()`` of :class:`Session`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from gateway.sqlite_file import FileMismatch, check_sync_mode, is_corrupt, prepare

__all__ = [
    "DevAddrExhausted", "DevNonceReplay", "JoinNonceExhausted", "Session", "SessionError",
    "SessionStore", "UnknownSession", "dev_addr_prefix",
]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53475332  # "SGS2": marks the file as a streetgrid session store
FCNT_MAX = 0xFFFFFFFF
JOIN_NONCE_MAX = 0xFFFFFF
_NONCE_MODES = ("counter", "random")
_ALLOC_TRIES = 64
DEFAULT_MAX_CACHED = 100_000  # sessions kept in memory (~0.5 KB each)
# Every accepted uplink rewrites one ~110-byte session row, and SQLite writes (WAL, then the
# checkpoint) whole pages: 1 KB pages write about a third of what the 4 KB default does per
# counter update (and are no slower), which matters on SD cards and eMMC.
PAGE_SIZE = 1024

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE devices (
    dev_eui         BLOB PRIMARY KEY,
    last_join_nonce INTEGER NOT NULL,
    last_dev_nonce  INTEGER
) WITHOUT ROWID;
CREATE TABLE dev_nonces (
    dev_eui BLOB    NOT NULL,
    nonce   INTEGER NOT NULL,
    PRIMARY KEY (dev_eui, nonce)
) WITHOUT ROWID;
CREATE TABLE sessions (
    dev_eui    BLOB PRIMARY KEY,
    dev_addr   INTEGER NOT NULL UNIQUE,
    nwk_s_key  BLOB NOT NULL,
    app_s_key  BLOB NOT NULL,
    fcnt_up    INTEGER,
    fcnt_down  INTEGER NOT NULL,
    join_time  REAL NOT NULL,
    join_nonce INTEGER NOT NULL,
    dev_nonce  INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
_COLS = "dev_eui, dev_addr, nwk_s_key, app_s_key, fcnt_up, fcnt_down, join_time, join_nonce, dev_nonce"


class SessionError(Exception):
    """Failure of the session store (an underlying sqlite3 error is the ``__cause__``)."""


class UnknownSession(SessionError, KeyError):
    """No session for that DevAddr."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DevNonceReplay(SessionError):
    """The join's DevNonce was already used (or, in counter mode, is not above the last one)."""


class JoinNonceExhausted(SessionError):
    """The device's 24-bit JoinNonce counter is used up."""


class DevAddrExhausted(SessionError):
    """No free DevAddr found in the NwkID prefix."""


@dataclass(frozen=True, slots=True)
class Session:
    dev_eui: bytes
    dev_addr: int
    nwk_s_key: bytes = field(repr=False)
    app_s_key: bytes = field(repr=False)
    fcnt_up: int | None  # last accepted uplink FCnt (full 32 bit), None before the first
    fcnt_down: int  # next downlink FCnt to use
    join_time: float
    join_nonce: int
    dev_nonce: int


def dev_addr_prefix(nwk_id: int) -> tuple[int, int]:
    """(first, last) DevAddr for a 7-bit NwkID."""
    if not isinstance(nwk_id, int) or not 0 <= nwk_id <= 0x7F:
        raise ValueError(f"NwkID must be 0..127, got {nwk_id!r}")
    return nwk_id << 25, (nwk_id << 25) | 0x1FFFFFF


class SessionStore:
    """See the module docstring."""

    def __init__(self, path: str | os.PathLike[str], nwk_id: int = 0, *,
                 dev_nonce_mode: str = "counter", synchronous: str = "FULL",
                 timeout: float = 5.0, max_cached: int = DEFAULT_MAX_CACHED) -> None:
        sync = check_sync_mode(synchronous)
        if dev_nonce_mode not in _NONCE_MODES:
            raise ValueError(f"dev_nonce_mode must be one of {_NONCE_MODES}, not {dev_nonce_mode!r}")
        self.addr_lo, self.addr_hi = dev_addr_prefix(nwk_id)
        self.nwk_id = nwk_id
        self.dev_nonce_mode = dev_nonce_mode
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self.max_cached = max(0, int(max_cached))
        self._cache: dict[int, Session] = {}  # dev_addr -> committed session (see docstring)
        if os.path.isdir(self.path):
            raise SessionError(f"session store path {self.path!r} is a directory")
        try:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise SessionError(f"cannot open session store {self.path!r}: {exc}") from exc
        try:
            self._setup(conn, sync)
        except sqlite3.Error as exc:
            conn.close()
            what = "corrupt or not an SQLite database" if is_corrupt(exc) else str(exc)
            raise SessionError(f"cannot open session store {self.path!r}: {what}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._preload()

    def _preload(self) -> None:
        """Fill the cache with every session when they all fit (one query at open instead of
        one per device on its first uplink: a restarted gateway is at full speed at once)."""
        conn = self._conn_or_raise()
        try:
            if conn.execute("SELECT count(*) FROM sessions").fetchone()[0] > self.max_cached:
                return
            for row in conn.execute(f"SELECT {_COLS} FROM sessions"):
                self._remember(Session(*row))
        except sqlite3.Error as exc:
            conn.close()
            self._conn = None
            raise SessionError(f"cannot read session store {self.path!r}: {exc}") from exc

    @classmethod
    def for_net_id(cls, path: str | os.PathLike[str], net_id: int, **kw) -> "SessionStore":
        """Store whose DevAddrs carry NwkID = net_id & 0x7F (LoRaWAN 1.0 rule)."""
        if not isinstance(net_id, int) or not 0 <= net_id <= 0xFFFFFF:
            raise ValueError(f"NetID must be a 24-bit int, got {net_id!r}")
        return cls(path, net_id & 0x7F, **kw)

    def _setup(self, conn: sqlite3.Connection, sync: str) -> None:
        # Only a new file takes it (before WAL is set); existing files keep theirs.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        try:
            prepare(conn, self.path, label="session store", synchronous=sync,
                    application_id=APPLICATION_ID, schema_version=SCHEMA_VERSION, schema=_SCHEMA)
        except FileMismatch as exc:
            raise SessionError(str(exc)) from exc

    # -- helpers -------------------------------------------------------------------------------

    def _conn_or_raise(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SessionError(f"session store {self.path!r} is closed")
        return self._conn

    def _write(self, op: str, fn, committed=None):
        """Run fn(conn) inside BEGIN IMMEDIATE ... COMMIT under the lock; then, still under the
        lock, committed(result) (cache updates: only what is durable gets cached)."""
        with self._lock:
            conn = self._conn_or_raise()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:  # the cache holds committed state only: still valid
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise SessionError(f"{op} on session store {self.path!r} failed: {exc}") from exc
                raise
            if committed is not None:
                committed(result)
            return result

    def _read(self, sql: str, args: tuple) -> Session | None:
        with self._lock:
            return self._read_locked(sql, args)

    def _read_locked(self, sql: str, args: tuple) -> Session | None:
        conn = self._conn_or_raise()
        try:
            row = conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise SessionError(f"read from session store {self.path!r} failed: {exc}") from exc
        return None if row is None else Session(*row)

    # -- API -----------------------------------------------------------------------------------

    def _remember(self, s: Session) -> None:
        """Cache a committed session (caller holds the lock)."""
        cache = self._cache
        if s.dev_addr not in cache and len(cache) >= self.max_cached:
            if not self.max_cached:
                return
            del cache[next(iter(cache))]  # oldest entry; it is simply read again when needed
        cache[s.dev_addr] = s

    def get_by_dev_addr(self, dev_addr: int) -> Session | None:
        s = self._cache.get(dev_addr)
        if s is not None:
            return s
        with self._lock:
            s = self._read_locked(f"SELECT {_COLS} FROM sessions WHERE dev_addr = ?", (dev_addr,))
            if s is not None:
                self._remember(s)
        return s

    def get_by_dev_eui(self, dev_eui: bytes) -> Session | None:
        return self._read(f"SELECT {_COLS} FROM sessions WHERE dev_eui = ?", (bytes(dev_eui),))

    def dev_nonce_seen(self, dev_eui: bytes, dev_nonce: int, dev_nonce_mode: str | None = None) -> bool:
        """Would save_join reject this DevNonce as a replay? (read-only check)"""
        mode = dev_nonce_mode or self.dev_nonce_mode
        with self._lock:
            return self._replayed(self._conn_or_raise(), bytes(dev_eui), dev_nonce, mode)

    @staticmethod
    def _replayed(conn: sqlite3.Connection, eui: bytes, nonce: int, mode: str) -> bool:
        if mode == "counter":
            row = conn.execute("SELECT last_dev_nonce FROM devices WHERE dev_eui = ?", (eui,)).fetchone()
            return row is not None and row[0] is not None and nonce <= row[0]
        return conn.execute("SELECT 1 FROM dev_nonces WHERE dev_eui = ? AND nonce = ?",
                            (eui, nonce)).fetchone() is not None

    def save_join(self, dev_eui: bytes, dev_nonce: int,
                  derive_keys: Callable[[int, int], tuple[bytes, bytes]], join_time: float,
                  *, dev_nonce_mode: str | None = None) -> Session:
        """Record an accepted join atomically and return the new session.

        In one transaction: reject a replayed DevNonce (DevNonceReplay; nothing written), take
        the device's next JoinNonce, allocate a free DevAddr, call ``derive_keys(join_nonce,
        dev_addr) -> (nwk_s_key, app_s_key)`` (pure crypto, no I/O), replace the device's
        session (fcnt_up None, fcnt_down 0) and record the DevNonce.  When this returns the
        session is durable, so the join-accept may be sent.
        """
        mode = dev_nonce_mode or self.dev_nonce_mode
        if mode not in _NONCE_MODES:
            raise ValueError(f"dev_nonce_mode must be one of {_NONCE_MODES}, not {mode!r}")
        if not isinstance(dev_nonce, int) or not 0 <= dev_nonce <= 0xFFFF:
            raise ValueError(f"DevNonce must be 0..65535, got {dev_nonce!r}")
        eui = bytes(dev_eui)
        if len(eui) != 8:
            raise ValueError(f"DevEUI must be 8 bytes, got {len(eui)}")

        freed: list[int] = []

        def committed(s: Session) -> None:
            for addr in freed:
                self._cache.pop(addr, None)
            self._remember(s)

        def tx(conn: sqlite3.Connection) -> Session:
            del freed[:]
            if self._replayed(conn, eui, dev_nonce, mode):
                raise DevNonceReplay(f"DevNonce {dev_nonce} already used by {eui.hex().upper()} ({mode} mode)")
            row = conn.execute("SELECT last_join_nonce, last_dev_nonce FROM devices WHERE dev_eui = ?",
                               (eui,)).fetchone()
            join_nonce = (row[0] if row else 0) + 1
            if join_nonce > JOIN_NONCE_MAX:
                raise JoinNonceExhausted(f"JoinNonce of {eui.hex().upper()} is exhausted")
            last_dn = dev_nonce if row is None or row[1] is None else max(row[1], dev_nonce)
            conn.execute(
                "INSERT INTO devices (dev_eui, last_join_nonce, last_dev_nonce) VALUES (?, ?, ?) "
                "ON CONFLICT(dev_eui) DO UPDATE SET last_join_nonce = excluded.last_join_nonce, "
                "last_dev_nonce = excluded.last_dev_nonce", (eui, join_nonce, last_dn))
            conn.execute("INSERT OR IGNORE INTO dev_nonces (dev_eui, nonce) VALUES (?, ?)", (eui, dev_nonce))
            freed.extend(r[0] for r in conn.execute(  # frees the old DevAddr
                "DELETE FROM sessions WHERE dev_eui = ? RETURNING dev_addr", (eui,)).fetchall())
            for _ in range(_ALLOC_TRIES):
                dev_addr = self.addr_lo | secrets.randbelow(0x2000000)
                if conn.execute("SELECT 1 FROM sessions WHERE dev_addr = ?", (dev_addr,)).fetchone() is None:
                    break
            else:
                raise DevAddrExhausted(f"no free DevAddr in NwkID {self.nwk_id:#04x} after {_ALLOC_TRIES} tries")
            nwk, app = derive_keys(join_nonce, dev_addr)
            s = Session(eui, dev_addr, bytes(nwk), bytes(app), None, 0, float(join_time),
                        join_nonce, dev_nonce)
            conn.execute(f"INSERT INTO sessions ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (s.dev_eui, s.dev_addr, s.nwk_s_key, s.app_s_key, s.fcnt_up, s.fcnt_down,
                          s.join_time, s.join_nonce, s.dev_nonce))
            return s

        return self._write("save_join", tx, committed)

    def accept_uplink(self, dev_addr: int, fcnt: int) -> bool:
        """Store fcnt as the last accepted uplink counter if it is ahead of it (or the first).

        Returns True when stored, False when fcnt is not ahead (a replay: leave the frame
        unprocessed).  Call only after the MIC held.  Raises UnknownSession.
        """
        if not isinstance(fcnt, int) or not 0 <= fcnt <= FCNT_MAX:
            raise ValueError(f"FCnt must be 0..{FCNT_MAX}, got {fcnt!r}")

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE sessions SET fcnt_up = ? WHERE dev_addr = ? "
                               "AND (fcnt_up IS NULL OR fcnt_up < ?)", (fcnt, dev_addr, fcnt))
            if cur.rowcount == 1:
                return True
            if conn.execute("SELECT 1 FROM sessions WHERE dev_addr = ?", (dev_addr,)).fetchone() is None:
                raise UnknownSession(f"no session for DevAddr {dev_addr:08X}")
            return False

        def committed(stored: bool) -> None:
            if stored:
                self._moved_up(dev_addr, fcnt)

        return self._write("accept_uplink", tx, committed)

    def accept_uplinks(self, uplinks: Iterable[tuple[int, int]]) -> list[bool | None]:
        """Group commit of :meth:`accept_uplink`: many ``(dev_addr, fcnt)`` in ONE transaction.

        Why: each commit fsyncs the WAL (~0.2 ms or far more on SD cards), so one commit per
        uplink caps a gateway at a few thousand uplinks/s; one per release batch does not.
        Pairs are applied in order with the same conditional UPDATE as accept_uplink, so two
        counters of one device in one batch behave as two calls.  Returns, per pair, True
        (stored), False (not ahead: a replay) or None (no session for that DevAddr) -- an
        unknown session does not fail the others.  All or nothing: when this returns every
        True is durable; on SessionError nothing was stored.  Bad counters raise ValueError
        before anything is written.
        """
        pairs = [(int(a), fcnt) for a, fcnt in uplinks]
        for _, fcnt in pairs:
            if not isinstance(fcnt, int) or not 0 <= fcnt <= FCNT_MAX:
                raise ValueError(f"FCnt must be 0..{FCNT_MAX}, got {fcnt!r}")
        if not pairs:
            return []

        def tx(conn: sqlite3.Connection) -> list[bool | None]:
            out: list[bool | None] = []
            for dev_addr, fcnt in pairs:
                cur = conn.execute("UPDATE sessions SET fcnt_up = ? WHERE dev_addr = ? "
                                   "AND (fcnt_up IS NULL OR fcnt_up < ?)", (fcnt, dev_addr, fcnt))
                if cur.rowcount == 1:
                    out.append(True)
                elif conn.execute("SELECT 1 FROM sessions WHERE dev_addr = ?",
                                  (dev_addr,)).fetchone() is None:
                    out.append(None)
                else:
                    out.append(False)
            return out

        def committed(out: list[bool | None]) -> None:
            for (dev_addr, fcnt), stored in zip(pairs, out):
                if stored:
                    self._moved_up(dev_addr, fcnt)

        return self._write("accept_uplinks", tx, committed)

    def next_fcnt_down(self, dev_addr: int) -> int:
        """Reserve the next downlink FCnt: durably incremented before it is returned.

        Raises UnknownSession, or SessionError when the 32-bit counter is used up (rejoin).
        """
        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("UPDATE sessions SET fcnt_down = fcnt_down + 1 WHERE dev_addr = ? "
                               f"AND fcnt_down <= {FCNT_MAX} RETURNING fcnt_down - 1",
                               (dev_addr,)).fetchone()
            if row is not None:
                return row[0]
            if conn.execute("SELECT 1 FROM sessions WHERE dev_addr = ?", (dev_addr,)).fetchone() is None:
                raise UnknownSession(f"no session for DevAddr {dev_addr:08X}")
            raise SessionError(f"downlink FCnt of DevAddr {dev_addr:08X} exhausted: the device must rejoin")

        def committed(used: int) -> None:
            c = self._cache.get(dev_addr)
            if c is not None:
                self._cache[dev_addr] = replace(c, fcnt_down=used + 1)

        return self._write("next_fcnt_down", tx, committed)

    def _moved_up(self, dev_addr: int, fcnt: int) -> None:
        c = self._cache.get(dev_addr)
        if c is not None:  # Session(...) directly: dataclasses.replace costs more on this hot path
            self._cache[dev_addr] = Session(c.dev_eui, dev_addr, c.nwk_s_key, c.app_s_key, fcnt,
                                            c.fcnt_down, c.join_time, c.join_nonce, c.dev_nonce)

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._cache.clear()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SessionStore {self.path!r} NwkID={self.nwk_id:#04x}>"

"""Uplink processing: one de-duplicated frame (gateway.lorawan.dedup.Uplink) -> SenML records or a reason.

:meth:`UplinkProcessor.process` does no network I/O (only the SessionStore's SQLite commit of
the frame counter) and never raises for anything a radio can send; every outcome is a
:class:`Result`.  Checks, in order, and the rejection reason of each (``REASONS``):

    "malformed"         the PHYPayload does not decode
    "join"              a join-request: not handled here.  The Result has ``kind == "join"``;
                        the caller passes ``result.uplink.phy`` to gateway.lorawan.join.handle_join_request
    "not-uplink"        a downlink data frame, a join-accept or a proprietary frame
    "unknown-dev-addr"  no session for the DevAddr (or its DevEUI left the registry)
    "fcnt-gap"          the counter is more than MAX_GAP ahead of the last one, or it would pass
                        32 bits ("overflow": the session is worn out, the device must rejoin;
                        the MIC cannot even be checked then)
    "bad-mic"           the MIC does not verify with the rebuilt counter
    "replay"            counter not ahead of the last accepted one (also when another worker
                        accepted the same counter first)
    "payload-error"     see below

Only a good MIC with a fresh counter moves the stored counter (``SessionStore.accept_uplink``),
and it is stored *before* the payload is decoded.  So a frame whose MIC holds but whose
FRMPayload does not decode (unknown fPort, bad version, wrong length, fPort of the other device
kind) still counts as received: fcnt moves, the Result has ``reason == "payload-error"``,
``error`` says why and ``payload_hex`` keeps the decrypted FRMPayload, so nothing authentic is
silently lost (the caller should log or queue it).

An accepted Result has ``records``: SenML records (RFC 8428 labels) for the decoded payload.
The first record carries ``bver`` (protocol.payload.SENML_BVER, since units such as Wh are
secondary), ``bn`` = ``"urn:dev:eui64:<deveui hex>:"`` and ``bt`` = the caller's epoch seconds;
each field record has ``n``, ``u`` (when it has a unit) and ``v`` / ``vb`` / ``vs``.  The
non-SenML ``lwm2m`` hint is dropped.  A frame without FRMPayload or on fPort 0 (MAC commands
only) is accepted with ``records == []`` and its ``mac_commands``.

Radio metadata on every Result that got that far: ``copies`` (one dict per forwarder copy:
forwarder, rssi, snr, freq, datr, tmst), ``fcnt``, ``fport``, ``dev_eui``, ``dev_addr``,
``kind`` ("data" or "join"), ``device_kind`` ("pole"/"meter") and ``message``.

``counters`` (a dict, REASONS plus "accepted") counts every outcome, for operators.

The processor sizes protocol.cipher's per-key caches to two session keys per registered
device, so that AES/CMAC contexts are built once per session, not once per uplink.

:meth:`UplinkProcessor.process_batch` gives the same Results for a list of uplinks (e.g. one
dedup release) with one frame-counter commit for all of them instead of one per uplink;
:meth:`UplinkProcessor.prepare_batch` gives them too but leaves that commit to the caller, who
stores the records first (gateway/lorawan/forwarders.py does: a record must never be lost to a counter
that was stored without it).
SessionError (storage failure) is *not* caught: that is a gateway fault, not a bad frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from gateway.lorawan.dedup import Uplink
from gateway.lorawan.registry import Registry
from gateway.lorawan.sessions import SessionStore, UnknownSession
from protocol import cipher as _cipher
from protocol import payload as _payload
from protocol.lorawan import frame as _frame
from protocol.lorawan import network_side as _network
from protocol.lorawan.fcnt import GAP_TOO_LARGE, OVERFLOW, REPLAY
from protocol.lorawan.session import open_data_frame
from protocol.lorawan import join as lw_join

__all__ = ["REASONS", "Result", "UplinkProcessor", "MIN_EPOCH"]

REASONS = ("malformed", "unknown-dev-addr", "bad-mic", "replay", "fcnt-gap", "payload-error",
           "not-uplink", "join")
MIN_EPOCH = 1 << 28  # SenML: smaller times are relative, so bt must be at least this


@dataclass(frozen=True, slots=True)
class Result:
    accepted: bool
    reason: str | None = None  # one of REASONS when not accepted
    kind: str | None = None  # "data" / "join" once the frame decoded
    uplink: Uplink | None = None  # the input (phy, copies, best())
    dev_eui: bytes | None = None
    dev_addr: int | None = None
    fcnt: int | None = None  # rebuilt 32-bit counter
    fport: int | None = None
    confirmed: bool = False
    device_kind: str | None = None  # registry kind: "pole" / "meter"
    message: str | None = None  # decoded message: "report" / "alarm" / "ack"
    records: list[dict] = field(default_factory=list)
    mac_commands: list | None = None
    payload_hex: str | None = None  # decrypted FRMPayload, kept on "payload-error"
    error: str | None = None  # detail for "malformed" / "payload-error"

    @property
    def copies(self) -> list[dict]:
        return [] if self.uplink is None else [m.as_dict() for m in self.uplink.copies]


class UplinkProcessor:
    """See the module docstring."""

    def __init__(self, registry: Registry, sessions: SessionStore) -> None:
        self.registry = registry
        self.sessions = sessions
        # protocol.cipher keeps one AES/CMAC context per key in bounded caches (4096 keys on
        # CPython).  A network server uses two session keys per device: a fleet larger than
        # the caches would rebuild OpenSSL contexts on every uplink (~25 us each time), so
        # size them to the registry (~1 KB per device).
        _cipher.CACHE_SIZE = max(_cipher.CACHE_SIZE, 2 * len(registry) + 64)
        self.counters: dict[str, int] = {r: 0 for r in ("accepted",) + REASONS}

    def _done(self, r: Result) -> Result:
        self.counters["accepted" if r.accepted else r.reason] += 1
        return r

    def process(self, uplink: Uplink, now_epoch_s: float) -> Result:
        """Authenticate, count and decode one uplink; ``now_epoch_s`` (UNIX seconds) becomes
        the SenML base time."""
        _check_time(now_epoch_s)
        step = self._open(uplink, None)
        if isinstance(step, Result):
            return self._done(step)
        try:
            stored = self.sessions.accept_uplink(step.dev_addr, step.fcnt)
        except UnknownSession:  # the device rejoined meanwhile
            stored = None
        return self._done(self._finish(step, stored, now_epoch_s))

    def process_batch(self, uplinks: Iterable[Uplink], now_epoch_s: float) -> list[Result]:
        """:meth:`process` for many uplinks with ONE frame-counter commit (group commit).

        Same checks, Results (in input order) and counters as calling :meth:`process` on each
        in turn: a device's later frame in the batch is checked against the counter its earlier
        frame moved.  Every counter is committed (``SessionStore.accept_uplinks``, one fsync)
        before any Result is returned, so the caller may queue the records right away.  On
        SessionError (storage failure) it raises, nothing is stored and nothing counted.
        """
        _check_time(now_epoch_s)
        steps: list[Result | _Pending] = []
        moved: dict[int, int] = {}  # dev_addr -> counter a frame earlier in this batch took
        for uplink in uplinks:
            step = self._open(uplink, moved)
            if not isinstance(step, Result):
                moved[step.dev_addr] = step.fcnt
            steps.append(step)
        pending = [st for st in steps if not isinstance(st, Result)]
        stored = iter(self.sessions.accept_uplinks([(p.dev_addr, p.fcnt) for p in pending]))
        return [self._done(st if isinstance(st, Result) else self._finish(st, next(stored), now_epoch_s))
                for st in steps]

    def prepare_batch(self, uplinks: Iterable[Uplink], now_epoch_s: float) -> "PreparedBatch":
        """:meth:`process_batch` with the frame-counter commit left to the caller, for when the
        records must be durable *before* the counters: the caller queues the accepted Results'
        records, then calls ``PreparedBatch.commit_counters()``.

        Why this order: a counter stored before its record means a crash between the two loses
        an uplink the device will never resend; a record stored before its counter means the
        same crash can at worst let a replay of that frame through once (a duplicate that
        consumers drop by DevEUI + FCnt).  Results are decided against the counters in memory
        (SessionStore's cache, the only writer) and counted at once; ``commit_counters`` returns
        the Results whose counter the store then refused after all (rejoined or moved on
        meanwhile) -- their records are already queued, so they are duplicates, not losses.
        """
        _check_time(now_epoch_s)
        steps: list[Result | _Pending] = []
        moved: dict[int, int] = {}
        for uplink in uplinks:
            step = self._open(uplink, moved)
            if not isinstance(step, Result):
                moved[step.dev_addr] = step.fcnt
            steps.append(step)
        results = [self._done(st if isinstance(st, Result) else self._finish(st, True, now_epoch_s))
                   for st in steps]
        pending = [(st, r) for st, r in zip(steps, results) if not isinstance(st, Result)]
        return PreparedBatch(self.sessions, results, pending)

    def _open(self, uplink: Uplink, moved: dict[int, int] | None) -> "Result | _Pending":
        """Every check up to the frame counter: a rejection Result (not yet counted), or the
        authentic frame waiting for its counter to be stored.  ``moved`` overrides the stored
        counter for devices whose earlier frame in the same batch is about to be stored."""
        phy = bytes(uplink.phy)
        try:
            f = _network.decode(phy)
        except Exception as exc:  # FrameError and anything a garbage buffer may provoke
            return Result(False, "malformed", uplink=uplink, error=str(exc))
        if isinstance(f, lw_join.JoinRequest):
            return Result(False, "join", "join", uplink, dev_eui=f.dev_eui)
        if not isinstance(f, _frame.DataFrame) or not f.is_uplink:
            return Result(False, "not-uplink", uplink=uplink)
        base = dict(kind="data", uplink=uplink, dev_addr=f.dev_addr, fport=f.fport,
                    confirmed=f.confirmed)
        s = self.sessions.get_by_dev_addr(f.dev_addr)
        dev = None if s is None else self.registry.get(s.dev_eui)
        if s is None or dev is None:
            return Result(False, "unknown-dev-addr", **base)
        base.update(dev_eui=s.dev_eui, device_kind=dev.kind)
        last = s.fcnt_up if not moved or f.dev_addr not in moved else moved[f.dev_addr]
        try:
            o = open_data_frame(f, s.nwk_s_key, s.app_s_key, last)
        except Exception as exc:  # defensive: the frame already decoded
            return Result(False, "malformed", error=str(exc), **base)
        base["fcnt"] = o.fcnt
        if o.fcnt_status == OVERFLOW:
            return Result(False, "fcnt-gap", error="frame counter overflow: rejoin", **base)
        if not o.mic_ok:
            return Result(False, "bad-mic", **base)
        if o.fcnt_status == REPLAY:
            return Result(False, "replay", **base)
        if o.fcnt_status == GAP_TOO_LARGE:
            return Result(False, "fcnt-gap", **base)
        return _Pending(f, s, dev, o, base)

    def _finish(self, p: "_Pending", stored: bool | None, now_epoch_s: float) -> Result:
        """The Result of an authentic frame once the store said whether its counter moved
        (True), was not ahead (False: replay) or had no session any more (None)."""
        f, s, dev, o, base = p.frame, p.session, p.device, p.opened, p.base
        if stored is None:  # the device rejoined meanwhile
            return Result(False, "unknown-dev-addr", **base)
        if not stored:
            return Result(False, "replay", **base)
        base["mac_commands"] = o.mac_commands
        if not f.fport:  # no FRMPayload, or MAC commands on fPort 0
            return Result(True, **base)
        try:
            records, message = decoded_records(f.fport, o.payload, dev.kind)
        except Exception as exc:  # PayloadError, or a decoder bug: keep the bytes either way
            return Result(False, "payload-error", payload_hex=o.payload.hex(), error=str(exc), **base)
        if records:
            records[0] = {"bver": _payload.SENML_BVER, "bn": f"urn:dev:eui64:{s.dev_eui.hex()}:",
                          "bt": now_epoch_s, **records[0]}
        return Result(True, message=message, records=records, **base)


def decoded_records(fport: int, payload: bytes, kind: str) -> tuple[list[dict], str]:
    """(SenML records, message) of a device's FRMPayload, by our payload tables; PayloadError
    when it does not decode or is another kind's payload."""
    decoded = _payload.decode_uplink(fport, payload)
    if decoded["kind"] != kind:
        raise _payload.PayloadError(
            f"fPort {fport} carries a {decoded['kind']} payload, device is a {kind}")
    records = _payload.senml_records(decoded)  # fresh dicts: drop the non-SenML hint in place
    for r in records:
        r.pop("lwm2m", None)
    return records, decoded["message"]


class PreparedBatch:
    """Results of :meth:`UplinkProcessor.prepare_batch` whose counters are not stored yet."""

    __slots__ = ("results", "_sessions", "_pending")

    def __init__(self, sessions: SessionStore, results: list[Result], pending: list) -> None:
        self.results = results
        self._sessions = sessions
        self._pending = pending  # (_Pending, Result) of the authentic, fresh frames

    def commit_counters(self) -> list[Result]:
        """Store every counter in one transaction; the Results the store refused (see
        prepare_batch).  Raises SessionError on a storage failure (nothing stored)."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        stored = self._sessions.accept_uplinks([(p.dev_addr, p.fcnt) for p, _ in pending])
        return [r for (_, r), ok in zip(pending, stored) if not ok]


class _Pending:
    """An authentic, fresh frame between its checks and the commit of its counter."""

    __slots__ = ("frame", "session", "device", "opened", "base")

    def __init__(self, frame, session, device, opened, base) -> None:
        self.frame, self.session, self.device, self.opened, self.base = (
            frame, session, device, opened, base)

    @property
    def dev_addr(self) -> int:
        return self.frame.dev_addr

    @property
    def fcnt(self) -> int:
        return self.opened.fcnt


def _check_time(now_epoch_s: float) -> None:
    if not isinstance(now_epoch_s, (int, float)) or not now_epoch_s >= MIN_EPOCH:
        raise ValueError(f"now_epoch_s must be absolute UNIX seconds, got {now_epoch_s!r}")

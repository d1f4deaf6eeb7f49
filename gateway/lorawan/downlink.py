"""Class-A downlink decisions, sans I/O: which receive window, the txpk, the ACK frame, and the
PULL_RESP tokens still waiting for their TX_ACK.

A class-A device listens twice after each uplink: RX1 at ``tmst + rx1 delay`` on the uplink's
frequency and a DR from the region's RX1 table, RX2 at ``tmst + rx2 delay`` on the region's
fixed RX2 frequency/DR (EU868 869.525 MHz DR0).  Delays: RECEIVE_DELAY1/2 (1 s / 2 s) after
data frames, JOIN_ACCEPT_DELAY1/2 (5 s / 6 s) after a join-request.

:func:`choose_window`: the PULL_RESP must reach the forwarder before the window, so when the
real time since the first copy arrived plus ``margin_s`` has passed the RX1 delay, RX1 is
skipped and RX2 used directly; past the RX2 delay too, nothing is sent.

:class:`DownlinkTracker` remembers each PULL_RESP by its token until its TX_ACK (same token,
same forwarder) arrives.  A refused RX1 (``RETRY_IN_RX2``: TOO_LATE, TOO_EARLY,
COLLISION_PACKET, COLLISION_BEACON) is worth one retry in RX2 through the same forwarder
(the frame was not sent, so its FCntDown is not spent on air).  Any other refusal (TX_FREQ,
TX_POWER, GPS_UNLOCKED) would fail again and is final.  Entries without a TX_ACK (protocol v1
forwarders never send one) expire after ``expiry_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.lorawan.dedup import RadioMeta
from gateway.lorawan.device_queue import AppDownlink
from gateway.lorawan.sessions import SessionStore, UnknownSession
from protocol import gwmp
from protocol.lorawan import frame as _frame
from protocol.lorawan import network_side
from protocol.lorawan.region import Region
from protocol.lorawan.session import build_data_frame

__all__ = ["RETRY_IN_RX2", "DOWNLINK_POWE", "DOWNLINK_CODR", "Pending", "DownlinkTracker",
           "choose_window", "class_a_txpk", "ack_frame", "data_down_frame", "mac_answers"]

RETRY_IN_RX2 = frozenset(("TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "COLLISION_BEACON"))
DOWNLINK_POWE = 14  # dBm: within EU868 RX1 (16) and RX2 (27) limits and KR920's 14 from 922.1 MHz
DOWNLINK_CODR = "4/5"


def choose_window(elapsed_s: float, rx1_delay_us: int, rx2_delay_us: int,
                  margin_s: float) -> str | None:
    """"rx1", "rx2" or None (too late for both) for a downlink decided ``elapsed_s`` after the
    uplink's first copy arrived."""
    if elapsed_s + margin_s < rx1_delay_us / 1e6:
        return "rx1"
    if elapsed_s + margin_s < rx2_delay_us / 1e6:
        return "rx2"
    return None


def class_a_txpk(region: Region, copy: RadioMeta, phy: bytes, window: str, rx1_delay_us: int,
                 rx2_delay_us: int, rx1_dr_offset: int = 0) -> gwmp.Txpk:
    """The txpk answering the uplink ``copy`` (as heard by the forwarder that will send it) in
    ``window``.  Raises RegionError for an uplink frequency/datr the region does not have."""
    if window == "rx1":
        freq, dr = region.rx1(copy.freq_hz, gwmp.dr_from_datr(region, copy.datr), rx1_dr_offset)
        tmst = copy.tmst + rx1_delay_us
    elif window == "rx2":
        freq, dr = region.rx2_frequency, region.rx2_dr
        tmst = copy.tmst + rx2_delay_us
    else:
        raise ValueError(f"window must be 'rx1' or 'rx2', not {window!r}")
    return gwmp.Txpk.for_class_a(tmst, freq, gwmp.datr_string(region, dr), DOWNLINK_CODR,
                                 DOWNLINK_POWE, phy)


def data_down_frame(sessions: SessionStore, dev_addr: int, ack: bool, fport: int | None = None,
                    payload: bytes = b"", fpending: bool = False, fopts: list = ()) -> bytes:
    """UnconfirmedDown answering an uplink: FCtrl.ACK when it was confirmed, an application
    payload (encrypted with AppSKey) on fport when one waits, FPending when more wait, MAC
    answers (dicts, see mac_answers) in FOpts; the session's next FCntDown.

    The counter is reserved durably first (SessionStore.next_fcnt_down), so it is never reused
    even if the gateway dies before sending.  Raises UnknownSession / SessionError.
    """
    fcnt = sessions.next_fcnt_down(dev_addr)
    s = sessions.get_by_dev_addr(dev_addr)
    if s is None:
        raise UnknownSession(f"no session for DevAddr {dev_addr:08X}")
    return build_data_frame(_frame.UNCONFIRMED_DOWN, dev_addr, fcnt, fport, payload, s.nwk_s_key,
                            s.app_s_key, fopts=list(fopts), ack=ack, fpending=fpending)


def ack_frame(sessions: SessionStore, dev_addr: int) -> bytes:
    """The bare ACK: UnconfirmedDown, FCtrl.ACK, no FPort/FRMPayload (see data_down_frame)."""
    return data_down_frame(sessions, dev_addr, True)


# Demodulation floor (dB SNR) per spreading factor (Semtech SX127x datasheet), for LinkCheckAns
DEMOD_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}


def mac_answers(mac_commands: list | None, copies: list, uplink_unix_s: float,
                region: Region) -> list[dict]:
    """Answers to the device's MAC requests the network must answer: LinkCheckReq (margin =
    best SNR above the demodulation floor of the uplink's SF, gateway count = forwarders that
    heard it) and DeviceTimeReq (GPS time of the uplink, 1/256 s).  Other commands are answers
    to requests this gateway never sends, and get none."""
    out: list[dict] = []
    for c in mac_commands or ():
        name = c.get("name")
        if name == "LinkCheckReq" and copies:
            best = max((m.snr for m in copies if m.snr is not None), default=None)
            try:
                sf = region.data_rate(gwmp.dr_from_datr(region, copies[0].datr)).sf
            except (ValueError, TypeError):
                sf = None
            floor = DEMOD_FLOOR_DB.get(sf)
            margin = 0 if best is None or floor is None else int(round(best - floor))
            out.append({"name": "LinkCheckAns", "margin": max(0, min(254, margin)),
                        "gw_cnt": min(255, len({m.forwarder for m in copies}))})
        elif name == "DeviceTimeReq":
            ans = network_side.device_time_ans(int(uplink_unix_s * 1000))  # GPS epoch, leap seconds
            out.append({"name": ans["name"], "seconds": ans["seconds"],
                        "fractional": ans["fractional"]})
    return out


@dataclass(slots=True)
class Pending:
    """One PULL_RESP waiting for its TX_ACK."""

    token: int
    forwarder: str  # gateway EUI, upper-case hex
    copy: RadioMeta  # that forwarder's copy of the uplink (tmst, freq, datr)
    phy: bytes
    window: str  # "rx1" / "rx2"
    rx1_delay_us: int
    rx2_delay_us: int
    what: str  # "join-accept" / "ack" / "downlink" (application payload, maybe with ACK)
    sent: float  # monotonic seconds
    dev_eui: bytes | None = None
    app: AppDownlink | None = None  # the application downlink carried, requeued on failure


class DownlinkTracker:
    """Tokens of sent PULL_RESPs, see the module docstring."""

    def __init__(self, expiry_s: float = 15.0, max_pending: int = 4096) -> None:
        self.expiry_s = expiry_s
        self.max_pending = max_pending
        self._pending: dict[int, Pending] = {}
        self._token = 0

    def __len__(self) -> int:
        return len(self._pending)

    def next_token(self) -> int:
        """A 16-bit token not in use (wraps; in-use tokens are skipped)."""
        for _ in range(0x10000):
            self._token = (self._token + 1) & 0xFFFF
            if self._token not in self._pending:
                return self._token
        raise RuntimeError("all 65536 PULL_RESP tokens are pending")  # max_pending prevents it

    def add(self, p: Pending) -> list[Pending]:
        """Remember p; returns the entries evicted to stay within max_pending (oldest first)."""
        evicted = []
        while len(self._pending) >= self.max_pending:
            token = next(iter(self._pending))
            evicted.append(self._pending.pop(token))
        self._pending[p.token] = p
        return evicted

    def take(self, token: int, forwarder: str) -> Pending | None:
        """The entry this TX_ACK answers (removed), or None for an unknown token/forwarder."""
        p = self._pending.get(token)
        if p is None or p.forwarder != forwarder:
            return None
        return self._pending.pop(token)

    def expire(self, now: float) -> list[Pending]:
        """Remove and return entries older than expiry_s (their TX_ACK never came)."""
        out = []
        while self._pending:
            token, p = next(iter(self._pending.items()))
            if now - p.sent < self.expiry_s:
                break
            out.append(self._pending.pop(token))
        return out

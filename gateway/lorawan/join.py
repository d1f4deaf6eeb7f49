"""Join server: turn a join-request PHYPayload into a durable session and a join-accept.

:func:`handle_join_request` does no network I/O (only the SessionStore's SQLite commit) and
never raises for anything a radio can send: every rejection comes back as a
``JoinResult(accepted=False, reason=...)`` for the caller to count and log.  Reasons:

    "malformed"          not decodable, or not a join-request
    "unknown-device"     DevEUI not in the registry
    "bad-mic"            MIC does not verify with the device's AppKey
    "join-eui-mismatch"  authentic, but JoinEUI differs from the registry (misconfiguration)
    "dev-nonce-replay"   DevNonce already used (1.0.4 counter rule, or 1.0.2 "seen" rule per
                         the device's registry ``dev_nonce`` setting)
    "join-nonce-exhausted", "dev-addr-exhausted"   store limits reached

Checks run in that order; the MIC is verified before anything is written, so forged frames
cannot burn DevNonces.  On success the session (DevAddr, keys, counters, the DevNonce and the
per-device JoinNonce) is committed *before* the accept bytes are returned.  The caller sends
``phy`` in the RX1 window ``rx1_delay_us`` after the uplink (``tmst + rx1_delay_us``), or RX2
``rx2_delay_us`` after it on the region's RX2 channel; these are the region's JOIN_ACCEPT_DELAY1/2.
SessionError (storage failure) is *not* caught: that is a gateway fault, not a bad frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.lorawan.registry import Registry
from gateway.lorawan.sessions import (DevAddrExhausted, DevNonceReplay, JoinNonceExhausted, Session,
                              SessionStore)
from protocol.lorawan import network_side as _network
from protocol.lorawan.region import Region
from protocol.lorawan.network_side import build_join_accept, open_join_request
from protocol.lorawan.join import JoinRequest, derive_session_keys

__all__ = ["JoinResult", "handle_join_request", "REASONS"]

REASONS = ("malformed", "unknown-device", "bad-mic", "join-eui-mismatch", "dev-nonce-replay",
           "join-nonce-exhausted", "dev-addr-exhausted")


@dataclass(frozen=True, slots=True)
class JoinResult:
    accepted: bool
    reason: str | None = None  # one of REASONS when rejected
    dev_eui: bytes | None = None  # when the frame decoded
    dev_nonce: int | None = None
    phy: bytes | None = None  # join-accept PHYPayload to transmit
    session: Session | None = None  # the persisted session (repr hides keys)
    rx1_delay_us: int | None = None  # JOIN_ACCEPT_DELAY1 after the uplink
    rx2_delay_us: int | None = None  # JOIN_ACCEPT_DELAY2 after the uplink


def handle_join_request(phy: bytes, registry: Registry, sessions: SessionStore, net_id: int,
                        region: Region, now: float, *, rx1_dr_offset: int = 0,
                        rx2_dr: int | None = None, rx_delay: int | None = None) -> JoinResult:
    """Validate a join-request, persist the new session, return the join-accept and timing.

    net_id: 24-bit NetID put in the accept (and mixed into the keys); the DevAddr prefix is the
    SessionStore's NwkID.  now: UNIX time stored as the join time.  rx2_dr defaults to the
    region's RX2 DR; rx_delay (RX1 delay for data frames, seconds, wire value) to the region's
    RECEIVE_DELAY1.
    """
    for name, v, hi in (("net_id", net_id, 0xFFFFFF), ("rx1_dr_offset", rx1_dr_offset, 7),
                        ("rx2_dr", rx2_dr, 15), ("rx_delay", rx_delay, 15)):
        if v is not None and (type(v) is not int or not 0 <= v <= hi):
            raise ValueError(f"{name} must be 0..{hi}, got {v!r}")  # caller bug, not a bad frame
    try:
        j = _network.decode(bytes(phy))
    except Exception:  # FrameError and anything a garbage buffer may provoke
        return JoinResult(False, "malformed")
    if not isinstance(j, JoinRequest):
        return JoinResult(False, "malformed")
    dev = registry.get(j.dev_eui)
    if dev is None:
        return JoinResult(False, "unknown-device", j.dev_eui, j.dev_nonce)
    open_join_request(j, dev.app_key)
    if not j.mic_ok:
        return JoinResult(False, "bad-mic", j.dev_eui, j.dev_nonce)
    if j.join_eui != dev.join_eui:
        return JoinResult(False, "join-eui-mismatch", j.dev_eui, j.dev_nonce)
    if rx2_dr is None:
        rx2_dr = region.rx2_dr
    if rx_delay is None:
        rx_delay = _network.RECEIVE_DELAY1_US // 1_000_000
    dev_nonce = j.dev_nonce

    def keys(join_nonce: int, dev_addr: int) -> tuple[bytes, bytes]:
        return derive_session_keys(dev.app_key, join_nonce, net_id, dev_nonce)

    try:
        s = sessions.save_join(dev.dev_eui, dev_nonce, keys, now, dev_nonce_mode=dev.dev_nonce_mode)
    except DevNonceReplay:
        return JoinResult(False, "dev-nonce-replay", j.dev_eui, dev_nonce)
    except JoinNonceExhausted:
        return JoinResult(False, "join-nonce-exhausted", j.dev_eui, dev_nonce)
    except DevAddrExhausted:
        return JoinResult(False, "dev-addr-exhausted", j.dev_eui, dev_nonce)
    accept = build_join_accept(dev.app_key, s.join_nonce, net_id, s.dev_addr, rx1_dr_offset,
                               rx2_dr, rx_delay)
    return JoinResult(True, None, j.dev_eui, dev_nonce, accept, s,
                      _network.JOIN_ACCEPT_DELAY1_US, _network.JOIN_ACCEPT_DELAY2_US)

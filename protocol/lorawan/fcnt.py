"""Rebuilding the 32-bit LoRaWAN frame counter from the 16 bits that travel on the air.

Policy (rebuild_fcnt): let d = (fcnt16 - last) mod 2**16, the forward distance on the 16-bit
circle from the last full counter accepted.

* d == 0: the last frame again -> `last` (a replay, or a retransmission; see check_fcnt).
* 1 <= d <= max(max_gap, 0x7FFF): the counter moved forward -> last + d. This is the usual
  "(last & 0xFFFF0000) | fcnt16, plus 0x10000 if that is below last" rule, restricted to
  forward steps; it is exact for any true counter within max_gap after last.
* otherwise the nearer reading is "behind": last - (2**16 - d), i.e. an old frame replayed or
  a device whose counter was reset by a reboot (the common field failure), unless that would
  be negative, then last + d.

The rebuilt value can thus be <= last (a replay), more than max_gap ahead, or beyond 32 bits
(the session is worn out and must rejoin). rebuild_fcnt never decides; check_fcnt classifies:

* "ok": last < fcnt <= last + max_gap (or a fresh session): verify the MIC with fcnt and,
  only if it holds, store fcnt as the new last.
* "replay": fcnt <= last. Drop the frame (a confirmed uplink repeated with the same counter
  is a retransmission in 1.0.4: answer it without processing it again, if you track that).
* "gap-too-large": more than max_gap frames lost, or a misread counter. Drop it; The Things
  Stack does the same above 16384.
* "overflow": fcnt > 0xFFFFFFFF. The session keys must not be used again: rejoin.

Only the MIC tells whether a rebuilt value is right, so never move `last` on a frame whose
MIC failed.
"""

MAX_GAP = 16384  # The Things Stack's limit (LoRaWAN 1.0 MAX_FCNT_GAP)
FCNT_MAX = 0xFFFFFFFF

OK = "ok"
REPLAY = "replay"
GAP_TOO_LARGE = "gap-too-large"
OVERFLOW = "overflow"


def _check(fcnt16, last_fcnt, max_gap):
    if not isinstance(fcnt16, int) or not 0 <= fcnt16 <= 0xFFFF:
        raise ValueError("FCnt wire value must be 0..65535, got %r" % (fcnt16,))
    if last_fcnt is not None and (not isinstance(last_fcnt, int) or not 0 <= last_fcnt <= FCNT_MAX):
        raise ValueError("last FCnt must be None or 0..%d, got %r" % (FCNT_MAX, last_fcnt))
    if not isinstance(max_gap, int) or not 1 <= max_gap <= 0xFFFF:
        raise ValueError("max_gap must be 1..65535 (16 wire bits cannot tell more), got %r" % (max_gap,))


def rebuild_fcnt(fcnt16, last_fcnt, max_gap=MAX_GAP):
    """Full counter for the wire value fcnt16, given the last accepted counter (None for a
    fresh session, which yields fcnt16). See the module docstring for the policy."""
    _check(fcnt16, last_fcnt, max_gap)
    if last_fcnt is None:
        return fcnt16
    return rebuild_unchecked(fcnt16, last_fcnt, max_gap)


def rebuild_unchecked(fcnt16, last_fcnt, max_gap):
    """rebuild_fcnt without argument checks, for callers that validated them (hot path)."""
    d = (fcnt16 - last_fcnt) & 0xFFFF
    if d <= max_gap or d <= 0x7FFF:
        return last_fcnt + d
    back = last_fcnt - (0x10000 - d)
    return back if back >= 0 else last_fcnt + d


def check_fcnt(fcnt, last_fcnt, max_gap=MAX_GAP):
    """Classify a rebuilt counter: "ok", "replay", "gap-too-large" or "overflow"."""
    if fcnt > FCNT_MAX:
        return OVERFLOW
    if last_fcnt is None:
        return OK
    if fcnt <= last_fcnt:
        return REPLAY
    if fcnt - last_fcnt > max_gap:
        return GAP_TOO_LARGE
    return OK

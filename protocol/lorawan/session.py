"""Frames plus crypto: what a device and a network server do with a LoRaWAN 1.0.x session.

Sans-I/O and stateless: the caller keeps the keys and the last frame counter, and decides
what to do with a frame from `mic_ok` and `fcnt_status` (see protocol.lorawan.fcnt). Only
the caller may move its stored counter, and only after a good MIC.

Building a join-request and opening a join-accept are protocol.lorawan.join's; building
join-accepts and opening join-requests are the network server's (protocol.lorawan.network_side).

open_data_frame is the gateway's hot path (tens of thousands of uplinks per second on
CPython): it decodes once, MACs the received bytes as they are, and decrypts only frames
whose MIC holds.
"""

from protocol.lorawan import frame as _frame
from protocol.lorawan import security
from protocol.lorawan import fcnt as _fcnt
from protocol.lorawan.fcnt import FCNT_MAX, MAX_GAP, OK, OVERFLOW, REPLAY, GAP_TOO_LARGE
from protocol.lorawan.frame import DataFrame, FrameError

class OpenedFrame:
    """Result of open_data_frame.

    frame: the DataFrame (frm_payload still encrypted); fcnt: the rebuilt 32-bit counter;
    fcnt_status: "ok" / "replay" / "gap-too-large" / "overflow"; mic_ok: bool;
    payload: decrypted FRMPayload (b"" when absent, None when the MIC failed);
    mac_commands: list of dicts from FOpts or from FRMPayload on FPort 0 (None when the MIC
    failed); mac_error: None, or why MAC command parsing stopped (mac_commands then holds
    the commands before that point).
    """

    def __init__(self, frame, fcnt, fcnt_status, mic_ok, payload, mac_commands, mac_error):
        self.frame = frame
        self.fcnt = fcnt
        self.fcnt_status = fcnt_status
        self.mic_ok = mic_ok
        self.payload = payload
        self.mac_commands = mac_commands
        self.mac_error = mac_error

    @property
    def accept(self):
        """True when the frame is authentic and its counter is fresh."""
        return self.mic_ok and self.fcnt_status == OK


def _mac():
    """The MAC command codec, imported for the frames that carry commands only: a device's
    frames rarely do, and it unloads the codec after them (firmware.lorawan.mac_answers)."""
    from protocol.lorawan import mac

    return mac


def build_data_frame(mtype, dev_addr, fcnt, fport, payload, nwk_s_key, app_s_key, fopts=b"",
                     adr=False, ack=False, adr_ack_req=False, fpending=False, class_b=False,
                     backend=None):
    """Encrypt, frame and sign a data frame -> PHYPayload bytes.

    fcnt is the full 32-bit counter (its low 16 bits go on the air). FRMPayload is encrypted
    with AppSKey for fport > 0 and NwkSKey for fport 0; the MIC uses NwkSKey. fopts (and the
    payload on FPort 0) may be given as bytes or as a list of MAC command dicts.
    """
    if not isinstance(mtype, int) or mtype < _frame.UNCONFIRMED_UP or mtype > _frame.CONFIRMED_DOWN:
        raise FrameError("not a data MType: %r" % (mtype,))
    _frame._check_int(dev_addr, "DevAddr", 32)
    _frame._check_int(fcnt, "FCnt", 32)
    direction = mtype & 1
    uplink = direction == 0
    if isinstance(fopts, list):
        fopts = _mac().encode_commands(fopts, uplink)
    if isinstance(payload, list):
        if fport != 0:
            raise FrameError("MAC commands as payload need FPort 0, got %r" % (fport,))
        payload = _mac().encode_commands(payload, uplink)
    if payload and fport is not None:
        _frame._check_int(fport, "FPort", 8)
        enc = security.crypt_frm_payload(app_s_key if fport else nwk_s_key, direction, dev_addr, fcnt, payload, backend)
    else:
        enc = payload  # empty, or no FPort: encode_data_signed_part reports it
    f = DataFrame(mtype, dev_addr, fcnt & 0xFFFF, fport, enc, fopts, adr, adr_ack_req, ack,
                  fpending, class_b)
    signed = _frame.encode_data_signed_part(f)
    return signed + security.compute_mic(nwk_s_key, direction, dev_addr, fcnt, signed, backend)


def open_data_frame(phy, nwk_s_key, app_s_key, last_fcnt=None, max_gap=MAX_GAP,
                    backend=None):
    """Decode, rebuild FCnt, verify the MIC and decrypt -> OpenedFrame.

    last_fcnt: the last accepted full counter of this session for the frame's direction
    (None for a fresh session). Raises FrameError for malformed frames; a wrong MIC or a
    stale counter is reported, not raised.
    """
    f = phy
    if type(f) is not DataFrame:
        if type(f) is not bytes:
            if not isinstance(f, (bytearray, memoryview)):
                raise FrameError("PHYPayload must be bytes or a DataFrame, got %s" % type(f).__name__)
            f = bytes(f)
        f = _frame.decode_data(f)
    if last_fcnt is None:
        fcnt = f.fcnt16
        status = OK
    else:
        if not 0 <= last_fcnt <= FCNT_MAX or not 1 <= max_gap <= 0xFFFF:
            _fcnt.rebuild_fcnt(0, last_fcnt, max_gap)  # raises ValueError with the details
        # Same policy as fcnt.rebuild_fcnt / check_fcnt, inlined for the hot path.
        fcnt = _fcnt.rebuild_unchecked(f.fcnt16, last_fcnt, max_gap)
        if fcnt > FCNT_MAX:
            return OpenedFrame(f, fcnt, OVERFLOW, False, None, None, None)
        status = OK if last_fcnt < fcnt <= last_fcnt + max_gap else (REPLAY if fcnt <= last_fcnt else GAP_TOO_LARGE)
    direction = f.mtype & 1
    raw = f.raw
    signed = raw[:-4] if raw is not None else f.signed_part
    if security.compute_mic(nwk_s_key, direction, f.dev_addr, fcnt, signed, backend) != f.mic:
        return OpenedFrame(f, fcnt, status, False, None, None, None)
    fport = f.fport
    frm = f.frm_payload
    if frm:
        payload = security.crypt_frm_payload(app_s_key if fport else nwk_s_key, direction, f.dev_addr, fcnt, frm, backend)
    else:
        payload = b""
    cmds = []
    err = None
    mac = payload if fport == 0 else f.fopts
    if mac:
        codec = _mac()
        try:
            cmds = codec.decode_commands(mac, direction == 0)
        except codec.MacCommandError as e:
            cmds = e.commands
            err = str(e)
    return OpenedFrame(f, fcnt, status, True, payload, cmds, err)

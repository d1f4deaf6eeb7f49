"""The network server's half of LoRaWAN 1.0.x frames: what a device never does, apart from the
device modules so that it never loads it (every function and class costs a device RAM).

Decoding any PHYPayload (a device only opens downlinks and join-accepts), opening
join-requests, building and encrypting join-accepts and their CFList, the MType names, and on
the MAC side the DeviceTimeAns and the command tables' listing. Built on protocol.lorawan.frame,
security, session and mac, with the same conventions.
"""

from protocol.lorawan import frame as _frame
from protocol.lorawan import mac as _mac
from protocol.lorawan import security as _sec
from protocol.lorawan.frame import (
    CONFIRMED_UP, JOIN_ACCEPT, JOIN_REQUEST, UNCONFIRMED_UP, FrameError, _check_bytes, _check_int,
    _mhdr,
)
from protocol.lorawan import join as _join
from protocol.lorawan.join import JoinAccept, JoinRequest

RFU = 6
PROPRIETARY = 7

# RP002 receive delays, the same in every region: RX1 / RX2 after a data uplink, after a
# join-request (a device has them as constants of its own)
RECEIVE_DELAY1_US = 1000000
RECEIVE_DELAY2_US = 2000000
JOIN_ACCEPT_DELAY1_US = 5000000
JOIN_ACCEPT_DELAY2_US = 6000000

MTYPE_NAMES = (
    "JoinRequest",
    "JoinAccept",
    "UnconfirmedDataUp",
    "UnconfirmedDataDown",
    "ConfirmedDataUp",
    "ConfirmedDataDown",
    "RFU",
    "Proprietary",
)


def is_uplink_mtype(mtype):
    """True for the MTypes sent by end devices (join-request, data up)."""
    return mtype == UNCONFIRMED_UP or mtype == CONFIRMED_UP or mtype == JOIN_REQUEST


class EncryptedJoinAccept:
    """A join-accept as received: MHDR and the encrypted body | MIC (16 or 32 bytes).
    _join.open_join_accept decrypts and decodes it."""

    def __init__(self, payload, major=0, raw=None):
        self.mtype = JOIN_ACCEPT
        self.major = major
        self.payload = payload
        self.raw = raw

    def encode(self):
        p = _check_bytes(self.payload, "encrypted join-accept")
        if len(p) != 16 and len(p) != 32:
            raise FrameError("encrypted join-accept must be 16 or 32 bytes, got %d" % len(p))
        return bytes((_mhdr(JOIN_ACCEPT, self.major),)) + p

    def __repr__(self):
        return "<EncryptedJoinAccept %s>" % bytes(self.payload).hex()


class ProprietaryFrame:
    """MType 7: the layout after MHDR is not defined by LoRaWAN, so it is kept whole."""

    def __init__(self, payload, major=0):
        self.mtype = PROPRIETARY
        self.major = major
        self.payload = payload

    def encode(self):
        p = _check_bytes(self.payload, "proprietary payload")
        if len(p) + 1 > 255:
            raise FrameError("frame too long: %d bytes, at most 255" % (len(p) + 1))
        return bytes((_mhdr(PROPRIETARY, self.major),)) + p

    def __repr__(self):
        return "<ProprietaryFrame %s>" % bytes(self.payload).hex()


def decode(phy):
    """Split a PHYPayload into a DataFrame, JoinRequest, EncryptedJoinAccept or
    ProprietaryFrame. Raises FrameError (and nothing else) on malformed input."""
    if type(phy) is not bytes:
        if not isinstance(phy, (bytearray, memoryview)):
            raise FrameError("PHYPayload must be bytes, got %s" % type(phy).__name__)
        phy = bytes(phy)
    n = len(phy)
    if n == 0:
        raise FrameError("empty PHYPayload")
    if n > 255:
        raise FrameError("PHYPayload too long: %d bytes, at most 255" % n)
    mhdr = phy[0]
    if mhdr & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (mhdr & 3))
    mtype = mhdr >> 5
    if 2 <= mtype <= 5:
        return _frame.decode_data(phy)
    if mtype == JOIN_REQUEST:
        if n != 23:
            raise FrameError("join-request must be 23 bytes, got %d" % n)
        return JoinRequest(bytes(reversed(phy[1:9])), bytes(reversed(phy[9:17])),
                           phy[17] | (phy[18] << 8), phy[19:23], 0, phy)
    if mtype == JOIN_ACCEPT:
        _join.check_join_accept_len(n)
        return EncryptedJoinAccept(phy[1:], 0, phy)
    if mtype == PROPRIETARY:
        return ProprietaryFrame(phy[1:])
    raise FrameError("MType 6 is RFU")


# ---------------------------------------------------------------- join-accepts


def dl_settings(j):
    """The DLSettings byte of JoinAccept j (RX1DRoffset << 4 | RX2DataRate), validated."""
    _check_int(j.rx1_dr_offset, "RX1DRoffset", 3)
    _check_int(j.rx2_dr, "RX2DataRate", 4)
    return (j.rx1_dr_offset << 4) | j.rx2_dr


def join_accept_signed_part(j):
    """MHDR | body of JoinAccept j, encoded from its attributes: what the MIC covers."""
    mhdr = _mhdr(JOIN_ACCEPT, j.major)
    _check_int(j.join_nonce, "JoinNonce", 24)
    _check_int(j.net_id, "NetID", 24)
    _check_int(j.dev_addr, "DevAddr", 32)
    _check_int(j.rx_delay, "RxDelay", 4)
    out = (bytes((mhdr,)) + j.join_nonce.to_bytes(3, "little") + j.net_id.to_bytes(3, "little")
           + j.dev_addr.to_bytes(4, "little") + bytes((dl_settings(j), j.rx_delay)))
    if j.cflist is not None:
        out += _check_bytes(j.cflist, "CFList", 16)
    return out


def encode_join_accept(j):
    """Plaintext MHDR | body | MIC of JoinAccept j (what the MIC is computed over, before
    encryption); its mic must be set."""
    if j.mic is None:
        raise FrameError("MIC not set: compute it over signed_part first")
    return join_accept_signed_part(j) + _check_bytes(j.mic, "MIC", 4)


def cflist_fields(j):
    """_join.decode_cflist(j.cflist) of JoinAccept j, or None without a CFList."""
    return None if j.cflist is None else _join.decode_cflist(j.cflist)


def cflist_from_frequencies(frequencies):
    """CFList type 0 from up to 5 frequencies in Hz (multiples of 100 Hz; 0 = no channel)."""
    if len(frequencies) > 5:
        raise FrameError("CFList holds at most 5 frequencies, got %d" % len(frequencies))
    out = bytearray(16)
    for i, f in enumerate(frequencies):
        if not isinstance(f, int) or f < 0 or f % 100 or f >= 100 << 24:
            raise FrameError("CFList frequency must be a multiple of 100 Hz below 1677721600, "
                             "got %r" % (f,))
        out[3 * i:3 * i + 3] = (f // 100).to_bytes(3, "little")
    return bytes(out)


def cflist_from_ch_masks(ch_masks):
    """CFList type 1 from up to 5 16-bit channel masks (ChMask0 covers channels 0..15)."""
    if len(ch_masks) > 5:
        raise FrameError("CFList holds at most 5 channel masks, got %d" % len(ch_masks))
    out = bytearray(16)
    for i, m in enumerate(ch_masks):
        _check_int(m, "ChMask", 16)
        out[2 * i] = m & 0xFF
        out[2 * i + 1] = m >> 8
    out[15] = 1  # CFList type 1: channel masks
    return bytes(out)


def encrypt_join_accept(app_key, body_and_mic, backend=None):
    """body | MIC -> the bytes sent after MHDR. The spec uses AES *decrypt* here so that
    devices only ever need AES encrypt (_join.decrypt_join_accept)."""
    _join.join_accept_body_len(body_and_mic, "join-accept body|MIC")
    return _sec.cipher.ecb(app_key, backend).decrypt(body_and_mic)


def build_join_accept(app_key, join_nonce, net_id, dev_addr, rx1_dr_offset, rx2_dr, rx_delay,
                      cflist=None, backend=None):
    """Join-accept wire bytes (MHDR | encrypted body | MIC). cflist: None or 16 bytes
    (cflist_from_frequencies / cflist_from_ch_masks)."""
    signed = join_accept_signed_part(JoinAccept(join_nonce, net_id, dev_addr, rx1_dr_offset,
                                                rx2_dr, rx_delay, cflist))
    mic = _join.join_accept_mic(app_key, signed, backend)
    return signed[:1] + encrypt_join_accept(app_key, signed[1:] + mic, backend)


def open_join_request(phy_or_frame, app_key, backend=None):
    """Decode a join-request and set its `mic_ok`."""
    j = phy_or_frame if isinstance(phy_or_frame, JoinRequest) else decode(phy_or_frame)
    if not isinstance(j, JoinRequest):
        raise FrameError("not a join-request: %s" % MTYPE_NAMES[j.mtype])
    j.mic_ok = _join.join_request_mic(app_key, j.signed_part, backend) == j.mic
    return j


# ---------------------------------------------------------------- MAC commands


def commands(uplink):
    """(cid, name, payload length) of every MAC command known in that direction."""
    specs = (_mac._find(uplink, cid) for cid in range(256))
    return [spec[:3] for spec in specs if spec is not None]


def command_length(cid, uplink):
    """Payload length of MAC command `cid` (without the CID byte), or None for an unknown CID."""
    spec = _mac._find(uplink, cid)
    return None if spec is None else spec[2]


def device_time_ans(unix_ms):
    """The DeviceTimeAns for UTC instant unix_ms (integer ms since 1970-01-01T00:00:00Z; a float
    is truncated): GPS seconds (mod 2**32) and fractional 1/256 s, rounded down. The inverse of
    mac.device_time_unix_ms."""
    # the UNIX instant of GPS time 0 is mac's (the one place that knows the leap seconds)
    gps_ms = int(unix_ms) - _mac.device_time_unix_ms({"seconds": 0, "fractional": 0})
    if gps_ms < 0:
        raise _mac.MacCommandError("DeviceTimeAns: %r ms is before the GPS epoch" % (unix_ms,))
    seconds = gps_ms // 1000
    return {"cid": 0x0D, "name": "DeviceTimeAns", "seconds": seconds & 0xFFFFFFFF,
            "fractional": (gps_ms - seconds * 1000) * 256 // 1000}

"""LoRaWAN 1.0.x PHYPayload codec (1.0.4 behaviour), sans-I/O: bytes in, plain objects out.

Nothing here touches keys: `decode` only splits a frame into fields, and the encoders only
join fields back. MIC checks and FRMPayload encryption live in protocol.lorawan.security and
are combined with this module in protocol.lorawan.session.

Conventions: integers (DevAddr, NetID, nonces) are numbers as humans write them; EUIs are
8-byte strings in human order (the wire carries them reversed); FRMPayload stays as it was
on the air (encrypted). Decoded frames keep their received bytes, so `signed_part` gives
exactly what the MIC covers without re-encoding.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


JOIN_REQUEST = 0
JOIN_ACCEPT = 1
UNCONFIRMED_UP = 2
UNCONFIRMED_DOWN = 3
CONFIRMED_UP = 4
CONFIRMED_DOWN = 5
RFU = 6
PROPRIETARY = 7

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

_MAJOR_R1 = const(0)
_MAX_PHY = const(255)  # LoRa PHY payload limit; regional N limits are stricter and checked elsewhere
_MIN_DATA = const(12)  # MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + MIC 4
_JOIN_REQUEST_LEN = const(23)

# FCtrl bits (FOptsLen is the low nibble)
_FCTRL_ADR = const(0x80)
_FCTRL_ADR_ACK_REQ = const(0x40)  # uplink only; RFU on downlinks
_FCTRL_ACK = const(0x20)
_FCTRL_FPENDING = const(0x10)  # downlink
_FCTRL_CLASS_B = const(0x10)  # uplink

_FHDR = "<IBH"  # DevAddr | FCtrl | FCnt, after MHDR
try:
    _unpack_fhdr = struct.Struct(_FHDR).unpack_from  # CPython: skips the format cache lookup
except AttributeError:  # MicroPython has no struct.Struct

    def _unpack_fhdr(buf, offset):
        return struct.unpack_from(_FHDR, buf, offset)


class FrameError(ValueError):
    """Malformed or out-of-range LoRaWAN frame (wrong length, bad field, unsupported Major)."""


def _hex(b):
    return bytes(b).hex()


def _check_bytes(value, name, length=None):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise FrameError("%s must be bytes, got %s" % (name, type(value).__name__))
    if length is not None and len(value) != length:
        raise FrameError("%s must be %d bytes, got %d" % (name, length, len(value)))
    return bytes(value)


def _check_int(value, name, bits):
    if not isinstance(value, int) or value < 0 or value >> bits:
        raise FrameError("%s must be an integer in 0..%d, got %r" % (name, (1 << bits) - 1, value))
    return value


def _reversed(b):
    return bytes(b[i] for i in range(len(b) - 1, -1, -1))


def _mhdr(mtype, major):
    _check_int(mtype, "MType", 3)
    if major != _MAJOR_R1:
        raise FrameError("Major must be 0 (LoRaWAN R1), got %r" % (major,))
    return mtype << 5


def is_uplink_mtype(mtype):
    """True for the MTypes sent by end devices (join-request, data up)."""
    return mtype == UNCONFIRMED_UP or mtype == CONFIRMED_UP or mtype == JOIN_REQUEST


class DataFrame:
    """A data frame (MType 2..5). frm_payload is as on the air, i.e. encrypted.

    FCtrl bit 4 means FPending on downlinks and ClassB on uplinks; both attributes exist and
    the one that does not apply to the direction stays False. fport is None when absent.
    """

    def __init__(self, mtype, dev_addr, fcnt16, fport=None, frm_payload=b"", fopts=b"",
                 adr=False, adr_ack_req=False, ack=False, fpending=False, class_b=False,
                 mic=None, major=_MAJOR_R1, raw=None):
        self.mtype = mtype
        self.major = major
        self.dev_addr = dev_addr
        self.adr = adr
        self.adr_ack_req = adr_ack_req
        self.ack = ack
        self.fpending = fpending
        self.class_b = class_b
        self.fcnt16 = fcnt16
        self.fopts = fopts
        self.fport = fport
        self.frm_payload = frm_payload
        self.mic = mic
        # Received bytes (decoded frames only); signed_part serves the MIC input from them.
        self.raw = raw

    @property
    def is_uplink(self):
        return self.mtype == UNCONFIRMED_UP or self.mtype == CONFIRMED_UP

    @property
    def confirmed(self):
        return self.mtype == CONFIRMED_UP or self.mtype == CONFIRMED_DOWN

    @property
    def fctrl(self):
        """The FCtrl byte these attributes encode to (validated)."""
        up = self.is_uplink
        if not up and self.adr_ack_req:
            raise FrameError("ADRACKReq is an uplink bit (RFU on downlinks)")
        if up and self.fpending:
            raise FrameError("FPending is a downlink bit (use class_b on uplinks)")
        if not up and self.class_b:
            raise FrameError("ClassB is an uplink bit (use fpending on downlinks)")
        n = len(self.fopts)
        if n > 15:
            raise FrameError("FOpts too long: %d bytes, at most 15" % n)
        return ((_FCTRL_ADR if self.adr else 0) | (_FCTRL_ADR_ACK_REQ if self.adr_ack_req else 0)
                | (_FCTRL_ACK if self.ack else 0)
                | (0x10 if (self.fpending or self.class_b) else 0) | n)

    @property
    def signed_part(self):
        """MHDR | MACPayload: the bytes the MIC covers. For a decoded frame these are the
        received bytes (re-encoding could differ in RFU bits); otherwise they are encoded
        from the attributes. After changing a decoded frame, clear `raw` or call encode()."""
        if self.raw is not None:
            return self.raw[:-4]
        return encode_data_signed_part(self)

    def encode(self):
        """PHYPayload from the attributes (mic must be set, e.g. by session.build_data_frame)."""
        mic = _check_bytes(self.mic, "MIC", 4) if self.mic is not None else None
        if mic is None:
            raise FrameError("MIC not set: compute it over signed_part first")
        return encode_data_signed_part(self) + mic

    def __repr__(self):
        return "<DataFrame %s DevAddr=%08X FCnt16=%d FPort=%r FOpts=%s FRMPayload=%s>" % (
            MTYPE_NAMES[self.mtype], self.dev_addr, self.fcnt16, self.fport,
            _hex(self.fopts), _hex(self.frm_payload))


def encode_data_signed_part(f):
    """MHDR | MACPayload of a DataFrame, validating every field."""
    if f.mtype < UNCONFIRMED_UP or f.mtype > CONFIRMED_DOWN:
        raise FrameError("not a data MType: %r" % (f.mtype,))
    mhdr = _mhdr(f.mtype, f.major)
    _check_int(f.dev_addr, "DevAddr", 32)
    _check_int(f.fcnt16, "FCnt (16-bit wire value)", 16)
    fopts = _check_bytes(f.fopts, "FOpts")
    frm = _check_bytes(f.frm_payload, "FRMPayload")
    fctrl = f.fctrl
    if f.fport is None:
        if frm:
            raise FrameError("FRMPayload of %d bytes needs an FPort" % len(frm))
        port = b""
    else:
        _check_int(f.fport, "FPort", 8)
        if f.fport == 0 and fopts:
            raise FrameError("FPort 0 (MAC commands in FRMPayload) with FOpts is invalid")
        port = bytes((f.fport,))
    out = struct.pack("<BIBH", mhdr, f.dev_addr, fctrl, f.fcnt16) + fopts + port + frm
    if len(out) + 4 > _MAX_PHY:
        raise FrameError("frame too long: %d bytes, at most %d" % (len(out) + 4, _MAX_PHY))
    return out


class JoinRequest:
    """Join-request. EUIs are 8 bytes in human order (0x70B3D5... as printed on labels)."""

    def __init__(self, join_eui, dev_eui, dev_nonce, mic=None, major=_MAJOR_R1, raw=None):
        self.mtype = JOIN_REQUEST
        self.major = major
        self.join_eui = join_eui
        self.dev_eui = dev_eui
        self.dev_nonce = dev_nonce
        self.mic = mic
        self.raw = raw
        self.mic_ok = None  # set by session.open_join_request

    @property
    def signed_part(self):
        if self.raw is not None:
            return self.raw[:-4]
        return _encode_join_request_signed(self)

    def encode(self):
        if self.mic is None:
            raise FrameError("MIC not set: compute it over signed_part first")
        return _encode_join_request_signed(self) + _check_bytes(self.mic, "MIC", 4)

    def __repr__(self):
        return "<JoinRequest JoinEUI=%s DevEUI=%s DevNonce=%d>" % (
            _hex(self.join_eui), _hex(self.dev_eui), self.dev_nonce)


def _encode_join_request_signed(j):
    mhdr = _mhdr(JOIN_REQUEST, j.major)
    join_eui = _check_bytes(j.join_eui, "JoinEUI", 8)
    dev_eui = _check_bytes(j.dev_eui, "DevEUI", 8)
    _check_int(j.dev_nonce, "DevNonce", 16)
    return (bytes((mhdr,)) + _reversed(join_eui) + _reversed(dev_eui)
            + j.dev_nonce.to_bytes(2, "little"))


class EncryptedJoinAccept:
    """A join-accept as received: MHDR and the encrypted body | MIC (16 or 32 bytes).
    Decrypt with security.decrypt_join_accept, then decode_join_accept (or use
    session.open_join_accept for both steps)."""

    def __init__(self, payload, major=_MAJOR_R1, raw=None):
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
        return "<EncryptedJoinAccept %s>" % _hex(self.payload)


CFLIST_FREQUENCIES = 0
_CFLIST_CH_MASK = const(1)


class JoinAccept:
    """Join-accept, plaintext view. rx_delay is the wire value (0 and 1 both mean 1 s);
    cflist is None or the raw 16 bytes, see decode_cflist for its meaning."""

    def __init__(self, join_nonce, net_id, dev_addr, rx1_dr_offset=0, rx2_dr=0, rx_delay=1,
                 cflist=None, mic=None, major=_MAJOR_R1, raw=None):
        self.mtype = JOIN_ACCEPT
        self.major = major
        self.join_nonce = join_nonce
        self.net_id = net_id
        self.dev_addr = dev_addr
        self.rx1_dr_offset = rx1_dr_offset
        self.rx2_dr = rx2_dr
        self.rx_delay = rx_delay
        self.cflist = cflist
        self.mic = mic
        self.raw = raw
        self.mic_ok = None  # set by session.open_join_accept

    @property
    def dl_settings(self):
        _check_int(self.rx1_dr_offset, "RX1DRoffset", 3)
        _check_int(self.rx2_dr, "RX2DataRate", 4)
        return (self.rx1_dr_offset << 4) | self.rx2_dr

    @property
    def rx1_delay_s(self):
        d = self.rx_delay & 15
        return d if d else 1

    @property
    def cflist_fields(self):
        """decode_cflist(self.cflist), or None without a CFList."""
        return None if self.cflist is None else decode_cflist(self.cflist)

    @property
    def signed_part(self):
        if self.raw is not None:
            return self.raw[:-4]
        return _encode_join_accept_signed(self)

    def encode(self):
        """Plaintext MHDR | body | MIC (what the MIC is computed over, before encryption)."""
        if self.mic is None:
            raise FrameError("MIC not set: compute it over signed_part first")
        return _encode_join_accept_signed(self) + _check_bytes(self.mic, "MIC", 4)

    def __repr__(self):
        return "<JoinAccept JoinNonce=%06X NetID=%06X DevAddr=%08X RX1DRoffset=%d RX2DR=%d RxDelay=%d CFList=%s>" % (
            self.join_nonce, self.net_id, self.dev_addr, self.rx1_dr_offset, self.rx2_dr,
            self.rx_delay, None if self.cflist is None else _hex(self.cflist))


def _encode_join_accept_signed(j):
    mhdr = _mhdr(JOIN_ACCEPT, j.major)
    _check_int(j.join_nonce, "JoinNonce", 24)
    _check_int(j.net_id, "NetID", 24)
    _check_int(j.dev_addr, "DevAddr", 32)
    _check_int(j.rx_delay, "RxDelay", 4)
    out = (bytes((mhdr,)) + j.join_nonce.to_bytes(3, "little") + j.net_id.to_bytes(3, "little")
           + j.dev_addr.to_bytes(4, "little") + bytes((j.dl_settings, j.rx_delay)))
    if j.cflist is not None:
        out += _check_bytes(j.cflist, "CFList", 16)
    return out


def decode_cflist(cflist):
    """CFList meaning by its type byte (last byte):

    type 0 -> {"type": 0, "frequencies": [5 ints in Hz, 0 = no channel]} (channels 3..7, EU-like)
    type 1 -> {"type": 1, "ch_masks": [5 ints of 16 bits]} (ChMask0..4, US/AU-like)
    """
    c = _check_bytes(cflist, "CFList", 16)
    t = c[15]
    if t == CFLIST_FREQUENCIES:
        return {"type": t, "frequencies": [int.from_bytes(c[i:i + 3], "little") * 100 for i in range(0, 15, 3)]}
    if t == _CFLIST_CH_MASK:
        return {"type": t, "ch_masks": [c[i] | (c[i + 1] << 8) for i in range(0, 10, 2)]}
    raise FrameError("unknown CFList type %d" % t)


def cflist_from_frequencies(frequencies):
    """CFList type 0 from up to 5 frequencies in Hz (multiples of 100 Hz; 0 = no channel)."""
    if len(frequencies) > 5:
        raise FrameError("CFList holds at most 5 frequencies, got %d" % len(frequencies))
    out = bytearray(16)
    for i, f in enumerate(frequencies):
        if not isinstance(f, int) or f < 0 or f % 100 or f >= 100 << 24:
            raise FrameError("CFList frequency must be a multiple of 100 Hz below 1677721600, got %r" % (f,))
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
    out[15] = _CFLIST_CH_MASK
    return bytes(out)


class ProprietaryFrame:
    """MType 7: the layout after MHDR is not defined by LoRaWAN, so it is kept whole."""

    def __init__(self, payload, major=_MAJOR_R1):
        self.mtype = PROPRIETARY
        self.major = major
        self.payload = payload

    def encode(self):
        p = _check_bytes(self.payload, "proprietary payload")
        if len(p) + 1 > _MAX_PHY:
            raise FrameError("frame too long: %d bytes, at most %d" % (len(p) + 1, _MAX_PHY))
        return bytes((_mhdr(PROPRIETARY, self.major),)) + p

    def __repr__(self):
        return "<ProprietaryFrame %s>" % _hex(self.payload)


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
    if n > _MAX_PHY:
        raise FrameError("PHYPayload too long: %d bytes, at most %d" % (n, _MAX_PHY))
    mhdr = phy[0]
    if mhdr & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (mhdr & 3))
    mtype = mhdr >> 5
    if UNCONFIRMED_UP <= mtype <= CONFIRMED_DOWN:
        return decode_data(phy)
    if mtype == JOIN_REQUEST:
        if n != _JOIN_REQUEST_LEN:
            raise FrameError("join-request must be %d bytes, got %d" % (_JOIN_REQUEST_LEN, n))
        return JoinRequest(_reversed(phy[1:9]), _reversed(phy[9:17]), phy[17] | (phy[18] << 8),
                           phy[19:23], _MAJOR_R1, phy)
    if mtype == JOIN_ACCEPT:
        if n != 17 and n != 33:
            raise FrameError("join-accept must be 17 or 33 bytes (with CFList), got %d" % n)
        return EncryptedJoinAccept(phy[1:], _MAJOR_R1, phy)
    if mtype == PROPRIETARY:
        return ProprietaryFrame(phy[1:])
    raise FrameError("MType 6 is RFU")


def decode_data(phy):
    """Fast path for a data frame (MType 2..5, Major 0 already known or checked here).
    phy must be bytes."""
    n = len(phy)
    if n < _MIN_DATA:
        raise FrameError("data frame too short: %d bytes, need at least %d" % (n, _MIN_DATA))
    if n > _MAX_PHY:
        raise FrameError("PHYPayload too long: %d bytes, at most %d" % (n, _MAX_PHY))
    mhdr = phy[0]
    mtype = mhdr >> 5
    if mtype < UNCONFIRMED_UP or mtype > CONFIRMED_DOWN:
        raise FrameError("not a data frame: MType %d (%s)" % (mtype, MTYPE_NAMES[mtype]))
    if mhdr & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (mhdr & 3))
    dev_addr, fctrl, fcnt16 = _unpack_fhdr(phy, 1)
    fol = fctrl & 15
    p = 8 + fol
    end = n - 4
    if p > end:
        raise FrameError("FOptsLen %d does not fit in a %d-byte frame" % (fol, n))
    if p < end:
        fport = phy[p]
        if fport == 0 and fol:
            raise FrameError("FPort 0 (MAC commands in FRMPayload) with FOpts is invalid")
        frm = phy[p + 1:end]
    else:
        fport = None
        frm = b""
    bit4 = (fctrl & 0x10) != 0
    if mtype & 1:  # downlink
        return DataFrame(mtype, dev_addr, fcnt16, fport, frm, phy[8:p] if fol else b"",
                         (fctrl & 0x80) != 0, False, (fctrl & 0x20) != 0, bit4, False,
                         phy[end:], _MAJOR_R1, phy)
    return DataFrame(mtype, dev_addr, fcnt16, fport, frm, phy[8:p] if fol else b"",
                     (fctrl & 0x80) != 0, (fctrl & 0x40) != 0, (fctrl & 0x20) != 0, False, bit4,
                     phy[end:], _MAJOR_R1, phy)


def decode_join_accept(plaintext_phy):
    """MHDR | body | MIC of a decrypted join-accept -> JoinAccept (mic_ok left None)."""
    p = plaintext_phy
    if type(p) is not bytes:
        if not isinstance(p, (bytearray, memoryview)):
            raise FrameError("join-accept must be bytes, got %s" % type(p).__name__)
        p = bytes(p)
    n = len(p)
    if n != 17 and n != 33:
        raise FrameError("join-accept must be 17 or 33 bytes (with CFList), got %d" % n)
    if p[0] >> 5 != JOIN_ACCEPT:
        raise FrameError("not a join-accept: MType %d (%s)" % (p[0] >> 5, MTYPE_NAMES[p[0] >> 5]))
    if p[0] & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (p[0] & 3))
    dl = p[11]
    return JoinAccept(int.from_bytes(p[1:4], "little"), int.from_bytes(p[4:7], "little"),
                      int.from_bytes(p[7:11], "little"), (dl >> 4) & 7, dl & 15, p[12] & 15,
                      p[13:29] if n == 33 else None, p[n - 4:], _MAJOR_R1, p)

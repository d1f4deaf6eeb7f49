"""LoRaWAN 1.0.x PHYPayload codec (1.0.4 behaviour), sans-I/O: bytes in, plain objects out.

What a device needs for data frames, both ways; the join's frames are protocol.lorawan.join
(a device drops them once joined). Nothing here touches keys: decoders only split a frame into
fields, and encoders only join fields back; MIC checks and FRMPayload encryption live in
protocol.lorawan.security and are combined with this module in protocol.lorawan.session.
Decoding any frame, building join-accepts and CFLists, and the MType names are the network
server's (protocol.lorawan.network_side).

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
# 6 is RFU, 7 Proprietary: network_side

_MAJOR_R1 = const(0)
_MAX_PHY = const(255)  # LoRa PHY payload limit; regional N limits are stricter and checked elsewhere
_MIN_DATA = const(12)  # MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + MIC 4

# FCtrl bits (FOptsLen is the low nibble)
_FCTRL_ADR = const(0x80)
_FCTRL_ADR_ACK_REQ = const(0x40)  # uplink only; RFU on downlinks
_FCTRL_ACK = const(0x20)
_FCTRL_BIT4 = const(0x10)  # FPending on downlinks, ClassB on uplinks

class FrameError(ValueError):
    """Malformed or out-of-range LoRaWAN frame (wrong length, bad field, unsupported Major)."""


def _check_bytes(value, name, length=None):
    # name: the argument's own name (dev_eui, fopts ...), which is a qstr anyway; the spec's
    # field names (DevEUI, FOpts ...) would be one more each in a device's RAM
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise FrameError("%s must be bytes, got %s" % (name, type(value).__name__))
    if length is not None and len(value) != length:
        raise FrameError("%s must be %d bytes, got %d" % (name, length, len(value)))
    return bytes(value)


def _check_int(value, name, bits):
    if not isinstance(value, int) or value < 0 or value >> bits:
        raise FrameError("%s must be an integer in 0..%d, got %r" % (name, (1 << bits) - 1, value))
    return value


def _mhdr(mtype, major):
    _check_int(mtype, "mtype", 3)
    if major != _MAJOR_R1:
        raise FrameError("Major must be 0 (LoRaWAN R1), got %r" % (major,))
    return mtype << 5


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
    def signed_part(self):
        """MHDR | MACPayload: the bytes the MIC covers. For a decoded frame these are the
        received bytes (re-encoding could differ in RFU bits); otherwise they are encoded
        from the attributes. After changing a decoded frame, clear `raw` or call encode()."""
        if self.raw is not None:
            return self.raw[:-4]
        return encode_data_signed_part(self)

    def encode(self):
        """PHYPayload from the attributes (mic must be set, e.g. by session.build_data_frame)."""
        mic = _check_bytes(self.mic, "mic", 4) if self.mic is not None else None
        if mic is None:
            raise FrameError("MIC not set: compute it over signed_part first")
        return encode_data_signed_part(self) + mic

    def __repr__(self):
        return "<DataFrame MType=%d DevAddr=%08X FCnt16=%d FPort=%r FOpts=%s FRMPayload=%s>" % (
            self.mtype, self.dev_addr, self.fcnt16, self.fport,
            bytes(self.fopts).hex(), bytes(self.frm_payload).hex())


def encode_data_signed_part(f):
    """MHDR | MACPayload of a DataFrame, validating every field."""
    if f.mtype < UNCONFIRMED_UP or f.mtype > CONFIRMED_DOWN:
        raise FrameError("not a data MType: %r" % (f.mtype,))
    mhdr = _mhdr(f.mtype, f.major)
    _check_int(f.dev_addr, "dev_addr", 32)
    _check_int(f.fcnt16, "FCnt (16-bit wire value)", 16)
    fopts = _check_bytes(f.fopts, "fopts")
    frm = _check_bytes(f.frm_payload, "frm_payload")
    up = f.mtype & 1 == 0
    if not up and f.adr_ack_req:
        raise FrameError("ADRACKReq is an uplink bit (RFU on downlinks)")
    if up and f.fpending:
        raise FrameError("FPending is a downlink bit (use class_b on uplinks)")
    if not up and f.class_b:
        raise FrameError("ClassB is an uplink bit (use fpending on downlinks)")
    if len(fopts) > 15:
        raise FrameError("FOpts too long: %d bytes, at most 15" % len(fopts))
    fctrl = ((_FCTRL_ADR if f.adr else 0) | (_FCTRL_ADR_ACK_REQ if f.adr_ack_req else 0)
             | (_FCTRL_ACK if f.ack else 0) | (_FCTRL_BIT4 if (f.fpending or f.class_b) else 0)
             | len(fopts))
    if f.fport is None:
        if frm:
            raise FrameError("FRMPayload of %d bytes needs an FPort" % len(frm))
        port = b""
    else:
        _check_int(f.fport, "fport", 8)
        if f.fport == 0 and fopts:
            raise FrameError("FPort 0 (MAC commands in FRMPayload) with FOpts is invalid")
        port = bytes((f.fport,))
    out = struct.pack("<BIBH", mhdr, f.dev_addr, fctrl, f.fcnt16) + fopts + port + frm
    if len(out) + 4 > _MAX_PHY:
        raise FrameError("frame too long: %d bytes, at most %d" % (len(out) + 4, _MAX_PHY))
    return out


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
        raise FrameError("not a data frame: MType %d" % mtype)
    if mhdr & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (mhdr & 3))
    dev_addr, fctrl, fcnt16 = struct.unpack_from("<IBH", phy, 1)  # DevAddr | FCtrl | FCnt
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

"""The OTAA join of LoRaWAN 1.0.x, what both sides share: the join-request and the plaintext
join-accept, the CFList, their MICs, the device's decryption of a join-accept, and the session
keys. Building and encrypting join-accepts is the network server's (network_side).

Why apart from frame, security and session: a device joins once in a long while, and every
function and class here is heap it would hold for ever. It imports this module for its join and
unloads it once joined (firmware.lorawan.device); the next rejoin imports it again, from flash.
Same conventions as protocol.lorawan.frame.
"""

from protocol import cipher
from protocol.cmac import cmac
from protocol.lorawan.frame import (
    JOIN_ACCEPT, JOIN_REQUEST, FrameError, _check_bytes, _check_int, _mhdr,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MAJOR_R1 = const(0)


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
        self.mic_ok = None  # set by network_side.open_join_request

    @property
    def signed_part(self):
        if self.raw is not None:
            return self.raw[:-4]
        return _encode_join_request_signed(self)

    def encode(self):
        if self.mic is None:
            raise FrameError("MIC not set: compute it over signed_part first")
        return _encode_join_request_signed(self) + _check_bytes(self.mic, "mic", 4)

    def __repr__(self):
        return "<JoinRequest JoinEUI=%s DevEUI=%s DevNonce=%d>" % (
            bytes(self.join_eui).hex(), bytes(self.dev_eui).hex(), self.dev_nonce)


def _encode_join_request_signed(j):
    mhdr = _mhdr(JOIN_REQUEST, j.major)
    join_eui = _check_bytes(j.join_eui, "join_eui", 8)
    dev_eui = _check_bytes(j.dev_eui, "dev_eui", 8)
    _check_int(j.dev_nonce, "dev_nonce", 16)
    return (bytes((mhdr,)) + bytes(reversed(join_eui)) + bytes(reversed(dev_eui))
            + j.dev_nonce.to_bytes(2, "little"))


CFLIST_FREQUENCIES = 0
_CFLIST_CH_MASK = const(1)


class JoinAccept:
    """Join-accept, plaintext view. rx_delay is the wire value (0 and 1 both mean 1 s);
    cflist is None or the raw 16 bytes, see decode_cflist for its meaning. Encoding one is the
    network server's (network_side.join_accept_signed_part, encode_join_accept)."""

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
        self.mic_ok = None  # set by open_join_accept

    @property
    def rx1_delay_s(self):
        d = self.rx_delay & 15
        return d if d else 1

    @property
    def signed_part(self):
        """The received MHDR | body (decoded join-accepts only): what the MIC covers."""
        return self.raw[:-4]


def decode_cflist(cflist):
    """CFList meaning by its type byte (last byte):

    type 0 -> {"type": 0, "frequencies": [5 ints in Hz, 0 = no channel]} (channels 3..7, EU-like)
    type 1 -> {"type": 1, "ch_masks": [5 ints of 16 bits]} (ChMask0..4, US/AU-like)
    """
    c = _check_bytes(cflist, "cflist", 16)
    t = c[15]
    if t == CFLIST_FREQUENCIES:
        return {"type": t, "frequencies": [int.from_bytes(c[i:i + 3], "little") * 100 for i in range(0, 15, 3)]}
    if t == _CFLIST_CH_MASK:
        return {"type": t, "ch_masks": [c[i] | (c[i + 1] << 8) for i in range(0, 10, 2)]}
    raise FrameError("unknown CFList type %d" % t)


def decode_join_accept(p):
    """MHDR | body | MIC of a decrypted join-accept, p -> JoinAccept (mic_ok left None)."""
    if type(p) is not bytes:
        if not isinstance(p, (bytearray, memoryview)):
            raise FrameError("join-accept must be bytes, got %s" % type(p).__name__)
        p = bytes(p)
    n = len(p)
    check_join_accept_len(n)
    if p[0] >> 5 != JOIN_ACCEPT:
        raise FrameError("not a join-accept: MType %d" % (p[0] >> 5))
    if p[0] & 3:
        raise FrameError("unsupported Major %d (only 0, LoRaWAN R1)" % (p[0] & 3))
    dl = p[11]
    return JoinAccept(int.from_bytes(p[1:4], "little"), int.from_bytes(p[4:7], "little"),
                      int.from_bytes(p[7:11], "little"), (dl >> 4) & 7, dl & 15, p[12] & 15,
                      p[13:29] if n == 33 else None, p[n - 4:], _MAJOR_R1, p)


def check_join_accept_len(n):
    """FrameError unless n is the length of a join-accept PHYPayload."""
    if n != 17 and n != 33:  # MHDR | body | MIC, without / with CFList
        raise FrameError("join-accept must be 17 or 33 bytes (with CFList), got %d" % n)


def join_request_mic(app_key, msg, backend=None):
    """MIC of a join-request: CMAC(AppKey, MHDR | JoinEUI | DevEUI | DevNonce)[0:4]."""
    return cmac(app_key, msg, backend)[:4]


def join_accept_mic(app_key, msg, backend=None):
    """MIC of a join-accept, over the plaintext: CMAC(AppKey, MHDR | body)[0:4]."""
    return cmac(app_key, msg, backend)[:4]


def join_accept_body_len(data, what):
    n = len(data)
    if n != 16 and n != 32:
        hint = " (pass the bytes after MHDR)" if n == 17 or n == 33 else ""
        raise ValueError("%s must be 16 or 32 bytes (without/with CFList), got %d%s" % (what, n, hint))


def decrypt_join_accept(app_key, wire, backend=None):
    """Device side: the bytes after MHDR -> body | MIC, using AES *encrypt* (the network
    encrypts with AES decrypt, network_side.encrypt_join_accept, so devices need only encrypt)."""
    join_accept_body_len(wire, "encrypted join-accept")
    return cipher.ecb(app_key, backend).encrypt(wire)


def derive_session_keys(app_key, join_nonce, net_id, dev_nonce, backend=None):
    """(NwkSKey, AppSKey) = AES(AppKey, 0x01 / 0x02 | JoinNonce | NetID | DevNonce | pad16).

    Arguments are integers as humans write them (NetID 0xAABBCC); they go in little endian.
    """
    if not 0 <= join_nonce <= 0xFFFFFF:
        raise ValueError("JoinNonce out of 24-bit range: %r" % (join_nonce,))
    if not 0 <= net_id <= 0xFFFFFF:
        raise ValueError("NetID out of 24-bit range: %r" % (net_id,))
    if not 0 <= dev_nonce <= 0xFFFF:
        raise ValueError("DevNonce out of 16-bit range: %r" % (dev_nonce,))
    blocks = bytearray(32)
    for tag in (1, 2):
        o = 16 * (tag - 1)
        blocks[o] = tag
        blocks[o + 1 : o + 4] = join_nonce.to_bytes(3, "little")
        blocks[o + 4 : o + 7] = net_id.to_bytes(3, "little")
        blocks[o + 7 : o + 9] = dev_nonce.to_bytes(2, "little")
    keys = cipher.ecb(app_key, backend).encrypt(blocks)
    return keys[:16], keys[16:]


def build_join_request(join_eui, dev_eui, dev_nonce, app_key, backend=None):
    """Join-request PHYPayload. EUIs: 8 bytes in human order; dev_nonce: int (keep it
    monotonic and persisted, servers reject reused nonces)."""
    signed = JoinRequest(join_eui, dev_eui, dev_nonce).signed_part
    return signed + join_request_mic(app_key, signed, backend)


def open_join_accept(wire, app_key, backend=None):
    """Device side: decrypt and decode a join-accept PHYPayload (bytes, or a decoded
    network_side.EncryptedJoinAccept) -> JoinAccept with `mic_ok` set."""
    if not isinstance(wire, (bytes, bytearray, memoryview)):
        wire = wire.raw if wire.raw is not None else wire.encode()
    if not wire or wire[0] >> 5 != JOIN_ACCEPT:
        raise FrameError("not a join-accept: MType %d" % (wire[0] >> 5 if wire else -1))
    check_join_accept_len(len(wire))
    # the MIC covers MHDR as sent
    plain = decrypt_join_accept(app_key, wire[1:], backend)
    j = decode_join_accept(bytes(wire[:1]) + plain)
    j.mic_ok = join_accept_mic(app_key, j.signed_part, backend) == j.mic
    return j

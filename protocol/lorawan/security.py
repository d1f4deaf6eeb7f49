"""LoRaWAN 1.0.x frame security: MICs, FRMPayload encryption, join-accept crypto, session keys.

What is protected in 1.0.x: the MIC (first 4 bytes of AES-CMAC over B0 | MHDR | MACPayload,
NwkSKey) covers the whole frame; only FRMPayload is encrypted, with AppSKey when FPort > 0 and
NwkSKey when FPort = 0 (MAC commands sent as payload). FOpts travel in clear: their encryption
is a LoRaWAN 1.1 feature, so there is no FOpts function here. Callers pick the key by FPort.

Every function takes an optional `backend` ("cryptography", "cryptolib", "pure"; None = the
platform default, see protocol.cipher). On the gateway (cryptography) the work is done in a few
whole-buffer OpenSSL calls; elsewhere it runs block by block through module-level 16-byte
scratch buffers, so the device path allocates little more than its results. Those buffers make
the device path non-reentrant: do not call these functions from an interrupt handler or from two
threads at once (asyncio tasks are fine, nothing here awaits).
"""

import struct

from protocol import cipher
from protocol.cmac import cmac


try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


UPLINK = 0
DOWNLINK = 1


_HDR = const("<BIBIIBB")  # tag | 4 x 00 | Dir | DevAddr | FCnt | 00 | len or counter
_B0_TAG = const(0x49)
_AI_TAG = const(0x01)

_b0 = bytearray(16)  # device path scratch: the B0 block
_ai = bytearray(16)  # device path scratch: the current Ai block
_si = bytearray(16)  # device path scratch: its keystream block


def _frame_args(direction, dev_addr, fcnt):
    if direction != 0 and direction != 1:
        raise ValueError("direction must be UPLINK (0) or DOWNLINK (1), got %r" % (direction,))
    if not 0 <= dev_addr <= 0xFFFFFFFF:
        raise ValueError("DevAddr out of 32-bit range: %r" % (dev_addr,))
    if not 0 <= fcnt <= 0xFFFFFFFF:
        raise ValueError("FCnt out of 32-bit range: %r" % (fcnt,))


def compute_mic(nwk_s_key, direction, dev_addr, fcnt, msg, backend=None):
    """MIC of a data frame: CMAC(NwkSKey, B0 | msg)[0:4], msg = MHDR | MACPayload.

    fcnt is the full 32-bit counter (only its low 16 bits are on the air); dev_addr is the
    number as written by humans (0x49BE7DF1), little endian inside B0.
    """
    _frame_args(direction, dev_addr, fcnt)
    n = len(msg)
    if n > 255:
        raise ValueError("MIC input too long: %d bytes, the B0 length field holds at most 255" % n)
    struct.pack_into(_HDR, _b0, 0, _B0_TAG, 0, direction, dev_addr, fcnt, 0, n)
    return cmac(nwk_s_key, msg, backend, _b0)[:4]


def crypt_frm_payload(key, direction, dev_addr, fcnt, payload, backend=None):
    """Encrypt or decrypt FRMPayload (the same operation): XOR with AES(key, A1 | A2 | ...).

    key is AppSKey for FPort > 0 and NwkSKey for FPort = 0.
    """
    _frame_args(direction, dev_addr, fcnt)
    n = len(payload)
    if not n:
        return b""
    blocks = (n + 15) >> 4
    if blocks > 255:
        raise ValueError("FRMPayload too long: %d bytes, the Ai counter covers at most 4080" % n)
    name = cipher.resolve(backend)
    ecb = cipher.ecb(key, name)
    if name == "cryptography":
        ai = bytearray(struct.pack(_HDR, _AI_TAG, 0, direction, dev_addr, fcnt, 0, 1) * blocks)
        for i in range(2, blocks + 1):
            ai[16 * i - 1] = i
        pad = 16 * blocks - n
        ks = int.from_bytes(ecb.encrypt(ai), "big") >> 8 * pad
        return (int.from_bytes(payload, "big") ^ ks).to_bytes(n, "big")
    out = bytearray(payload)
    a = _ai
    s = _si
    struct.pack_into(_HDR, a, 0, _AI_TAG, 0, direction, dev_addr, fcnt, 0, 0)
    for i in range(blocks):
        a[15] = i + 1
        ecb.encrypt_into(a, s)
        off = i << 4
        for j in range(min(16, n - off)):
            out[off + j] ^= s[j]
    return bytes(out)


def join_request_mic(app_key, msg, backend=None):
    """MIC of a join-request: CMAC(AppKey, MHDR | JoinEUI | DevEUI | DevNonce)[0:4]."""
    return cmac(app_key, msg, backend)[:4]


def join_accept_mic(app_key, msg, backend=None):
    """MIC of a join-accept, over the plaintext: CMAC(AppKey, MHDR | body)[0:4]."""
    return cmac(app_key, msg, backend)[:4]


def _join_accept_len(data, what):
    n = len(data)
    if n != 16 and n != 32:
        hint = " (pass the bytes after MHDR)" if n == 17 or n == 33 else ""
        raise ValueError("%s must be 16 or 32 bytes (without/with CFList), got %d%s" % (what, n, hint))


def decrypt_join_accept(app_key, wire, backend=None):
    """Device side: the bytes after MHDR -> body | MIC, using AES *encrypt* (the network
    encrypts with AES decrypt, network_side.encrypt_join_accept, so devices need only encrypt)."""
    _join_accept_len(wire, "encrypted join-accept")
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

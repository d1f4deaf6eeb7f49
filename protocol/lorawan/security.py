"""LoRaWAN 1.0.x frame security: data-frame MICs and FRMPayload encryption (the join's MICs,
join-accept crypto and session keys are protocol.lorawan.join).

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

"""AES-CMAC (RFC 4493) on top of protocol.cipher, since neither cryptolib nor the pure AES has it.

Two strategies, same result:

* cryptography backend (gateway): OpenSSL's CMAC, in protocol.aes_openssl (a device never
  loads it).
* cryptolib / pure (device): CBC-MAC block by block into a module-level 16-byte state with
  in-place encryption, so a MIC allocates only its 16-byte result.

The device path's module-level state makes it non-reentrant across threads; a single-threaded
device is fine (nothing here awaits). Per-key caches live in protocol.cipher's registry:
cipher.clear_cache() empties them all.
"""

import sys

from protocol import cipher

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_RB = const(0x87)
_state = bytearray(16)  # device path: the running CBC-MAC value
# key -> (k1, k2) for the block-by-block path, per backend
_subkeys = {"cryptolib": cipher.shared_cache("cmac/cryptolib"), "pure": cipher.shared_cache("cmac/pure")}


def _block_subkeys(key, enc, backend):
    """(K1, K2) of key (RFC 4493): L = AES(key, 0), K1 = L * x, K2 = K1 * x in GF(2^128)."""
    cache = _subkeys[backend]
    sk = cache.get(key)
    if sk is None:
        k = int.from_bytes(enc.encrypt(bytes(16)), "big")
        sk = []
        for _ in range(2):
            k <<= 1
            if k >> 128:
                k ^= (1 << 128) | _RB
            sk.append(k.to_bytes(16, "big"))
        sk = tuple(sk)
        if len(cache) >= cipher.CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = sk
    return sk


def _xor_in(st, src, off, count):
    for j in range(count):
        st[j] ^= src[off + j]


def cmac(key, msg, backend=None, prefix=None):
    """AES-CMAC of `prefix | msg` (16 bytes).

    `prefix` (optional, a multiple of 16 bytes) is MACed ahead of msg without concatenating
    them, which spares a device an allocation for LoRaWAN's B0 block.
    """
    if prefix is not None and len(prefix) % 16:
        raise cipher.CipherError("CMAC prefix must be a multiple of 16 bytes, got %d" % len(prefix))
    name = cipher.resolve(backend)
    if type(key) is not bytes:
        key = bytes(key)
    if name == "cryptography":
        if sys.implementation.name != "micropython":  # on a device cipher.ecb below refuses it
            from protocol import aes_openssl

            if prefix:
                msg = bytes(prefix) + msg
            return aes_openssl.cmac(key, msg)
    enc = cipher.ecb(key, name)  # validates the backend name and key first
    k1, k2 = _block_subkeys(key, enc, name)
    crypt = enc.encrypt_into
    st = _state
    for j in range(16):
        st[j] = 0
    if prefix:
        if not msg:
            # The prefix's last block is then the message's last block and takes the subkey.
            msg = prefix[-16:]
            prefix = prefix[:-16]
        for off in range(0, len(prefix), 16):
            _xor_in(st, prefix, off, 16)
            crypt(st, st)
    n = len(msg)
    last = ((n - 1) & ~15) if n else 0
    for off in range(0, last, 16):
        _xor_in(st, msg, off, 16)
        crypt(st, st)
    rem = n - last
    if n and rem == 16:
        _xor_in(st, msg, last, 16)
        _xor_in(st, k1, 0, 16)
    else:
        _xor_in(st, msg, last, rem)
        st[rem] ^= 0x80
        _xor_in(st, k2, 0, 16)
    crypt(st, st)
    return bytes(st)



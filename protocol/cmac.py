"""AES-CMAC (RFC 4493) on top of protocol.cipher, since neither cryptolib nor the pure AES has it.

Two strategies, same result:

* cryptography backend (gateway): OpenSSL's CMAC. Building a CMAC object costs about 10 us (key
  schedule and subkeys), so one untouched object is cached per key and each message works on a
  `copy()` of it (about 1 us per MIC).
* cryptolib / pure (device): CBC-MAC block by block into a module-level 16-byte state with
  in-place encryption, so a MIC allocates only its 16-byte result.

The device path's module-level state makes it non-reentrant across threads; a single-threaded
device is fine (nothing here awaits). Per-key caches live in protocol.cipher's registry:
cipher.clear_cache() empties them all.
"""

from protocol import cipher

_RB = 0x87
_state = bytearray(16)  # device path: the running CBC-MAC value
# key -> (k1, k2) for the block-by-block path, per backend
_subkeys = {"cryptolib": cipher.shared_cache("cmac/cryptolib"), "pure": cipher.shared_cache("cmac/pure")}
# key -> an unused cryptography CMAC object, copied for each message
_templates = cipher.shared_cache("cmac/cryptography")


def _double(block):
    """Multiply by x in GF(2^128), the RFC 4493 subkey step."""
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n ^= (1 << 128) | _RB
    return n.to_bytes(16, "big")


def _block_subkeys(key, enc, backend):
    cache = _subkeys[backend]
    sk = cache.get(key)
    if sk is None:
        k1 = _double(enc.encrypt(bytes(16)))
        sk = (k1, _double(k1))
        if len(cache) >= cipher.CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = sk
    return sk


def _template(key):
    try:
        from cryptography.hazmat.primitives import cmac as ossl_cmac
        from cryptography.hazmat.primitives.ciphers import algorithms
    except ImportError:
        raise cipher.CipherError("AES backend 'cryptography' is not available here")
    if len(key) != 16:
        raise cipher.CipherError("AES-128 key must be 16 bytes, got %d" % len(key))
    t = ossl_cmac.CMAC(algorithms.AES(key))
    if len(_templates) >= cipher.CACHE_SIZE:
        del _templates[next(iter(_templates))]
    _templates[key] = t
    return t


def cmac_cryptography(key, msg):
    """cmac() on the cryptography backend without argument handling: the gateway's hot path.

    key must be a 16-byte `bytes` object (it is the cache key)."""
    t = _templates.get(key) or _template(key)
    c = t.copy()
    c.update(msg)
    return c.finalize()


def _xor_in(st, src, off, count):
    for j in range(count):
        st[j] ^= src[off + j]


def _cmac_blocks(key, msg, backend, prefix):
    enc = cipher.ecb(key, backend)  # validates the backend name and key first
    k1, k2 = _block_subkeys(key, enc, backend)
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
        if prefix:
            msg = bytes(prefix) + msg
        return cmac_cryptography(key, msg)
    return _cmac_blocks(key, msg, name, prefix)



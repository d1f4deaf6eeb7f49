"""AES-128-ECB and AES-CMAC on OpenSSL (the cryptography package): the gateway's backend of
protocol.cipher and protocol.cmac ("cryptography"), apart from them so that a device, which
has no OpenSSL, never loads it.

Building an OpenSSL context costs far more than using it (about 15 us for an ECB context,
10 us for a CMAC key schedule, against 0.5 us per block), so contexts stay open: an ECB
`update` carries no state between calls, and each CMAC works on a `copy()` of one untouched
object per key. Both are cached in protocol.cipher's per-key registry (cipher.clear_cache()
empties them too), and neither is safe to share between threads (the gateway runs them on one
asyncio loop).
"""

from protocol import cipher

_templates = cipher.shared_cache("cmac/cryptography")  # key -> an unused CMAC object


def available():
    """True when the cryptography package can be imported here."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher  # noqa: F401
    except ImportError:
        return False
    return True


class ECB:
    """protocol.cipher's ECB interface over two open OpenSSL contexts."""

    def __init__(self, key):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        c = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        self._enc = c.encryptor().update
        self._dec = c.decryptor().update

    def encrypt(self, data):
        if len(data) % 16:
            cipher._check(data)
        return self._enc(data)

    def decrypt(self, data):
        if len(data) % 16:
            cipher._check(data)
        return self._dec(data)

    def encrypt_into(self, data, out):
        cipher._check(data)
        out[: len(data)] = self._enc(data)


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


def cmac(key, msg):
    """AES-CMAC of msg without argument handling: the gateway's hot path (every MIC).

    key must be a 16-byte `bytes` object (it is the cache key)."""
    t = _templates.get(key) or _template(key)
    c = t.copy()
    c.update(msg)
    return c.finalize()

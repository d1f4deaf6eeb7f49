"""AES-128-ECB behind one interface, backed by whatever the platform offers.

Backends: "cryptography" (CPython gateway, OpenSSL: protocol.aes_openssl, which a device never
loads), "cryptolib" (MicroPython's C module, hardware AES on an ESP32) and "pure"
(protocol.aes, for builds without cryptolib). With backend=None the first importable one in
that order is used.

Cipher objects are cached per (backend, key) in a bounded dict, because building one costs
far more than encrypting a block (about 15 us for an OpenSSL context against 0.5 us for a
block). Cached objects hold live cipher contexts, so they are not safe to share between
threads; the gateway runs them on one asyncio loop and the device has no threads.
"""

import sys


class CipherError(ValueError):
    """Bad key, bad data length, or an unknown/unavailable backend."""


BACKENDS = ("cryptography", "cryptolib", "pure")

# Per-cache bound: one entry per key in use. A device holds two session keys (plus its AppKey
# while joining; a pure-Python AES object is about 1.5 KB); the network server two per device.
CACHE_SIZE = 4 if sys.implementation.name == "micropython" else 4096

_caches = {}  # name -> {key -> cached object}; see shared_cache()
_default = None


def shared_cache(name):
    """A per-key cache dict that clear_cache() empties too (used by protocol.cmac).

    The dict is created once and only ever cleared in place, so holding on to it is safe."""
    d = _caches.get(name)
    if d is None:
        d = _caches[name] = {}
    return d


def _probe(name):
    if name == "cryptolib":
        try:
            import cryptolib  # noqa: F401 (ucryptolib before MicroPython 1.21: older than ROMFS)
        except ImportError:
            return False
        return True
    if name == "cryptography":
        if sys.implementation.name != "micropython":
            from protocol import aes_openssl

            return aes_openssl.available()
        return False
    return name == "pure"


def available_backends():
    """Names of the backends importable here, in order of preference."""
    return [name for name in BACKENDS if _probe(name)]


def default_backend():
    """The backend used when backend=None (decided once, on first use)."""
    global _default
    if _default is None:
        _default = available_backends()[0]
    return _default


def resolve(backend):
    """Backend name to use for `backend` (None means the default)."""
    if backend is None:
        return _default or default_backend()
    if backend not in BACKENDS:
        raise CipherError("unknown AES backend %r (known: %s)" % (backend, ", ".join(BACKENDS)))
    return backend


def _check(data):
    if len(data) % 16:
        raise CipherError("ECB data must be a multiple of 16 bytes, got %d" % len(data))


class _CryptolibECB:
    """cryptolib.aes objects are locked to the direction of their first use: one encryptor,
    made now, and a decryptor per decrypt() call (a device, which only encrypts, never makes
    one)."""

    def __init__(self, key):
        self._key = bytes(key)
        import cryptolib

        self._aes = cryptolib.aes(self._key, 1)

    def encrypt(self, data):
        _check(data)
        return self._aes.encrypt(data)

    def decrypt(self, data):
        _check(data)
        import cryptolib

        return cryptolib.aes(self._key, 1).decrypt(data)

    def encrypt_into(self, data, out):
        _check(data)
        self._aes.encrypt(data, out)


for _name in BACKENDS:  # the ECB object caches, one per backend (the same registry as cmac's)
    shared_cache(_name)
del _name


def ecb(key, backend=None):
    """AES-128-ECB object for `key` with encrypt(data), decrypt(data) and encrypt_into(data, out).

    Data must be a multiple of 16 bytes. encrypt_into writes len(data) bytes into the mutable
    `out`, which may be `data` itself (in place, no allocation on cryptolib and pure).
    """
    name = backend if backend is not None else (_default or default_backend())
    if name not in BACKENDS:
        resolve(name)  # raises: unknown name
    cache = _caches[name]
    if type(key) is not bytes:
        key = bytes(key)
    obj = cache.get(key)
    if obj is None:
        if len(key) != 16:
            raise CipherError("AES-128 key must be 16 bytes, got %d" % len(key))
        if not _probe(name):
            raise CipherError("AES backend %r is not available here" % name)
        if name == "cryptolib":
            obj = _CryptolibECB(key)
        elif name == "pure":
            from protocol.aes import ECB

            obj = ECB(key)
        elif sys.implementation.name != "micropython":  # "cryptography": never on a device
            from protocol import aes_openssl

            obj = aes_openssl.ECB(key)
        if len(cache) >= CACHE_SIZE:
            del cache[next(iter(cache))]  # oldest on CPython, arbitrary on MicroPython
        cache[key] = obj
    return obj


def forget(key):
    """Drop the cached objects and derived values of one key, in every cache (a device after
    its join: the AppKey is not used again until the next join, old session keys never)."""
    key = bytes(key)
    for d in _caches.values():
        d.pop(key, None)


def clear_cache():
    """Drop every cached cipher object and derived value (after a rejoin frees old session
    keys, or when tests swap modules); the default backend is decided again on next use."""
    global _default
    for d in _caches.values():
        d.clear()
    _default = None

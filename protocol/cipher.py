"""AES-128-ECB behind one interface, backed by whatever the platform offers.

Backends: "cryptography" (CPython gateway, OpenSSL), "cryptolib" (MicroPython's C module,
hardware AES on an ESP32) and "pure" (protocol.aes, for builds without cryptolib). With
backend=None the first importable one in that order is used.

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


def _import_cryptolib():
    try:
        import cryptolib
    except ImportError:
        import ucryptolib as cryptolib  # MicroPython before 1.21
    return cryptolib


def _probe(name):
    try:
        if name == "cryptography":
            from cryptography.hazmat.primitives.ciphers import Cipher  # noqa: F401
        elif name == "cryptolib":
            _import_cryptolib()
        elif name != "pure":
            return False
    except ImportError:
        return False
    return True


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


if sys.implementation.name != "micropython":  # a class only CPython can use: none on a device

    class _CryptographyECB:
        """OpenSSL contexts kept open: ECB `update` carries no state between calls."""

        def __init__(self, key):
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            c = Cipher(algorithms.AES(bytes(key)), modes.ECB())
            self._enc = c.encryptor().update
            self._dec = c.decryptor().update

        def encrypt(self, data):
            if len(data) % 16:
                _check(data)
            return self._enc(data)

        def decrypt(self, data):
            if len(data) % 16:
                _check(data)
            return self._dec(data)

        def encrypt_into(self, data, out):
            _check(data)
            out[: len(data)] = self._enc(data)


class _CryptolibECB:
    """One cryptolib.aes object per direction: a cryptolib object is locked to the direction
    of its first use. Created lazily so devices, which only encrypt, never build a decryptor."""

    def __init__(self, key):
        self._key = bytes(key)
        self._enc = None
        self._dec = None

    def _encryptor(self):
        if self._enc is None:
            self._enc = _import_cryptolib().aes(self._key, 1)
        return self._enc

    def encrypt(self, data):
        _check(data)
        return self._encryptor().encrypt(data)

    def decrypt(self, data):
        _check(data)
        if self._dec is None:
            self._dec = _import_cryptolib().aes(self._key, 1)
        return self._dec.decrypt(data)

    def encrypt_into(self, data, out):
        _check(data)
        self._encryptor().encrypt(data, out)


class _PureECB:
    def __init__(self, key):
        from protocol.aes import AES

        self._aes = AES(key)

    def _run(self, data, fn):
        _check(data)
        out = bytearray(len(data))
        if len(data) == 16:
            fn(data, out)
        else:
            blk = bytearray(16)
            for o in range(0, len(data), 16):
                blk[:] = data[o : o + 16]
                fn(blk, blk)
                out[o : o + 16] = blk
        return bytes(out)

    def encrypt(self, data):
        return self._run(data, self._aes.encrypt_block_into)

    def decrypt(self, data):
        return self._run(data, self._aes.decrypt_block_into)

    def encrypt_into(self, data, out):
        _check(data)
        if len(data) == 16:
            self._aes.encrypt_block_into(data, out)
        else:
            out[: len(data)] = self.encrypt(data)




def _factory(name):
    if name == "cryptolib":
        return _CryptolibECB
    return _PureECB if name == "pure" else _CryptographyECB
_ecb_caches = {name: shared_cache(name) for name in BACKENDS}


def ecb(key, backend=None):
    """AES-128-ECB object for `key` with encrypt(data), decrypt(data) and encrypt_into(data, out).

    Data must be a multiple of 16 bytes. encrypt_into writes len(data) bytes into the mutable
    `out`, which may be `data` itself (in place, no allocation on cryptolib and pure).
    """
    name = backend if backend is not None else (_default or default_backend())
    cache = _ecb_caches.get(name)
    if cache is None:
        resolve(name)  # raises: unknown name
    if type(key) is not bytes:
        key = bytes(key)
    obj = cache.get(key)
    if obj is None:
        if len(key) != 16:
            raise CipherError("AES-128 key must be 16 bytes, got %d" % len(key))
        if not _probe(name):
            raise CipherError("AES backend %r is not available here" % name)
        obj = _factory(name)(key)
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

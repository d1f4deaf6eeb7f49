"""Fake of MicroPython's `cryptolib` (extmod/modcryptolib.c, mbedtls build as on the ESP32).

Backed by the `cryptography` package, an AES implementation independent of protocol.aes, so
"all backends agree" tests compare two implementations. Reproduced behaviour of the C module:

* `aes(key, mode[, IV])` takes positional arguments only (keywords raise TypeError); key is
  16 or 32 bytes (ValueError "key"); mode 1 (ECB) or 2 (CBC), and 6 (CTR) only when the build
  enables it (ValueError "mode"); CBC and CTR need a 16-byte IV (ValueError "IV").
* `encrypt(in_buf[, out_buf])` / `decrypt(...)`: ECB/CBC input must be a multiple of 16
  (ValueError "blksize % 16"); out_buf must be writable (TypeError) and large enough
  (ValueError "output too small"), may alias in_buf, and is returned; without it a new bytes.
* The first call fixes the object's direction; the other one then raises
  ValueError "can't encrypt & decrypt" (the mbedtls key schedule is built for one direction).
* CBC chains across calls (the IV is updated in place); CTR streams across calls.

The stock ESP32 build has MICROPY_PY_CRYPTOLIB_CONSTS and _CTR off, so real firmware must use
the literal mode numbers; the constants below exist for the tests' readability, and CTR is off
unless a test sets CTR_ENABLED.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_ECB = 1
MODE_CBC = 2
MODE_CTR = 6

CTR_ENABLED = False

_NONE, _ENC, _DEC = 0, 1, 2


def _read_buffer(obj):
    if isinstance(obj, str):
        return obj.encode()  # MicroPython str objects expose their UTF-8 bytes as a buffer
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


class aes:  # noqa: N801 - the real type is lower case
    def __init__(self, *args, **kwargs):
        if kwargs:
            raise TypeError("function doesn't take keyword arguments")
        if len(args) < 2:
            raise TypeError("function missing %d required positional arguments" % (2 - len(args)))
        if len(args) > 3:
            raise TypeError("function expected at most 3 arguments, got %d" % len(args))
        key, mode = args[0], args[1]
        if not isinstance(mode, int):
            raise TypeError("can't convert %s to int" % type(mode).__name__)
        mode = int(mode)
        if mode not in (MODE_ECB, MODE_CBC) and not (mode == MODE_CTR and CTR_ENABLED):
            raise ValueError("mode")
        key = _read_buffer(key)
        if len(key) not in (16, 32):
            raise ValueError("key")
        iv = None
        if len(args) > 2 and args[2] is not None:
            iv = _read_buffer(args[2])
            if len(iv) != 16:
                raise ValueError("IV")
        elif mode != MODE_ECB:
            raise ValueError("IV")
        self._key = key
        self._mode = mode
        self._iv = iv
        self._key_type = _NONE
        self._ctx = None

    def _context(self, encrypt):
        if self._mode == MODE_ECB:
            mode = modes.ECB()
        elif self._mode == MODE_CBC:
            mode = modes.CBC(self._iv)
        else:
            mode = modes.CTR(self._iv)
        c = Cipher(algorithms.AES(self._key), mode)
        # CTR decrypts with the encryption keystream, as the C module does.
        return c.encryptor() if encrypt or self._mode == MODE_CTR else c.decryptor()

    def _process(self, args, encrypt):
        if not 1 <= len(args) <= 2:
            raise TypeError("function takes 2 or 3 positional arguments but %d were given" % (len(args) + 1))
        data = _read_buffer(args[0])
        if self._mode != MODE_CTR and len(data) % 16 != 0:
            raise ValueError("blksize % 16")
        out = None
        if len(args) > 1:
            out = args[1]
            try:
                view = memoryview(out)
            except TypeError:
                raise TypeError("object with buffer protocol required") from None
            if view.readonly:
                raise TypeError("object with buffer protocol required")
            if view.nbytes < len(data):
                raise ValueError("output too small")
        if self._key_type == _NONE:
            self._ctx = self._context(encrypt)
            self._key_type = _ENC if encrypt else _DEC
        elif self._key_type != (_ENC if encrypt else _DEC):
            raise ValueError("can't encrypt & decrypt")
        result = self._ctx.update(data)
        if out is None:
            return result
        view = memoryview(out).cast("B")
        view[: len(result)] = result
        return out

    def encrypt(self, *args, **kwargs):
        if kwargs:
            raise TypeError("function doesn't take keyword arguments")
        return self._process(args, True)

    def decrypt(self, *args, **kwargs):
        if kwargs:
            raise TypeError("function doesn't take keyword arguments")
        return self._process(args, False)

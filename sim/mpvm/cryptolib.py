"""`cryptolib` for the firmware on the MicroPython VM: the ESP32 has it in C (mbedtls, hardware
AES), the VM has none, and the firmware's pure-Python fallback (protocol.aes) would put AES
tables and ~1.5 KB per key on the heap that a device never holds. The AES itself runs on the host
(board.mjs's `hostaes`, node's OpenSSL), as the C module's runs outside the Python heap.

ECB only (mode 1, what the firmware uses; the ESP32 build has no CTR) and the C module's rules:
positional arguments, 16- or 32-byte keys, whole blocks, one direction per object, an out
buffer that may alias the input. sim/fakes/cryptolib.py is the same API on CPython.
"""

import hostaes


class aes:
    def __init__(self, key, mode, *iv):
        if mode != 1:
            raise ValueError("mode")
        if len(key) not in (16, 32):
            raise ValueError("key")
        self._key = bytes(key)
        self._dir = 0  # 1 encrypt, 2 decrypt: fixed by the first call

    def encrypt(self, data, out=None, d=1):
        if self._dir and self._dir != d:
            raise ValueError("can't encrypt & decrypt")
        self._dir = d
        if len(data) % 16:
            raise ValueError("blksize % 16")
        # as hex: a str crosses to JS by value, bytes would stay pinned (see board.mjs)
        r = bytes.fromhex(hostaes.ecb(self._key.hex(), bytes(data).hex(), d == 1))
        if out is None:
            return r
        if len(out) < len(r):
            raise ValueError("output too small")
        out[:len(r)] = r
        return out

    def decrypt(self, data, out=None):
        return self.encrypt(data, out, 2)

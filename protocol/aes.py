"""Pure-Python AES-128 (FIPS-197), for MicroPython boards built without cryptolib.

Byte-oriented on purpose: 32-bit T-tables would overflow MicroPython's 31-bit small ints on an
ESP32 and turn every lookup into a heap-allocated long int. The state lives in 16 local
variables (the fastest storage MicroPython has) and the tables are three 256-byte `bytes`
constants (S-box, inverse S-box, xtime), which a device runs from flash. The round keys are one
176-byte `bytes` per key, not tuples of ints: a device keeps several keys cached and RAM is what
it lacks, not AES speed.
Not constant-time: acceptable for frames that are on the air anyway, not for guarding
long-term secrets against local attackers.
"""


from protocol.cipher import _check

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# FIPS-197 S-box, its inverse, and xtime (multiply by x in GF(2^8)): bytes constants, so they
# stay in flash (tests/protocol/test_aes.py checks them against the definition); private
# consts, so a device keeps no names for them either. Errors (bad key or block length) are
# ValueErrors.
_SBOX = const(
    b"\x63\x7c\x77\x7b\xf2\x6b\x6f\xc5\x30\x01\x67\x2b\xfe\xd7\xab\x76"
    b"\xca\x82\xc9\x7d\xfa\x59\x47\xf0\xad\xd4\xa2\xaf\x9c\xa4\x72\xc0"
    b"\xb7\xfd\x93\x26\x36\x3f\xf7\xcc\x34\xa5\xe5\xf1\x71\xd8\x31\x15"
    b"\x04\xc7\x23\xc3\x18\x96\x05\x9a\x07\x12\x80\xe2\xeb\x27\xb2\x75"
    b"\x09\x83\x2c\x1a\x1b\x6e\x5a\xa0\x52\x3b\xd6\xb3\x29\xe3\x2f\x84"
    b"\x53\xd1\x00\xed\x20\xfc\xb1\x5b\x6a\xcb\xbe\x39\x4a\x4c\x58\xcf"
    b"\xd0\xef\xaa\xfb\x43\x4d\x33\x85\x45\xf9\x02\x7f\x50\x3c\x9f\xa8"
    b"\x51\xa3\x40\x8f\x92\x9d\x38\xf5\xbc\xb6\xda\x21\x10\xff\xf3\xd2"
    b"\xcd\x0c\x13\xec\x5f\x97\x44\x17\xc4\xa7\x7e\x3d\x64\x5d\x19\x73"
    b"\x60\x81\x4f\xdc\x22\x2a\x90\x88\x46\xee\xb8\x14\xde\x5e\x0b\xdb"
    b"\xe0\x32\x3a\x0a\x49\x06\x24\x5c\xc2\xd3\xac\x62\x91\x95\xe4\x79"
    b"\xe7\xc8\x37\x6d\x8d\xd5\x4e\xa9\x6c\x56\xf4\xea\x65\x7a\xae\x08"
    b"\xba\x78\x25\x2e\x1c\xa6\xb4\xc6\xe8\xdd\x74\x1f\x4b\xbd\x8b\x8a"
    b"\x70\x3e\xb5\x66\x48\x03\xf6\x0e\x61\x35\x57\xb9\x86\xc1\x1d\x9e"
    b"\xe1\xf8\x98\x11\x69\xd9\x8e\x94\x9b\x1e\x87\xe9\xce\x55\x28\xdf"
    b"\x8c\xa1\x89\x0d\xbf\xe6\x42\x68\x41\x99\x2d\x0f\xb0\x54\xbb\x16"
)
_INV_SBOX = const(
    b"\x52\x09\x6a\xd5\x30\x36\xa5\x38\xbf\x40\xa3\x9e\x81\xf3\xd7\xfb"
    b"\x7c\xe3\x39\x82\x9b\x2f\xff\x87\x34\x8e\x43\x44\xc4\xde\xe9\xcb"
    b"\x54\x7b\x94\x32\xa6\xc2\x23\x3d\xee\x4c\x95\x0b\x42\xfa\xc3\x4e"
    b"\x08\x2e\xa1\x66\x28\xd9\x24\xb2\x76\x5b\xa2\x49\x6d\x8b\xd1\x25"
    b"\x72\xf8\xf6\x64\x86\x68\x98\x16\xd4\xa4\x5c\xcc\x5d\x65\xb6\x92"
    b"\x6c\x70\x48\x50\xfd\xed\xb9\xda\x5e\x15\x46\x57\xa7\x8d\x9d\x84"
    b"\x90\xd8\xab\x00\x8c\xbc\xd3\x0a\xf7\xe4\x58\x05\xb8\xb3\x45\x06"
    b"\xd0\x2c\x1e\x8f\xca\x3f\x0f\x02\xc1\xaf\xbd\x03\x01\x13\x8a\x6b"
    b"\x3a\x91\x11\x41\x4f\x67\xdc\xea\x97\xf2\xcf\xce\xf0\xb4\xe6\x73"
    b"\x96\xac\x74\x22\xe7\xad\x35\x85\xe2\xf9\x37\xe8\x1c\x75\xdf\x6e"
    b"\x47\xf1\x1a\x71\x1d\x29\xc5\x89\x6f\xb7\x62\x0e\xaa\x18\xbe\x1b"
    b"\xfc\x56\x3e\x4b\xc6\xd2\x79\x20\x9a\xdb\xc0\xfe\x78\xcd\x5a\xf4"
    b"\x1f\xdd\xa8\x33\x88\x07\xc7\x31\xb1\x12\x10\x59\x27\x80\xec\x5f"
    b"\x60\x51\x7f\xa9\x19\xb5\x4a\x0d\x2d\xe5\x7a\x9f\x93\xc9\x9c\xef"
    b"\xa0\xe0\x3b\x4d\xae\x2a\xf5\xb0\xc8\xeb\xbb\x3c\x83\x53\x99\x61"
    b"\x17\x2b\x04\x7e\xba\x77\xd6\x26\xe1\x69\x14\x63\x55\x21\x0c\x7d"
)
_XTIME = const(
    b"\x00\x02\x04\x06\x08\x0a\x0c\x0e\x10\x12\x14\x16\x18\x1a\x1c\x1e"
    b"\x20\x22\x24\x26\x28\x2a\x2c\x2e\x30\x32\x34\x36\x38\x3a\x3c\x3e"
    b"\x40\x42\x44\x46\x48\x4a\x4c\x4e\x50\x52\x54\x56\x58\x5a\x5c\x5e"
    b"\x60\x62\x64\x66\x68\x6a\x6c\x6e\x70\x72\x74\x76\x78\x7a\x7c\x7e"
    b"\x80\x82\x84\x86\x88\x8a\x8c\x8e\x90\x92\x94\x96\x98\x9a\x9c\x9e"
    b"\xa0\xa2\xa4\xa6\xa8\xaa\xac\xae\xb0\xb2\xb4\xb6\xb8\xba\xbc\xbe"
    b"\xc0\xc2\xc4\xc6\xc8\xca\xcc\xce\xd0\xd2\xd4\xd6\xd8\xda\xdc\xde"
    b"\xe0\xe2\xe4\xe6\xe8\xea\xec\xee\xf0\xf2\xf4\xf6\xf8\xfa\xfc\xfe"
    b"\x1b\x19\x1f\x1d\x13\x11\x17\x15\x0b\x09\x0f\x0d\x03\x01\x07\x05"
    b"\x3b\x39\x3f\x3d\x33\x31\x37\x35\x2b\x29\x2f\x2d\x23\x21\x27\x25"
    b"\x5b\x59\x5f\x5d\x53\x51\x57\x55\x4b\x49\x4f\x4d\x43\x41\x47\x45"
    b"\x7b\x79\x7f\x7d\x73\x71\x77\x75\x6b\x69\x6f\x6d\x63\x61\x67\x65"
    b"\x9b\x99\x9f\x9d\x93\x91\x97\x95\x8b\x89\x8f\x8d\x83\x81\x87\x85"
    b"\xbb\xb9\xbf\xbd\xb3\xb1\xb7\xb5\xab\xa9\xaf\xad\xa3\xa1\xa7\xa5"
    b"\xdb\xd9\xdf\xdd\xd3\xd1\xd7\xd5\xcb\xc9\xcf\xcd\xc3\xc1\xc7\xc5"
    b"\xfb\xf9\xff\xfd\xf3\xf1\xf7\xf5\xeb\xe9\xef\xed\xe3\xe1\xe7\xe5"
)


class AES:
    """AES-128 block cipher with the key schedule expanded once.

    `encrypt_block_into(data, out)` allocates nothing and accepts `out is data` (it reads the
    whole block before writing), which is what the device-side CMAC and keystream loops use.
    """

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes, got %d" % len(key))
        S = _SBOX
        w = bytearray(176)
        w[0:16] = key
        rcon = 1
        for i in range(16, 176, 4):
            t0 = w[i - 4]
            t1 = w[i - 3]
            t2 = w[i - 2]
            t3 = w[i - 1]
            if i & 15 == 0:
                t0, t1, t2, t3 = S[t1] ^ rcon, S[t2], S[t3], S[t0]
                rcon = _XTIME[rcon]
            w[i] = w[i - 16] ^ t0
            w[i + 1] = w[i - 15] ^ t1
            w[i + 2] = w[i - 14] ^ t2
            w[i + 3] = w[i - 13] ^ t3
        self._rk = bytes(w)  # round r's key is w[16 * r : 16 * r + 16]

    def encrypt_block_into(self, data, out):
        if len(data) != 16 or len(out) < 16:
            raise ValueError("AES block must be 16 bytes, got %d (out %d)" % (len(data), len(out)))
        S = _SBOX
        X = _XTIME
        rk = self._rk
        o = 0
        s0 = data[0] ^ rk[o]
        s1 = data[1] ^ rk[o + 1]
        s2 = data[2] ^ rk[o + 2]
        s3 = data[3] ^ rk[o + 3]
        s4 = data[4] ^ rk[o + 4]
        s5 = data[5] ^ rk[o + 5]
        s6 = data[6] ^ rk[o + 6]
        s7 = data[7] ^ rk[o + 7]
        s8 = data[8] ^ rk[o + 8]
        s9 = data[9] ^ rk[o + 9]
        s10 = data[10] ^ rk[o + 10]
        s11 = data[11] ^ rk[o + 11]
        s12 = data[12] ^ rk[o + 12]
        s13 = data[13] ^ rk[o + 13]
        s14 = data[14] ^ rk[o + 14]
        s15 = data[15] ^ rk[o + 15]
        for r in range(1, 10):
            o = 16 * r
            # SubBytes + ShiftRows: column c row i takes state (i, c + i).
            a0 = S[s0]
            a1 = S[s5]
            a2 = S[s10]
            a3 = S[s15]
            a4 = S[s4]
            a5 = S[s9]
            a6 = S[s14]
            a7 = S[s3]
            a8 = S[s8]
            a9 = S[s13]
            a10 = S[s2]
            a11 = S[s7]
            a12 = S[s12]
            a13 = S[s1]
            a14 = S[s6]
            a15 = S[s11]
            # MixColumns: b_i = a_i ^ t ^ 2(a_i ^ a_i+1), t = xor of the column.
            t = a0 ^ a1 ^ a2 ^ a3
            s0 = a0 ^ t ^ X[a0 ^ a1] ^ rk[o]
            s1 = a1 ^ t ^ X[a1 ^ a2] ^ rk[o + 1]
            s2 = a2 ^ t ^ X[a2 ^ a3] ^ rk[o + 2]
            s3 = a3 ^ t ^ X[a3 ^ a0] ^ rk[o + 3]
            t = a4 ^ a5 ^ a6 ^ a7
            s4 = a4 ^ t ^ X[a4 ^ a5] ^ rk[o + 4]
            s5 = a5 ^ t ^ X[a5 ^ a6] ^ rk[o + 5]
            s6 = a6 ^ t ^ X[a6 ^ a7] ^ rk[o + 6]
            s7 = a7 ^ t ^ X[a7 ^ a4] ^ rk[o + 7]
            t = a8 ^ a9 ^ a10 ^ a11
            s8 = a8 ^ t ^ X[a8 ^ a9] ^ rk[o + 8]
            s9 = a9 ^ t ^ X[a9 ^ a10] ^ rk[o + 9]
            s10 = a10 ^ t ^ X[a10 ^ a11] ^ rk[o + 10]
            s11 = a11 ^ t ^ X[a11 ^ a8] ^ rk[o + 11]
            t = a12 ^ a13 ^ a14 ^ a15
            s12 = a12 ^ t ^ X[a12 ^ a13] ^ rk[o + 12]
            s13 = a13 ^ t ^ X[a13 ^ a14] ^ rk[o + 13]
            s14 = a14 ^ t ^ X[a14 ^ a15] ^ rk[o + 14]
            s15 = a15 ^ t ^ X[a15 ^ a12] ^ rk[o + 15]
        o = 160
        out[0] = S[s0] ^ rk[o]
        out[1] = S[s5] ^ rk[o + 1]
        out[2] = S[s10] ^ rk[o + 2]
        out[3] = S[s15] ^ rk[o + 3]
        out[4] = S[s4] ^ rk[o + 4]
        out[5] = S[s9] ^ rk[o + 5]
        out[6] = S[s14] ^ rk[o + 6]
        out[7] = S[s3] ^ rk[o + 7]
        out[8] = S[s8] ^ rk[o + 8]
        out[9] = S[s13] ^ rk[o + 9]
        out[10] = S[s2] ^ rk[o + 10]
        out[11] = S[s7] ^ rk[o + 11]
        out[12] = S[s12] ^ rk[o + 12]
        out[13] = S[s1] ^ rk[o + 13]
        out[14] = S[s6] ^ rk[o + 14]
        out[15] = S[s11] ^ rk[o + 15]

    def decrypt_block_into(self, data, out):
        if len(data) != 16 or len(out) < 16:
            raise ValueError("AES block must be 16 bytes, got %d (out %d)" % (len(data), len(out)))
        S = _INV_SBOX
        X = _XTIME
        rk = self._rk
        o = 160
        s0 = data[0] ^ rk[o]
        s1 = data[1] ^ rk[o + 1]
        s2 = data[2] ^ rk[o + 2]
        s3 = data[3] ^ rk[o + 3]
        s4 = data[4] ^ rk[o + 4]
        s5 = data[5] ^ rk[o + 5]
        s6 = data[6] ^ rk[o + 6]
        s7 = data[7] ^ rk[o + 7]
        s8 = data[8] ^ rk[o + 8]
        s9 = data[9] ^ rk[o + 9]
        s10 = data[10] ^ rk[o + 10]
        s11 = data[11] ^ rk[o + 11]
        s12 = data[12] ^ rk[o + 12]
        s13 = data[13] ^ rk[o + 13]
        s14 = data[14] ^ rk[o + 14]
        s15 = data[15] ^ rk[o + 15]
        for r in range(9, 0, -1):
            o = 16 * r
            # InvShiftRows + InvSubBytes + AddRoundKey: column c row i takes state (i, c - i).
            a0 = S[s0] ^ rk[o]
            a1 = S[s13] ^ rk[o + 1]
            a2 = S[s10] ^ rk[o + 2]
            a3 = S[s7] ^ rk[o + 3]
            a4 = S[s4] ^ rk[o + 4]
            a5 = S[s1] ^ rk[o + 5]
            a6 = S[s14] ^ rk[o + 6]
            a7 = S[s11] ^ rk[o + 7]
            a8 = S[s8] ^ rk[o + 8]
            a9 = S[s5] ^ rk[o + 9]
            a10 = S[s2] ^ rk[o + 10]
            a11 = S[s15] ^ rk[o + 11]
            a12 = S[s12] ^ rk[o + 12]
            a13 = S[s9] ^ rk[o + 13]
            a14 = S[s6] ^ rk[o + 14]
            a15 = S[s3] ^ rk[o + 15]
            # InvMixColumns = MixColumns after adding 4(a_i ^ a_i+2) to each byte.
            u = X[X[a0 ^ a2]]
            v = X[X[a1 ^ a3]]
            a0 ^= u
            a1 ^= v
            a2 ^= u
            a3 ^= v
            t = a0 ^ a1 ^ a2 ^ a3
            s0 = a0 ^ t ^ X[a0 ^ a1]
            s1 = a1 ^ t ^ X[a1 ^ a2]
            s2 = a2 ^ t ^ X[a2 ^ a3]
            s3 = a3 ^ t ^ X[a3 ^ a0]
            u = X[X[a4 ^ a6]]
            v = X[X[a5 ^ a7]]
            a4 ^= u
            a5 ^= v
            a6 ^= u
            a7 ^= v
            t = a4 ^ a5 ^ a6 ^ a7
            s4 = a4 ^ t ^ X[a4 ^ a5]
            s5 = a5 ^ t ^ X[a5 ^ a6]
            s6 = a6 ^ t ^ X[a6 ^ a7]
            s7 = a7 ^ t ^ X[a7 ^ a4]
            u = X[X[a8 ^ a10]]
            v = X[X[a9 ^ a11]]
            a8 ^= u
            a9 ^= v
            a10 ^= u
            a11 ^= v
            t = a8 ^ a9 ^ a10 ^ a11
            s8 = a8 ^ t ^ X[a8 ^ a9]
            s9 = a9 ^ t ^ X[a9 ^ a10]
            s10 = a10 ^ t ^ X[a10 ^ a11]
            s11 = a11 ^ t ^ X[a11 ^ a8]
            u = X[X[a12 ^ a14]]
            v = X[X[a13 ^ a15]]
            a12 ^= u
            a13 ^= v
            a14 ^= u
            a15 ^= v
            t = a12 ^ a13 ^ a14 ^ a15
            s12 = a12 ^ t ^ X[a12 ^ a13]
            s13 = a13 ^ t ^ X[a13 ^ a14]
            s14 = a14 ^ t ^ X[a14 ^ a15]
            s15 = a15 ^ t ^ X[a15 ^ a12]
        o = 0
        out[0] = S[s0] ^ rk[o]
        out[1] = S[s13] ^ rk[o + 1]
        out[2] = S[s10] ^ rk[o + 2]
        out[3] = S[s7] ^ rk[o + 3]
        out[4] = S[s4] ^ rk[o + 4]
        out[5] = S[s1] ^ rk[o + 5]
        out[6] = S[s14] ^ rk[o + 6]
        out[7] = S[s11] ^ rk[o + 7]
        out[8] = S[s8] ^ rk[o + 8]
        out[9] = S[s5] ^ rk[o + 9]
        out[10] = S[s2] ^ rk[o + 10]
        out[11] = S[s15] ^ rk[o + 11]
        out[12] = S[s12] ^ rk[o + 12]
        out[13] = S[s9] ^ rk[o + 13]
        out[14] = S[s6] ^ rk[o + 14]
        out[15] = S[s3] ^ rk[o + 15]


class ECB:
    """protocol.cipher's ECB interface ("pure" backend) over AES: encrypt / decrypt of any
    multiple of 16 bytes, encrypt_into in place."""

    def __init__(self, key):
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

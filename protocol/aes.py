"""Pure-Python AES-128 (FIPS-197), for MicroPython boards built without cryptolib.

Byte-oriented on purpose: 32-bit T-tables would overflow MicroPython's 31-bit small ints on an
ESP32 and turn every lookup into a heap-allocated long int. The state lives in 16 local
variables (the fastest storage MicroPython has) and the tables are three 256-byte `bytes`
objects (S-box, inverse S-box, xtime) computed at import. Round keys are kept as 11 tuples
(about 1.5 KB per key) because unpacking a tuple into locals is far cheaper than indexing.
Not constant-time: acceptable for frames that are on the air anyway, not for guarding
long-term secrets against local attackers.
"""


class AESError(ValueError):
    """Bad key or block length."""


def _build_tables():
    sbox = bytearray(256)
    xt = bytearray(256)
    for i in range(256):
        xt[i] = ((i << 1) ^ (0x1B if i & 0x80 else 0)) & 0xFF
    # Walk GF(2^8)* with generator 3 (p) and its inverse (q), so q = p^-1 without a division.
    p = q = 1
    while True:
        p = p ^ xt[p]
        q ^= (q << 1) & 0xFF
        q ^= (q << 2) & 0xFF
        q ^= (q << 4) & 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ (((q << 1) | (q >> 7)) & 0xFF) ^ (((q << 2) | (q >> 6)) & 0xFF)
        x ^= (((q << 3) | (q >> 5)) & 0xFF) ^ (((q << 4) | (q >> 4)) & 0xFF)
        sbox[p] = x ^ 0x63
        if p == 1:
            break
    sbox[0] = 0x63
    inv = bytearray(256)
    for i in range(256):
        inv[sbox[i]] = i
    return bytes(sbox), bytes(inv), bytes(xt)


SBOX, INV_SBOX, XTIME = _build_tables()


def _expand_key(key):
    S = SBOX
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
            rcon = XTIME[rcon]
        w[i] = w[i - 16] ^ t0
        w[i + 1] = w[i - 15] ^ t1
        w[i + 2] = w[i - 14] ^ t2
        w[i + 3] = w[i - 13] ^ t3
    # Tuples, because unpacking a tuple into 16 locals is the cheapest per-round key load.
    return tuple([tuple(w[r : r + 16]) for r in range(0, 176, 16)])


class AES:
    """AES-128 block cipher with the key schedule expanded once.

    `encrypt_block_into(block, out)` allocates nothing and accepts `out is block` (it reads the
    whole block before writing), which is what the device-side CMAC and keystream loops use.
    """

    def __init__(self, key):
        if len(key) != 16:
            raise AESError("AES-128 key must be 16 bytes, got %d" % len(key))
        self._rk = _expand_key(key)

    def encrypt_block(self, block):
        out = bytearray(16)
        self.encrypt_block_into(block, out)
        return bytes(out)

    def decrypt_block(self, block):
        out = bytearray(16)
        self.decrypt_block_into(block, out)
        return bytes(out)

    def encrypt_block_into(self, block, out):
        if len(block) != 16 or len(out) < 16:
            raise AESError("AES block must be 16 bytes, got %d (out %d)" % (len(block), len(out)))
        S = SBOX
        X = XTIME
        rk = self._rk
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[0]
        s0 = block[0] ^ k0
        s1 = block[1] ^ k1
        s2 = block[2] ^ k2
        s3 = block[3] ^ k3
        s4 = block[4] ^ k4
        s5 = block[5] ^ k5
        s6 = block[6] ^ k6
        s7 = block[7] ^ k7
        s8 = block[8] ^ k8
        s9 = block[9] ^ k9
        s10 = block[10] ^ k10
        s11 = block[11] ^ k11
        s12 = block[12] ^ k12
        s13 = block[13] ^ k13
        s14 = block[14] ^ k14
        s15 = block[15] ^ k15
        for r in range(1, 10):
            k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[r]
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
            s0 = a0 ^ t ^ X[a0 ^ a1] ^ k0
            s1 = a1 ^ t ^ X[a1 ^ a2] ^ k1
            s2 = a2 ^ t ^ X[a2 ^ a3] ^ k2
            s3 = a3 ^ t ^ X[a3 ^ a0] ^ k3
            t = a4 ^ a5 ^ a6 ^ a7
            s4 = a4 ^ t ^ X[a4 ^ a5] ^ k4
            s5 = a5 ^ t ^ X[a5 ^ a6] ^ k5
            s6 = a6 ^ t ^ X[a6 ^ a7] ^ k6
            s7 = a7 ^ t ^ X[a7 ^ a4] ^ k7
            t = a8 ^ a9 ^ a10 ^ a11
            s8 = a8 ^ t ^ X[a8 ^ a9] ^ k8
            s9 = a9 ^ t ^ X[a9 ^ a10] ^ k9
            s10 = a10 ^ t ^ X[a10 ^ a11] ^ k10
            s11 = a11 ^ t ^ X[a11 ^ a8] ^ k11
            t = a12 ^ a13 ^ a14 ^ a15
            s12 = a12 ^ t ^ X[a12 ^ a13] ^ k12
            s13 = a13 ^ t ^ X[a13 ^ a14] ^ k13
            s14 = a14 ^ t ^ X[a14 ^ a15] ^ k14
            s15 = a15 ^ t ^ X[a15 ^ a12] ^ k15
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[10]
        out[0] = S[s0] ^ k0
        out[1] = S[s5] ^ k1
        out[2] = S[s10] ^ k2
        out[3] = S[s15] ^ k3
        out[4] = S[s4] ^ k4
        out[5] = S[s9] ^ k5
        out[6] = S[s14] ^ k6
        out[7] = S[s3] ^ k7
        out[8] = S[s8] ^ k8
        out[9] = S[s13] ^ k9
        out[10] = S[s2] ^ k10
        out[11] = S[s7] ^ k11
        out[12] = S[s12] ^ k12
        out[13] = S[s1] ^ k13
        out[14] = S[s6] ^ k14
        out[15] = S[s11] ^ k15

    def decrypt_block_into(self, block, out):
        if len(block) != 16 or len(out) < 16:
            raise AESError("AES block must be 16 bytes, got %d (out %d)" % (len(block), len(out)))
        S = INV_SBOX
        X = XTIME
        rk = self._rk
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[10]
        s0 = block[0] ^ k0
        s1 = block[1] ^ k1
        s2 = block[2] ^ k2
        s3 = block[3] ^ k3
        s4 = block[4] ^ k4
        s5 = block[5] ^ k5
        s6 = block[6] ^ k6
        s7 = block[7] ^ k7
        s8 = block[8] ^ k8
        s9 = block[9] ^ k9
        s10 = block[10] ^ k10
        s11 = block[11] ^ k11
        s12 = block[12] ^ k12
        s13 = block[13] ^ k13
        s14 = block[14] ^ k14
        s15 = block[15] ^ k15
        for r in range(9, 0, -1):
            k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[r]
            # InvShiftRows + InvSubBytes + AddRoundKey: column c row i takes state (i, c - i).
            a0 = S[s0] ^ k0
            a1 = S[s13] ^ k1
            a2 = S[s10] ^ k2
            a3 = S[s7] ^ k3
            a4 = S[s4] ^ k4
            a5 = S[s1] ^ k5
            a6 = S[s14] ^ k6
            a7 = S[s11] ^ k7
            a8 = S[s8] ^ k8
            a9 = S[s5] ^ k9
            a10 = S[s2] ^ k10
            a11 = S[s15] ^ k11
            a12 = S[s12] ^ k12
            a13 = S[s9] ^ k13
            a14 = S[s6] ^ k14
            a15 = S[s3] ^ k15
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
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rk[0]
        out[0] = S[s0] ^ k0
        out[1] = S[s13] ^ k1
        out[2] = S[s10] ^ k2
        out[3] = S[s7] ^ k3
        out[4] = S[s4] ^ k4
        out[5] = S[s1] ^ k5
        out[6] = S[s14] ^ k6
        out[7] = S[s11] ^ k7
        out[8] = S[s8] ^ k8
        out[9] = S[s5] ^ k9
        out[10] = S[s2] ^ k10
        out[11] = S[s15] ^ k11
        out[12] = S[s12] ^ k12
        out[13] = S[s9] ^ k13
        out[14] = S[s6] ^ k14
        out[15] = S[s3] ^ k15

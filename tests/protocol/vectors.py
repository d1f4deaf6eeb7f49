"""Public test vectors and test-local reference functions (built directly on OpenSSL through
cryptography) shared by the AES, CMAC and LoRaWAN test modules."""

import binascii

from cryptography.hazmat.primitives import cmac as ossl_cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

H = binascii.unhexlify

# --- AES-128 / AES-CMAC (hex strings) ------------------------------------------------------------

# The key of FIPS-197 appendix B and SP 800-38A F.1.1, and the four SP 800-38A plaintext
# blocks; RFC 4493 section 4 reuses both for its CMAC examples.
SP800_38A_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
SP800_38A_BLOCKS = (
    "6bc1bee22e409f96e93d7e117393172a",
    "ae2d8a571e03ac9c9eb76fac45af8e51",
    "30c81c46a35ce411e5fbc1191a0a52ef",
    "f69f2445df4f9b17ad2b417be66c3710",
)
SP800_38A_ECB_AES128 = (
    "3ad77bb40d7a3660a89ecaf32466ef97",
    "f5d3d58503b9699de785895a96fdbaaf",
    "43b1cd7f598ece23881b00e3ed030688",
    "7b0c785e27e8ad3f8223207104725dd4",
)

# (key, plaintext, ciphertext): FIPS-197 appendix B and C.1, SP 800-38A F.1.1 (ECB-AES128).
AES_VECTORS = [
    (SP800_38A_KEY, "3243f6a8885a308d313198a2e0370734", "3925841d02dc09fbdc118597196a0b32"),
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff", "69c4e0d86a7b0430d8cdb78070b4c55a"),
] + [(SP800_38A_KEY, pt, ct) for pt, ct in zip(SP800_38A_BLOCKS, SP800_38A_ECB_AES128)]

RFC4493_KEY = SP800_38A_KEY
RFC4493_MSG = "".join(SP800_38A_BLOCKS)

# --- LoRaWAN 1.0.x (bytes): /work/shared/reference/lorawan.md and lora-packet --------------------

NWK_S_KEY = H("44024241ed4ce9a68c6a8bc055233fd3")
APP_S_KEY = H("ec925802ae430ca77fd3dd73cb2cc588")
VEC1 = H("40F17DBE4900020001954378762B11FF0D")
VEC2 = H(
    "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027"
    "e7e5e334263376affb8aa17ad30075293f28dea8a20af3c5e7"
)
FOX = b"The quick brown fox jumps over the lazy dog."  # VEC2's FRMPayload, decrypted
APP_KEY3 = H("0102030405060708090a0b0c0d0e0f10")  # the AppKey VEC3 is signed with
VEC3 = H("0001010101010101010202020202020202030309b97b32")

# --- an independent, test-local reading of the specs, on OpenSSL ---------------------------------


def ref_cmac(key, msg):
    c = ossl_cmac.CMAC(algorithms.AES(key))
    c.update(msg)
    return c.finalize()


def ref_ecb(key, data, decrypt=False):
    c = Cipher(algorithms.AES(key), modes.ECB())
    ctx = c.decryptor() if decrypt else c.encryptor()
    return ctx.update(data) + ctx.finalize()


def ref_block(tag, direction, dev_addr, fcnt, last):
    return (
        bytes([tag, 0, 0, 0, 0, direction])
        + dev_addr.to_bytes(4, "little")
        + fcnt.to_bytes(4, "little")
        + bytes([0, last])
    )


def ref_mic(key, direction, dev_addr, fcnt, msg):
    return ref_cmac(key, ref_block(0x49, direction, dev_addr, fcnt, len(msg)) + msg)[:4]


def ref_crypt(key, direction, dev_addr, fcnt, payload):
    ks = b"".join(ref_ecb(key, ref_block(0x01, direction, dev_addr, fcnt, i)) for i in range(1, len(payload) // 16 + 2))
    return bytes(a ^ b for a, b in zip(payload, ks))

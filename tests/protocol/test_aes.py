"""AES-128 on every backend: FIPS-197 / SP 800-38A vectors, agreement with OpenSSL, backend
selection, caching, and the fake cryptolib's fidelity to MicroPython's C module."""

import binascii
import sys

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.fakes.cryptolib as fake_cryptolib
import sim.mpvm
from protocol import aes, cipher
from tests.protocol.vectors import AES_VECTORS as VECTORS
from tests.protocol.vectors import ref_ecb

H = binascii.unhexlify

pytestmark = pytest.mark.usefixtures("fake_cryptolib")


# --- the pure implementation itself ---------------------------------------------------------


def test_sbox_known_entries_and_inverse():
    assert aes._SBOX[0x00] == 0x63 and aes._SBOX[0x01] == 0x7C and aes._SBOX[0x53] == 0xED
    assert aes._SBOX[0xFF] == 0x16
    assert sorted(aes._SBOX) == list(range(256))
    assert all(aes._INV_SBOX[aes._SBOX[i]] == i for i in range(256))


@pytest.mark.parametrize("key,pt,ct", VECTORS)
def test_pure_class_vectors(key, pt, ct):
    a = aes.AES(H(key))
    out = bytearray(16)
    a.encrypt_block_into(H(pt), out)
    assert out == H(ct)
    a.decrypt_block_into(H(ct), out)
    assert out == H(pt)
    buf = bytearray(H(pt))
    a.encrypt_block_into(buf, buf)  # in place
    assert buf == H(ct)
    a.decrypt_block_into(memoryview(buf), buf)
    assert buf == H(pt)


@pytest.mark.parametrize("bad", [b"", b"k" * 15, b"k" * 17, b"k" * 32])
def test_pure_rejects_bad_key(bad):
    with pytest.raises(ValueError, match="16 bytes"):
        aes.AES(bad)


@pytest.mark.parametrize("n", [0, 1, 15, 17, 32])
def test_pure_rejects_bad_block(n):
    a = aes.AES(bytes(16))
    with pytest.raises(ValueError):
        a.encrypt_block_into(bytes(n), bytearray(16))
    with pytest.raises(ValueError):
        a.decrypt_block_into(bytes(n), bytearray(16))
    with pytest.raises(ValueError):
        a.encrypt_block_into(bytes(16), bytearray(8))


# --- every backend ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", cipher.BACKENDS)
@pytest.mark.parametrize("key,pt,ct", VECTORS)
def test_vectors_every_backend(backend, key, pt, ct):
    e = cipher.ecb(H(key), backend)
    assert e.encrypt(H(pt)) == H(ct)
    assert e.decrypt(H(ct)) == H(pt)
    out = bytearray(16)
    e.encrypt_into(H(pt), out)
    assert out == H(ct)


@pytest.mark.parametrize("backend", cipher.BACKENDS)
def test_multi_block_ecb_every_backend(backend):
    key = H(VECTORS[2][0])
    pt = b"".join(H(v[1]) for v in VECTORS[2:])
    ct = b"".join(H(v[2]) for v in VECTORS[2:])
    e = cipher.ecb(key, backend)
    assert e.encrypt(pt) == ct
    assert e.decrypt(ct) == pt
    # Interleaving directions on one cached object must work even though a cryptolib
    # object is locked to one direction.
    assert e.encrypt(pt[:16]) == ct[:16] and e.decrypt(ct[:16]) == pt[:16]
    buf = bytearray(pt)
    e.encrypt_into(buf, buf)
    assert buf == ct


@settings(max_examples=150, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), blocks=st.integers(1, 4), data=st.data())
def test_backends_agree_with_openssl(key, blocks, data):
    pt = data.draw(st.binary(min_size=16 * blocks, max_size=16 * blocks))
    ct = ref_ecb(key, pt)
    for backend in cipher.BACKENDS:
        e = cipher.ecb(key, backend)
        assert e.encrypt(pt) == ct, backend
        assert e.decrypt(ct) == pt, backend
        assert e.decrypt(pt) == ref_ecb(key, pt, decrypt=True), backend


@settings(max_examples=100, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), block=st.binary(min_size=16, max_size=16))
def test_pure_matches_fake_cryptolib_directly(key, block):
    # Two independent implementations, called through their native interfaces.
    ref = fake_cryptolib.aes(key, 1).encrypt(block)
    out = bytearray(16)
    aes.AES(key).encrypt_block_into(block, out)
    assert out == ref
    aes.AES(key).decrypt_block_into(ref, out)
    assert out == block


@pytest.mark.parametrize("backend", cipher.BACKENDS)
@pytest.mark.parametrize("n", [1, 15, 17, 31])
def test_ecb_rejects_partial_blocks(backend, n):
    e = cipher.ecb(bytes(16), backend)
    with pytest.raises(cipher.CipherError, match="multiple of 16"):
        e.encrypt(bytes(n))
    with pytest.raises(cipher.CipherError, match="multiple of 16"):
        e.decrypt(bytes(n))


@pytest.mark.parametrize("backend", cipher.BACKENDS)
@pytest.mark.parametrize("n", [0, 8, 24, 32])
def test_ecb_rejects_bad_keys(backend, n):
    with pytest.raises(cipher.CipherError, match="16 bytes"):
        cipher.ecb(bytes(n), backend)


def test_unknown_backend():
    with pytest.raises(cipher.CipherError, match="unknown AES backend"):
        cipher.ecb(bytes(16), "openssl")
    with pytest.raises(ValueError):
        cipher.resolve("nope")


def test_backend_selection_order(monkeypatch):
    assert cipher.available_backends() == ["cryptography", "cryptolib", "pure"]
    cipher.clear_cache()
    assert cipher.default_backend() == "cryptography"

    # A MicroPython board: no cryptography, cryptolib present.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers", None)
    cipher.clear_cache()
    assert cipher.available_backends() == ["cryptolib", "pure"]
    assert cipher.default_backend() == "cryptolib"
    with pytest.raises(cipher.CipherError, match="not available"):
        cipher.ecb(b"x" * 16, "cryptography")

    # A build without cryptolib (or the WebAssembly VM).
    monkeypatch.setitem(sys.modules, "cryptolib", None)
    cipher.clear_cache()
    assert cipher.available_backends() == ["pure"]
    assert cipher.default_backend() == "pure"
    key, pt, ct = (H(x) for x in VECTORS[0])
    assert cipher.ecb(key).encrypt(pt) == ct
    with pytest.raises(cipher.CipherError, match="not available"):
        cipher.ecb(key, "cryptolib")

    monkeypatch.undo()
    cipher.clear_cache()
    assert cipher.default_backend() == "cryptography"


@pytest.mark.parametrize("backend", cipher.BACKENDS)
def test_cache_is_bounded_and_reused(backend, monkeypatch):
    monkeypatch.setattr(cipher, "CACHE_SIZE", 3)
    cipher.clear_cache()
    keys = [bytes([i]) * 16 for i in range(10)]
    for k in keys:
        e = cipher.ecb(k, backend)
        assert e.encrypt(bytes(16)) == ref_ecb(k, bytes(16))
        assert cipher.ecb(bytearray(k), backend) is e  # same key, any buffer type: cached
    assert len(cipher._caches[backend]) <= 3
    cipher.clear_cache()
    assert len(cipher._caches[backend]) == 0


# --- the fake cryptolib behaves like MicroPython's extmod/modcryptolib.c ------------------------


def test_fake_ecb_direction_lock():
    key, pt, ct = (H(x) for x in VECTORS[1])
    enc = fake_cryptolib.aes(key, 1)
    assert enc.encrypt(pt) == ct
    assert enc.encrypt(pt + pt) == ct + ct
    with pytest.raises(ValueError, match="can't encrypt & decrypt"):
        enc.decrypt(ct)
    dec = fake_cryptolib.aes(key, fake_cryptolib.MODE_ECB)
    assert dec.decrypt(ct) == pt
    with pytest.raises(ValueError, match="can't encrypt & decrypt"):
        dec.encrypt(pt)
    # Even an empty first call fixes the direction, as in the C code.
    empty = fake_cryptolib.aes(key, 1)
    assert empty.encrypt(b"") == b""
    with pytest.raises(ValueError):
        empty.decrypt(ct)


def test_fake_argument_rules():
    key = bytes(16)
    with pytest.raises(TypeError):
        fake_cryptolib.aes(key, mode=1)  # positional only on MicroPython
    with pytest.raises(TypeError):
        fake_cryptolib.aes(key)
    with pytest.raises(TypeError):
        fake_cryptolib.aes(key, "1")
    with pytest.raises(ValueError, match="mode"):
        fake_cryptolib.aes(key, 3)
    with pytest.raises(ValueError, match="mode"):
        fake_cryptolib.aes(key, 6, bytes(16))  # CTR is off in the stock ESP32 build
    with pytest.raises(ValueError, match="key"):
        fake_cryptolib.aes(bytes(24), 1)
    with pytest.raises(TypeError):
        fake_cryptolib.aes(12345, 1)
    with pytest.raises(ValueError, match="IV"):
        fake_cryptolib.aes(key, 2)
    with pytest.raises(ValueError, match="IV"):
        fake_cryptolib.aes(key, 2, bytes(8))
    fake_cryptolib.aes(bytes(32), 1, None)  # AES-256 keys and an explicit None IV are fine
    e = fake_cryptolib.aes(key, 1)
    with pytest.raises(ValueError, match="blksize"):
        e.encrypt(bytes(15))
    with pytest.raises(TypeError):
        e.encrypt(bytes(16), out_buf=bytearray(16))
    with pytest.raises(TypeError):
        e.encrypt(bytes(16), bytes(16))  # immutable out_buf
    with pytest.raises(ValueError, match="output too small"):
        e.encrypt(bytes(32), bytearray(16))


def test_fake_out_buffer_semantics():
    key, pt, ct = (H(x) for x in VECTORS[0])
    e = fake_cryptolib.aes(key, 1)
    out = bytearray(20)
    assert e.encrypt(pt, out) is out
    assert out[:16] == ct and out[16:] == bytes(4)
    buf = bytearray(pt)
    e.encrypt(buf, buf)
    assert buf == ct
    assert type(e.encrypt(pt)) is bytes


def test_fake_cbc_chains_across_calls():
    key, iv = bytes(range(16)), bytes(range(16, 32))
    data = bytes(range(64))
    c = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ref = c.update(data)
    e = fake_cryptolib.aes(key, 2, iv)
    assert e.encrypt(data[:16]) + e.encrypt(data[16:]) == ref
    d = fake_cryptolib.aes(key, 2, iv)
    assert d.decrypt(ref[:32]) + d.decrypt(ref[32:]) == data


def test_fake_ctr_when_enabled(monkeypatch):
    monkeypatch.setattr(fake_cryptolib, "CTR_ENABLED", True)
    key, iv = bytes(range(16)), bytes(15) + b"\xfe"
    data = bytes(range(50))
    ref = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(data)
    e = fake_cryptolib.aes(key, fake_cryptolib.MODE_CTR, iv)
    assert e.encrypt(data[:7]) + e.encrypt(data[7:]) == ref  # streams, any length
    d = fake_cryptolib.aes(key, 6, iv)
    assert d.decrypt(ref) == data
    with pytest.raises(ValueError):
        d.encrypt(data)


# --- on the MicroPython VM -------------------------------------------------------------------


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_pure_aes_on_micropython_matches_cpython():
    import random

    rng = random.Random(1234)
    cases = [(H(k), H(p)) for k, p, _ in VECTORS]
    cases += [(bytes(rng.getrandbits(8) for _ in range(16)), bytes(rng.getrandbits(8) for _ in range(16))) for _ in range(20)]
    script = "import binascii\nfrom protocol import aes, cipher\nprint(cipher.default_backend())\n"
    script += "H = binascii.unhexlify\nE = lambda b: binascii.hexlify(b).decode()\n"
    for k, p in cases:
        script += "a = aes.AES(H('%s'))\nc = bytearray(16)\na.encrypt_block_into(H('%s'), c)\np = bytearray(16)\na.decrypt_block_into(c, p)\nprint(E(c), E(p))\n" % (
            binascii.hexlify(k).decode(),
            binascii.hexlify(p).decode(),
        )
    # cipher.ecb over several blocks on the VM, too
    k, p = cases[-1]
    script += "print(E(cipher.ecb(H('%s')).encrypt(H('%s'))))\n" % (
        binascii.hexlify(k).decode(),
        binascii.hexlify(p * 3).decode(),
    )
    lines = sim.mpvm.run(script).split("\n")
    assert lines[0] == "pure"
    for (k, p), line in zip(cases, lines[1:]):
        c, back = line.split()
        assert H(c) == ref_ecb(k, p)
        assert H(back) == p
    assert H(lines[len(cases) + 1]) == ref_ecb(k, p * 3)

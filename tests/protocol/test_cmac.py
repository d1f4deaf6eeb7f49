"""AES-CMAC: RFC 4493 vectors on every backend, agreement with OpenSSL's CMAC (including runs
of messages under one key, which exercise the chained-context fast path), the prefix form,
and the same vectors on the MicroPython VM."""

import binascii
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.mpvm
from protocol import cipher
from protocol.cmac import cmac
from tests.protocol.vectors import RFC4493_KEY as RFC_KEY
from tests.protocol.vectors import RFC4493_MSG as RFC_MSG
from tests.protocol.vectors import ref_cmac

H = binascii.unhexlify

# RFC 4493 section 4, examples 1-4: (message length, tag)
RFC_EXAMPLES = [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
]


pytestmark = pytest.mark.usefixtures("fake_cryptolib")


@pytest.mark.parametrize("backend", cipher.BACKENDS)
@pytest.mark.parametrize("n,tag", RFC_EXAMPLES)
def test_rfc4493_examples(backend, n, tag):
    key, msg = H(RFC_KEY), H(RFC_MSG)[:n]
    assert cmac(key, msg, backend) == H(tag)
    assert cmac(bytearray(key), bytearray(msg), backend) == H(tag)
    assert cmac(key, memoryview(msg), backend) == H(tag)


@pytest.mark.parametrize("backend", cipher.BACKENDS)
def test_rfc4493_examples_in_sequence(backend):
    # Same key again and again, in mixed order: the cached state must not leak between calls.
    key = H(RFC_KEY)
    for n, tag in RFC_EXAMPLES * 3 + RFC_EXAMPLES[::-1]:
        assert cmac(key, H(RFC_MSG)[:n], backend) == H(tag)


def test_default_backend():
    assert cmac(H(RFC_KEY), H(RFC_MSG)) == H(RFC_EXAMPLES[3][1])


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=3),
    msgs=st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=80)), min_size=1, max_size=8),
)
def test_matches_openssl_cmac(keys, msgs):
    for ki, msg in msgs:
        key = keys[ki % len(keys)]
        ref = ref_cmac(key, msg)
        for backend in cipher.BACKENDS:
            assert cmac(key, msg, backend) == ref, (backend, len(msg))


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    prefix_blocks=st.integers(0, 3),
    msg=st.binary(max_size=70),
    data=st.data(),
)
def test_prefix_equals_concatenation(key, prefix_blocks, msg, data):
    prefix = data.draw(st.binary(min_size=16 * prefix_blocks, max_size=16 * prefix_blocks))
    ref = ref_cmac(key, prefix + msg)
    for backend in cipher.BACKENDS:
        assert cmac(key, msg, backend, prefix=prefix) == ref, backend
        assert cmac(key, msg, backend, prefix=bytearray(prefix)) == ref, backend


@pytest.mark.parametrize("backend", cipher.BACKENDS)
def test_errors(backend):
    with pytest.raises(cipher.CipherError, match="prefix"):
        cmac(bytes(16), b"abc", backend, prefix=bytes(15))
    with pytest.raises(cipher.CipherError, match="16 bytes"):
        cmac(bytes(15), b"abc", backend)
    with pytest.raises(ValueError):
        cmac(bytes(16), b"abc", "nope")


def test_clear_cache_empties_cmac_state():
    cmac(H(RFC_KEY), b"x", "pure")
    cmac(H(RFC_KEY), b"x", "cryptography")
    assert any(len(d) for d in cipher._caches.values())
    cipher.clear_cache()
    assert not any(len(d) for d in cipher._caches.values())
    assert cmac(H(RFC_KEY), b"", "cryptography") == H(RFC_EXAMPLES[0][1])


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_cmac_on_micropython_matches_cpython():
    rng = random.Random(4493)
    cases = [(H(RFC_KEY), H(RFC_MSG)[:n]) for n, _ in RFC_EXAMPLES]
    for n in (1, 15, 17, 31, 32, 33, 49, 100):
        cases.append((bytes(rng.getrandbits(8) for _ in range(16)), bytes(rng.getrandbits(8) for _ in range(n))))
    script = "import binascii\nfrom protocol.cmac import cmac\nH = binascii.unhexlify\n"
    for k, m in cases:
        script += "print(binascii.hexlify(cmac(H('%s'), H('%s'))).decode())\n" % (
            binascii.hexlify(k).decode(),
            binascii.hexlify(m).decode(),
        )
    # the prefix form on the device path
    k, m = cases[-1]
    script += "print(binascii.hexlify(cmac(H('%s'), H('%s'), None, H('%s'))).decode())\n" % (
        binascii.hexlify(k).decode(),
        binascii.hexlify(m[32:]).decode(),
        binascii.hexlify(m[:32]).decode(),
    )
    out = sim.mpvm.run(script).split()
    assert [H(t) for t in out] == [ref_cmac(k, m) for k, m in cases] + [ref_cmac(k, m)]
    assert out[:4] == [t for _, t in RFC_EXAMPLES]


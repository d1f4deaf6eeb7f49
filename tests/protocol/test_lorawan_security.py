"""LoRaWAN 1.0.x crypto: the public vectors of /work/shared/reference/lorawan.md and lora-packet,
a test-local reading of the spec (built directly on OpenSSL) for random frames, argument
fuzzing, and the same computations on the MicroPython VM."""

import binascii
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.mpvm
from protocol import cipher
from protocol.lorawan import security
from protocol.lorawan.network_side import encrypt_join_accept
from protocol.lorawan.security import DOWNLINK, UPLINK, compute_mic, crypt_frm_payload
from protocol.lorawan.join import decrypt_join_accept, derive_session_keys, join_accept_mic, join_request_mic
from tests.protocol.vectors import (
    APP_KEY3,
    APP_S_KEY,
    FOX,
    NWK_S_KEY,
    VEC1,
    VEC2,
    VEC3,
    ref_cmac,
    ref_crypt,
    ref_ecb,
    ref_mic,
)

H = binascii.unhexlify
BACKENDS = cipher.BACKENDS

pytestmark = pytest.mark.usefixtures("fake_cryptolib")


def split_data_frame(phy):
    """MHDR | DevAddr | FCtrl | FCnt | FOpts | FPort | FRMPayload | MIC, by hand."""
    dev_addr = int.from_bytes(phy[1:5], "little")
    fopts_len = phy[5] & 0x0F
    fcnt16 = int.from_bytes(phy[6:8], "little")
    fport_at = 8 + fopts_len
    return dev_addr, fcnt16, phy[fport_at], phy[fport_at + 1 : -4], phy[:-4], phy[-4:]


# --- public vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector1_mic_and_payload(backend):
    dev_addr, fcnt, fport, frm, msg, mic = split_data_frame(VEC1)
    assert (dev_addr, fcnt, fport) == (0x49BE7DF1, 2, 1)
    assert compute_mic(NWK_S_KEY, UPLINK, dev_addr, fcnt, msg, backend=backend) == H("2B11FF0D") == mic
    assert crypt_frm_payload(APP_S_KEY, UPLINK, dev_addr, fcnt, frm, backend=backend) == b"test"


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector2_three_ai_blocks(backend):
    dev_addr, fcnt, fport, frm, msg, mic = split_data_frame(VEC2)
    assert (dev_addr, fcnt, fport, len(frm)) == (0x49BE7DF1, 4, 1, 44)
    assert compute_mic(NWK_S_KEY, UPLINK, dev_addr, fcnt, msg, backend=backend) == H("0af3c5e7") == mic
    plain = FOX
    assert crypt_frm_payload(APP_S_KEY, UPLINK, dev_addr, fcnt, frm, backend=backend) == plain
    assert crypt_frm_payload(APP_S_KEY, UPLINK, dev_addr, fcnt, plain, backend=backend) == frm


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector3_join_request(backend):
    app_key = APP_KEY3
    assert VEC3[1:9] == H("0101010101010101") and VEC3[17:19] == (771).to_bytes(2, "little")
    assert join_request_mic(app_key, VEC3[:-4], backend=backend) == VEC3[-4:] == H("09b97b32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector4_session_keys(backend):
    nwk, app = derive_session_keys(H("98929b92c49edba9676d646d3b612456"), 0x376338, 0xAABBCC, 0xF18E, backend=backend)
    assert nwk == H("4e3d6e6afbcc67af2ba3c8e8ec4acf4b")
    assert app == H("610897aa6f1460623443b527d3ac6a9d")


@pytest.mark.parametrize("backend", BACKENDS)
def test_lora_packet_zero_key_join_accept(backend):
    # lora-packet __tests__/join_accept_encrypt.ts: all-zero fields under an all-zero AppKey.
    key = bytes(16)
    plain_phy = H("20000000000000000000000000f86f0a91")
    wire_phy = H("20e3de108795f776b8037610ef7869b5b3")
    assert join_accept_mic(key, plain_phy[:-4], backend=backend) == plain_phy[-4:]
    assert encrypt_join_accept(key, plain_phy[1:], backend=backend) == wire_phy[1:]
    assert decrypt_join_accept(key, wire_phy[1:], backend=backend) == plain_phy[1:]


# --- join-accept round trip -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    app_key=st.binary(min_size=16, max_size=16),
    join_nonce=st.integers(0, 0xFFFFFF),
    net_id=st.integers(0, 0xFFFFFF),
    dev_addr=st.integers(0, 0xFFFFFFFF),
    dl_settings=st.integers(0, 255),
    rx_delay=st.integers(0, 15),
    cflist=st.one_of(st.just(b""), st.binary(min_size=16, max_size=16)),
)
def test_join_accept_round_trip(app_key, join_nonce, net_id, dev_addr, dl_settings, rx_delay, cflist):
    body = (
        join_nonce.to_bytes(3, "little")
        + net_id.to_bytes(3, "little")
        + dev_addr.to_bytes(4, "little")
        + bytes([dl_settings, rx_delay])
        + cflist
    )
    mhdr = b"\x20"
    for backend in BACKENDS:
        mic = join_accept_mic(app_key, mhdr + body, backend=backend)
        assert mic == ref_cmac(app_key, mhdr + body)[:4]
        wire = encrypt_join_accept(app_key, body + mic, backend=backend)
        assert wire == ref_ecb(app_key, body + mic, decrypt=True)  # the network *decrypts*
        assert decrypt_join_accept(app_key, wire, backend=backend) == body + mic
        # and the device (encrypt-only cryptolib object) recovers it too
        assert ref_ecb(app_key, wire) == body + mic


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [0, 12, 15, 17, 31, 33, 48])
def test_join_accept_bad_lengths(backend, n):
    with pytest.raises(ValueError, match="16 or 32"):
        encrypt_join_accept(bytes(16), bytes(n), backend=backend)
    with pytest.raises(ValueError, match="16 or 32"):
        decrypt_join_accept(bytes(16), bytes(n), backend=backend)


def test_join_accept_hint_when_mhdr_included():
    with pytest.raises(ValueError, match="after MHDR"):
        decrypt_join_accept(bytes(16), bytes(17))


# --- random frames against the test-local reference --------------------------------------------


@settings(max_examples=120, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    direction=st.sampled_from([UPLINK, DOWNLINK]),
    dev_addr=st.integers(0, 0xFFFFFFFF),
    fcnt=st.integers(0, 0xFFFFFFFF),
    msg=st.binary(max_size=255),
)
def test_mic_and_crypt_match_reference(key, direction, dev_addr, fcnt, msg):
    mic = ref_mic(key, direction, dev_addr, fcnt, msg)
    enc = ref_crypt(key, direction, dev_addr, fcnt, msg)
    for backend in BACKENDS:
        assert compute_mic(key, direction, dev_addr, fcnt, msg, backend=backend) == mic, backend
        assert crypt_frm_payload(key, direction, dev_addr, fcnt, msg, backend=backend) == enc, backend
        assert crypt_frm_payload(key, direction, dev_addr, fcnt, enc, backend=backend) == msg, backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [15, 16, 17, 32, 33, 64, 100, 242, 255])
def test_long_frames_match_reference(backend, n):
    # Hypothesis favours short messages; make sure multi-block Ai counters and MICs are covered.
    rng = random.Random(n)
    key = bytes(rng.getrandbits(8) for _ in range(16))
    msg = bytes(rng.getrandbits(8) for _ in range(n))
    args = (key, DOWNLINK, 0xFEDCBA98, 0x89ABCDEF)
    assert crypt_frm_payload(*args, msg, backend=backend) == ref_crypt(*args, msg)
    assert compute_mic(*args, msg, backend=backend) == ref_mic(*args, msg)


def test_direction_and_full_counter_matter():
    msg = VEC1[:-4]
    base = compute_mic(NWK_S_KEY, UPLINK, 0x49BE7DF1, 2, msg)
    assert compute_mic(NWK_S_KEY, DOWNLINK, 0x49BE7DF1, 2, msg) != base
    assert compute_mic(NWK_S_KEY, UPLINK, 0x49BE7DF1, 2 + 0x10000, msg) != base  # upper 16 bits count
    assert compute_mic(NWK_S_KEY, UPLINK, 0x49BE7DF0, 2, msg) != base


def test_accepts_any_buffer_type():
    dev_addr, fcnt, _, frm, msg, mic = split_data_frame(VEC1)
    for backend in BACKENDS:
        assert compute_mic(bytearray(NWK_S_KEY), UPLINK, dev_addr, fcnt, memoryview(msg), backend=backend) == mic
        assert crypt_frm_payload(bytearray(APP_S_KEY), UPLINK, dev_addr, fcnt, bytearray(frm), backend=backend) == b"test"


# --- malformed arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "direction,dev_addr,fcnt,match",
    [(2, 0, 0, "direction"), (-1, 0, 0, "direction"), (0, -1, 0, "DevAddr"), (0, 1 << 32, 0, "DevAddr"),
     (0, 0, -1, "FCnt"), (1, 0, 1 << 32, "FCnt")],
)
def test_frame_argument_errors(direction, dev_addr, fcnt, match):
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=match):
            compute_mic(NWK_S_KEY, direction, dev_addr, fcnt, b"\x40", backend=backend)
        with pytest.raises(ValueError, match=match):
            crypt_frm_payload(APP_S_KEY, direction, dev_addr, fcnt, b"abc", backend=backend)


def test_length_limits():
    with pytest.raises(ValueError, match="255"):
        compute_mic(NWK_S_KEY, UPLINK, 1, 1, bytes(256))
    compute_mic(NWK_S_KEY, UPLINK, 1, 1, bytes(255))
    with pytest.raises(ValueError, match="4080"):
        crypt_frm_payload(APP_S_KEY, UPLINK, 1, 1, bytes(4081))
    assert crypt_frm_payload(APP_S_KEY, UPLINK, 1, 1, b"") == b""


@pytest.mark.parametrize(
    "args,match",
    [((-1, 0, 0), "JoinNonce"), ((1 << 24, 0, 0), "JoinNonce"), ((0, 1 << 24, 0), "NetID"), ((0, 0, 1 << 16), "DevNonce"),
     ((0, 0, -1), "DevNonce")],
)
def test_session_key_argument_errors(args, match):
    with pytest.raises(ValueError, match=match):
        derive_session_keys(bytes(16), *args)


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(max_size=20),
    direction=st.integers(-2, 3),
    dev_addr=st.integers(-(1 << 33), 1 << 33),
    fcnt=st.integers(-(1 << 33), 1 << 33),
    msg=st.binary(max_size=300),
    backend=st.sampled_from(BACKENDS),
)
def test_fuzz_only_value_errors(key, direction, dev_addr, fcnt, msg, backend):
    for fn in (compute_mic, crypt_frm_payload):
        try:
            out = fn(key, direction, dev_addr, fcnt, msg, backend=backend)
        except ValueError:  # bad arguments, or CipherError (a ValueError): nothing else
            pass
        else:
            assert len(out) == (4 if fn is compute_mic else len(msg))
    for fn in (encrypt_join_accept, decrypt_join_accept):
        try:
            fn(key, msg[:40], backend=backend)
        except ValueError:  # bad lengths, or CipherError (a ValueError): nothing else
            pass


def test_device_scratch_buffers_do_not_leak_between_calls():
    # The device path reuses module-level B0/Ai buffers: alternate calls must stay independent.
    dev_addr, fcnt, _, frm, msg, mic = split_data_frame(VEC1)
    d2, f2, _, frm2, msg2, mic2 = split_data_frame(VEC2)
    for backend in ("pure", "cryptolib"):
        for _ in range(2):
            assert compute_mic(NWK_S_KEY, UPLINK, d2, f2, msg2, backend=backend) == mic2
            assert crypt_frm_payload(APP_S_KEY, UPLINK, dev_addr, fcnt, frm, backend=backend) == b"test"
            assert compute_mic(NWK_S_KEY, UPLINK, dev_addr, fcnt, msg, backend=backend) == mic
    assert isinstance(security._b0, bytearray) and len(security._b0) == 16


# --- on the MicroPython VM -------------------------------------------------------------------


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_lorawan_crypto_on_micropython_matches_cpython():
    rng = random.Random(2)
    frames = []
    for n in (0, 1, 16, 20, 33, 51):
        key = bytes(rng.getrandbits(8) for _ in range(16))
        frames.append((key, rng.choice([0, 1]), rng.getrandbits(32), rng.getrandbits(32), bytes(rng.getrandbits(8) for _ in range(n))))
    hx = lambda b: binascii.hexlify(b).decode()  # noqa: E731
    script = [
        "import binascii",
        "from protocol.lorawan import security as s",
        "from protocol.lorawan import join as j",
        "from protocol.lorawan.network_side import encrypt_join_accept",
        "H = binascii.unhexlify",
        "E = lambda b: binascii.hexlify(b).decode()",
        "nwk = H('%s'); app = H('%s')" % (hx(NWK_S_KEY), hx(APP_S_KEY)),
        "p1 = H('%s'); p2 = H('%s'); p3 = H('%s')" % (hx(VEC1), hx(VEC2), hx(VEC3)),
        "print(E(s.compute_mic(nwk, s.UPLINK, 0x49BE7DF1, 2, p1[:-4])))",
        "print(E(s.crypt_frm_payload(app, s.UPLINK, 0x49BE7DF1, 2, p1[9:-4])))",
        "print(E(s.compute_mic(nwk, s.UPLINK, 0x49BE7DF1, 4, p2[:-4])))",
        "print(E(s.crypt_frm_payload(app, s.UPLINK, 0x49BE7DF1, 4, p2[9:-4])))",
        "print(E(j.join_request_mic(H('0102030405060708090a0b0c0d0e0f10'), p3[:-4])))",
        "k = j.derive_session_keys(H('98929b92c49edba9676d646d3b612456'), 0x376338, 0xAABBCC, 0xF18E)",
        "print(E(k[0]), E(k[1]))",
        "w = encrypt_join_accept(bytes(16), H('000000000000000000000000f86f0a91'))",
        "print(E(w), E(j.decrypt_join_accept(bytes(16), w)), E(j.join_accept_mic(bytes(16), H('20') + bytes(12))))",
    ]
    for key, d, addr, fcnt, pl in frames:
        script.append(
            "print(E(s.compute_mic(H('%s'), %d, %d, %d, H('%s'))), E(s.crypt_frm_payload(H('%s'), %d, %d, %d, H('%s'))))"
            % (hx(key), d, addr, fcnt, hx(pl), hx(key), d, addr, fcnt, hx(pl))
        )
    script.append("try:\n    s.compute_mic(nwk, 2, 0, 0, b'')\nexcept ValueError as e:\n    print('ValueError', type(e) is ValueError)")
    lines = sim.mpvm.run("\n".join(script) + "\n").strip().split("\n")
    expected = [
        hx(compute_mic(NWK_S_KEY, UPLINK, 0x49BE7DF1, 2, VEC1[:-4])),
        hx(b"test"),
        hx(compute_mic(NWK_S_KEY, UPLINK, 0x49BE7DF1, 4, VEC2[:-4])),
        hx(b"The quick brown fox jumps over the lazy dog."),
        "09b97b32",
        "4e3d6e6afbcc67af2ba3c8e8ec4acf4b 610897aa6f1460623443b527d3ac6a9d",
        "e3de108795f776b8037610ef7869b5b3 000000000000000000000000f86f0a91 f86f0a91",
    ]
    expected += ["%s %s" % (hx(ref_mic(*f)), hx(ref_crypt(*f))) for f in frames]
    expected.append("ValueError True")
    assert lines[0] == "2b11ff0d" and lines[2] == "0af3c5e7"
    assert lines == expected

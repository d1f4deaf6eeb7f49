"""LoRaWAN 1.0.x PHYPayload codec (protocol.lorawan.frame, and network_side for decoding any
MType and encoding join-accepts): public vectors field by field, hand-assembled layouts from
the spec, hypothesis round trips for every MType, malformed-input fuzzing."""

import binascii
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lorawan import network_side
from protocol.lorawan.frame import (
    CONFIRMED_DOWN, CONFIRMED_UP, JOIN_ACCEPT, JOIN_REQUEST, UNCONFIRMED_DOWN, UNCONFIRMED_UP, DataFrame, FrameError,
)
from protocol.lorawan.network_side import (
    PROPRIETARY,
    EncryptedJoinAccept,
    ProprietaryFrame,
    cflist_fields,
    decode,
    dl_settings,
    encode_join_accept,
)
from protocol.lorawan.join import JoinAccept, JoinRequest, decode_join_accept
from protocol.lorawan import join as lw_join
from tests.protocol.vectors import VEC1, VEC2, VEC3

H = binascii.unhexlify


def test_mtype_constants_match_spec_bits():
    # MHDR MType field, LoRaWAN 1.0.4 table 3
    assert (JOIN_REQUEST, JOIN_ACCEPT, UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN, PROPRIETARY) == (
        0b000, 0b001, 0b010, 0b011, 0b100, 0b101, 0b111)
    assert network_side.MTYPE_NAMES[UNCONFIRMED_UP] == "UnconfirmedDataUp"
    assert network_side.MTYPE_NAMES[CONFIRMED_DOWN] == "ConfirmedDataDown"
    assert len(network_side.MTYPE_NAMES) == 8


# --- public vectors ------------------------------------------------------------------------------


def test_decode_vector1():
    f = decode(VEC1)
    assert isinstance(f, DataFrame)
    assert f.mtype == UNCONFIRMED_UP and f.major == 0
    assert f.is_uplink and not f.confirmed
    assert f.dev_addr == 0x49BE7DF1
    assert f.fcnt16 == 2
    assert f.fport == 1
    assert f.fopts == b""
    assert not (f.adr or f.adr_ack_req or f.ack or f.class_b or f.fpending)
    assert f.frm_payload == H("95437876")
    assert f.mic == H("2B11FF0D")
    assert f.signed_part == VEC1[:-4]


def test_decode_vector2():
    f = decode(VEC2)
    assert (f.mtype, f.dev_addr, f.fcnt16, f.fport) == (UNCONFIRMED_UP, 0x49BE7DF1, 4, 1)
    assert f.mic == H("0af3c5e7")
    assert len(f.frm_payload) == len(b"The quick brown fox jumps over the lazy dog.")
    assert f.signed_part == VEC2[:-4]


def test_decode_vector3_join_request():
    j = decode(VEC3)
    assert isinstance(j, JoinRequest)
    assert j.join_eui == H("0101010101010101")
    assert j.dev_eui == H("0202020202020202")
    assert j.dev_nonce == 771
    assert j.mic == H("09b97b32")
    assert j.signed_part == VEC3[:-4]


@pytest.mark.parametrize("vec", [VEC1, VEC2])
def test_encode_vectors_byte_exact_from_fields(vec):
    f = decode(vec)
    g = DataFrame(f.mtype, f.dev_addr, f.fcnt16, f.fport, f.frm_payload, mic=f.mic)
    assert g.encode() == vec
    assert g.signed_part == vec[:-4]


def test_encode_join_request_vector_from_fields():
    j = JoinRequest(H("0101010101010101"), H("0202020202020202"), 771, H("09b97b32"))
    assert j.encode() == VEC3


def test_euis_are_reversed_on_the_wire():
    j = JoinRequest(H("70B3D57ED0000001"), H("0004A30B001C0530"), 0x1234, b"\0" * 4)
    wire = j.encode()
    assert wire[1:9] == H("010000D07ED5B370")
    assert wire[9:17] == H("30051C000BA30400")
    assert wire[17:19] == b"\x34\x12"
    back = decode(wire)
    assert (back.join_eui, back.dev_eui, back.dev_nonce) == (j.join_eui, j.dev_eui, 0x1234)


# --- hand-assembled layouts (independent of the encoder) ----------------------------------------


def test_fctrl_bits_uplink_and_downlink():
    fopts = b"\x02"  # LinkCheckReq
    up = bytes([0x80]) + struct.pack("<I", 0x26011BDA) + bytes([0x80 | 0x40 | 0x20 | 0x10 | 1]) + b"\x10\x00" + fopts + b"\xAA\xBB\xCC\xDD"
    f = decode(up)
    assert f.mtype == CONFIRMED_UP and f.confirmed and f.is_uplink
    assert (f.adr, f.adr_ack_req, f.ack, f.class_b, f.fpending) == (True, True, True, True, False)
    assert f.fopts == fopts and f.fport is None and f.frm_payload == b"" and f.fcnt16 == 16
    assert f.encode() == up

    down = bytes([0xA0]) + struct.pack("<I", 0x26011BDA) + bytes([0x20 | 0x10]) + b"\xFF\xFF" + b"\x05" + b"\x00\x00\xDE\xAD\xBE\xEF"
    g = decode(down)
    assert g.mtype == CONFIRMED_DOWN and not g.is_uplink
    assert (g.adr, g.ack, g.fpending, g.class_b, g.adr_ack_req) == (False, True, True, False, False)
    assert g.fcnt16 == 0xFFFF and g.fport == 5 and g.frm_payload == b"\x00\x00"
    assert g.mic == H("DEADBEEF")
    assert g.encode() == down


def test_fport_present_with_empty_payload():
    wire = H("40" "04030201" "00" "0100" "07" "01020304")
    f = decode(wire)
    assert f.fport == 7 and f.frm_payload == b""
    assert f.encode() == wire


def test_join_accept_plaintext_layout():
    cf = network_side.cflist_from_frequencies([867100000, 867300000, 867500000, 867700000, 867900000])
    # Regional parameters EU868 example: 867.1 MHz = 8671000 * 100 Hz = 0x844F18 -> 18 4F 84
    assert cf[:3] == H("184F84") and cf[15] == 0
    body = H("20" "383763" "CCBBAA" "DA1B0126" "23" "05") + cf + H("01020304")
    j = decode_join_accept(body)
    assert isinstance(j, JoinAccept)
    assert (j.join_nonce, j.net_id, j.dev_addr) == (0x633738, 0xAABBCC, 0x26011BDA)
    assert (j.rx1_dr_offset, j.rx2_dr, j.rx_delay, j.rx1_delay_s) == (2, 3, 5, 5)
    assert j.cflist == cf
    assert cflist_fields(j) == {"type": 0, "frequencies": [867100000, 867300000, 867500000, 867700000, 867900000]}
    assert j.mic == H("01020304")
    assert j.signed_part == body[:-4]
    assert encode_join_accept(j) == body
    short = decode_join_accept(body[:13] + body[-4:])
    assert short.cflist is None and cflist_fields(short) is None and short.rx1_delay_s == 5


def test_rx_delay_zero_means_one_second():
    j = decode_join_accept(H("20" "000000" "000000" "00000000" "00" "00" "00000000"))
    assert j.rx_delay == 0 and j.rx1_delay_s == 1


def test_cflist_channel_mask_type():
    cf = network_side.cflist_from_ch_masks([0x00FF, 0, 0, 0, 0x0001])
    assert cf == H("FF00" "0000" "0000" "0000" "0100" "0000000000" "01")
    assert lw_join.decode_cflist(cf) == {"type": 1, "ch_masks": [0x00FF, 0, 0, 0, 1]}
    with pytest.raises(FrameError, match="CFList type 7"):
        lw_join.decode_cflist(b"\0" * 15 + b"\x07")
    with pytest.raises(FrameError, match="multiple of 100"):
        network_side.cflist_from_frequencies([868100050])
    with pytest.raises(FrameError, match="at most 5"):
        network_side.cflist_from_frequencies([0] * 6)


def test_encrypted_join_accept_and_proprietary():
    wire = H("20") + bytes(range(16))
    e = decode(wire)
    assert isinstance(e, EncryptedJoinAccept) and e.payload == bytes(range(16))
    assert e.encode() == wire
    assert isinstance(decode(H("20") + bytes(32)), EncryptedJoinAccept)
    p = decode(H("E0") + b"anything at all")
    assert isinstance(p, ProprietaryFrame) and p.payload == b"anything at all"
    assert p.encode() == H("E0") + b"anything at all"
    assert isinstance(decode(H("E0")), ProprietaryFrame)


def test_decode_accepts_bytearray_and_memoryview():
    assert decode(bytearray(VEC1)).mic == decode(memoryview(VEC1)).mic == H("2B11FF0D")


# --- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire, message",
    [
        (b"", "empty"),
        (H("41F17DBE4900020001954378762B11FF0D"), "Major 1"),
        (H("C0F17DBE4900020001954378762B11FF0D"), "MType 6 is RFU"),
        (bytes([0x40]) + bytes(10), "too short: 11 bytes"),
        (bytes([0x40, 1, 2, 3, 4, 0x01, 0, 0]) + bytes(4), "FOptsLen 1 does not fit"),
        (bytes([0x40, 1, 2, 3, 4, 0x0F, 0, 0]) + bytes(14), "FOptsLen 15"),
        (bytes([0x40, 1, 2, 3, 4, 0x01, 0, 0, 0x02, 0x00, 0xAA]) + bytes(4), "FPort 0 .* FOpts"),
        (VEC3[:-1], "join-request must be 23"),
        (VEC3 + b"\0", "join-request must be 23"),
        (H("20") + bytes(15), "join-accept must be 17 or 33"),
        (H("20") + bytes(20), "join-accept must be 17 or 33"),
        (bytes([0x40]) + bytes(255), "too long: 256"),
    ],
)
def test_malformed_frames(wire, message):
    with pytest.raises(FrameError, match=message):
        decode(wire)


@pytest.mark.parametrize("vec", [VEC1, VEC2, VEC3])
def test_every_truncation_is_rejected_or_consistent(vec):
    for n in range(len(vec)):
        try:
            f = decode(vec[:n])
        except FrameError:
            continue
        # A shorter data frame can still be well formed (the MIC then sits elsewhere): it must
        # then re-encode to exactly those bytes.
        assert isinstance(f, DataFrame) and f.encode() == vec[:n]


def test_decode_rejects_non_bytes():
    with pytest.raises(FrameError, match="must be bytes"):
        decode("40F17DBE")
    with pytest.raises(FrameError, match="must be bytes"):
        decode(None)


def test_decode_join_accept_errors():
    with pytest.raises(FrameError, match="17 or 33"):
        decode_join_accept(bytes(16))
    with pytest.raises(FrameError, match="not a join-accept"):
        decode_join_accept(H("40") + bytes(16))
    with pytest.raises(FrameError, match="Major"):
        decode_join_accept(H("21") + bytes(16))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fopts=bytes(16)), "FOpts too long: 16"),
        (dict(fport=0, fopts=b"\x02"), "FPort 0"),
        (dict(fport=None, frm_payload=b"x"), "needs an FPort"),
        (dict(fport=256), "fport"),
        (dict(dev_addr=1 << 32), "dev_addr"),
        (dict(fcnt16=0x10000), "FCnt"),
        (dict(major=1), "Major must be 0"),
        (dict(mtype=JOIN_REQUEST), "not a data MType"),
        (dict(fpending=True), "FPending is a downlink bit"),
        (dict(mtype=UNCONFIRMED_DOWN, class_b=True), "ClassB is an uplink bit"),
        (dict(mtype=UNCONFIRMED_DOWN, adr_ack_req=True), "ADRACKReq is an uplink bit"),
        (dict(fport=1, frm_payload=bytes(243)), "too long: 256"),
        (dict(mic=b"abc"), "mic must be 4 bytes"),
        (dict(mic=None), "MIC not set"),
        (dict(fopts="02"), "fopts must be bytes"),
    ],
)
def test_encoder_validation(kwargs, message):
    fields = dict(mtype=UNCONFIRMED_UP, dev_addr=1, fcnt16=1, fport=1, frm_payload=b"", fopts=b"", mic=b"1234")
    fields.update(kwargs)
    with pytest.raises(FrameError, match=message):
        DataFrame(**fields).encode()


def test_other_encoder_validation():
    with pytest.raises(FrameError, match="join_eui must be 8"):
        JoinRequest(bytes(7), bytes(8), 1, b"1234").encode()
    with pytest.raises(FrameError, match="dev_nonce"):
        JoinRequest(bytes(8), bytes(8), 0x10000, b"1234").encode()
    with pytest.raises(FrameError, match="NetID"):
        encode_join_accept(JoinAccept(0, 1 << 24, 0, mic=b"1234"))
    with pytest.raises(FrameError, match="RX1DRoffset"):
        encode_join_accept(JoinAccept(0, 0, 0, rx1_dr_offset=8, mic=b"1234"))
    with pytest.raises(FrameError, match="CFList must be 16"):
        encode_join_accept(JoinAccept(0, 0, 0, cflist=bytes(15), mic=b"1234"))
    with pytest.raises(FrameError, match="16 or 32"):
        EncryptedJoinAccept(bytes(17)).encode()


@settings(max_examples=3000)
@given(st.binary(max_size=300))
def test_fuzz_decode_only_frame_error(data):
    try:
        f = decode(data)
    except FrameError:
        return
    assert f.mtype == data[0] >> 5
    if isinstance(f, DataFrame):
        assert f.encode() == data or data[0] & 0x1C or (f.mtype & 1 and data[5] & 0x40)  # RFU bits differ
        assert f.signed_part == data[:-4] and f.mic == data[-4:]


@settings(max_examples=1000)
@given(st.sampled_from([0x40, 0x60, 0x80, 0xA0]), st.binary(min_size=11, max_size=40))
def test_fuzz_data_frames_only_frame_error(mhdr, rest):
    data = bytes([mhdr]) + rest
    try:
        f = decode(data)
    except FrameError:
        return
    assert f.encode() == data or (f.mtype & 1 and data[5] & 0x40)


# --- round trips ---------------------------------------------------------------------------------

mics = st.binary(min_size=4, max_size=4)


@st.composite
def data_frames(draw):
    mtype = draw(st.sampled_from([UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN]))
    up = mtype in (UNCONFIRMED_UP, CONFIRMED_UP)
    fport = draw(st.one_of(st.none(), st.integers(0, 255)))
    fopts = b"" if fport == 0 else draw(st.binary(max_size=15))
    frm = b"" if fport is None else draw(st.binary(max_size=255 - 13 - len(fopts)))
    bit4 = draw(st.booleans())
    return DataFrame(
        mtype, draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFF)), fport, frm, fopts,
        adr=draw(st.booleans()), adr_ack_req=up and draw(st.booleans()), ack=draw(st.booleans()),
        fpending=(not up) and bit4, class_b=up and bit4, mic=draw(mics))


ATTRS = ("mtype", "major", "dev_addr", "fcnt16", "fport", "frm_payload", "fopts", "adr", "adr_ack_req", "ack",
         "fpending", "class_b", "mic")


@settings(max_examples=800)
@given(data_frames())
def test_data_frame_round_trip(f):
    wire = f.encode()
    assert len(wire) == 12 + len(f.fopts) + (0 if f.fport is None else 1 + len(f.frm_payload))
    assert wire[0] == f.mtype << 5
    assert wire[5] & 0x0F == len(f.fopts)
    g = decode(wire)
    for a in ATTRS:
        assert getattr(g, a) == getattr(f, a), a
    assert g.signed_part == wire[:-4] == f.signed_part
    assert g.encode() == wire


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8), st.integers(0, 0xFFFF), mics)
def test_join_request_round_trip(join_eui, dev_eui, dev_nonce, mic):
    wire = JoinRequest(join_eui, dev_eui, dev_nonce, mic).encode()
    assert len(wire) == 23 and wire[0] == 0
    j = decode(wire)
    assert (j.join_eui, j.dev_eui, j.dev_nonce, j.mic) == (join_eui, dev_eui, dev_nonce, mic)
    assert j.encode() == wire


@given(
    st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 7),
    st.integers(0, 15), st.integers(0, 15), st.one_of(st.none(), st.binary(min_size=16, max_size=16)), mics)
def test_join_accept_round_trip(join_nonce, net_id, dev_addr, off, rx2, delay, cflist, mic):
    j = JoinAccept(join_nonce, net_id, dev_addr, off, rx2, delay, cflist, mic)
    plain = encode_join_accept(j)
    assert len(plain) == (33 if cflist else 17)
    assert plain[11] == (off << 4) | rx2 == dl_settings(j)
    k = decode_join_accept(plain)
    for a in ("join_nonce", "net_id", "dev_addr", "rx1_dr_offset", "rx2_dr", "rx_delay", "cflist", "mic"):
        assert getattr(k, a) == getattr(j, a), a
    # On the air the same length goes as an EncryptedJoinAccept
    e = decode(plain)
    assert isinstance(e, EncryptedJoinAccept) and e.encode() == plain


@given(st.lists(st.integers(0, 16777215).map(lambda x: x * 100), max_size=5))
def test_cflist_frequencies_round_trip(freqs):
    fields = lw_join.decode_cflist(network_side.cflist_from_frequencies(freqs))
    assert fields["type"] == 0
    assert fields["frequencies"] == freqs + [0] * (5 - len(freqs))


@given(st.lists(st.integers(0, 0xFFFF), max_size=5))
def test_cflist_ch_masks_round_trip(masks):
    assert lw_join.decode_cflist(network_side.cflist_from_ch_masks(masks))["ch_masks"] == masks + [0] * (5 - len(masks))


@given(st.binary(max_size=254))
def test_proprietary_round_trip(payload):
    wire = ProprietaryFrame(payload).encode()
    assert wire[0] == 0xE0
    assert decode(wire).payload == payload


def test_repr_is_readable():
    assert "DevAddr=49BE7DF1" in repr(decode(VEC1))
    assert "DevNonce=771" in repr(decode(VEC3))

"""Frames plus crypto: the public vectors end to end, a test-local reading of the spec on OpenSSL
for random frames, the npm lora-packet library as an independent implementation (when
installed), wrong-MIC detection, FCnt across wraps, and the same frames built on MicroPython."""

import binascii
import json
import os
import random
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.mpvm
from protocol.lorawan import mac, network_side, session
from protocol.lorawan.fcnt import GAP_TOO_LARGE, OK, OVERFLOW, REPLAY
from protocol.lorawan.frame import (
    CONFIRMED_DOWN,
    CONFIRMED_UP,
    UNCONFIRMED_DOWN,
    UNCONFIRMED_UP,
    FrameError,
)
from protocol.lorawan import join as lw_join
from tests.protocol.vectors import (
    APP_KEY3,
    FOX,
    VEC1,
    VEC2,
    VEC3,
    ref_cmac,
    ref_crypt,
    ref_ecb,
    ref_mic,
)
from tests.protocol.vectors import APP_S_KEY as APP
from tests.protocol.vectors import NWK_S_KEY as NWK

H = binascii.unhexlify
hx = lambda b: binascii.hexlify(b).decode()  # noqa: E731
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- a test-local reading of the spec, directly on OpenSSL (ref_mic, ref_crypt: tests.protocol.vectors)


def ref_frame(mtype, dev_addr, fcnt, fport, payload, nwk, app, fopts=b"", fctrl_bits=0):
    direction = mtype & 1
    enc = ref_crypt(app if fport else nwk, direction, dev_addr, fcnt, payload) if payload else b""
    msg = bytes([mtype << 5]) + struct.pack("<IBH", dev_addr, fctrl_bits | len(fopts), fcnt & 0xFFFF) + fopts
    if fport is not None:
        msg += bytes([fport]) + enc
    return msg + ref_mic(nwk, direction, dev_addr, fcnt, msg)


# --- public vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("vec, fcnt, plaintext", [(VEC1, 2, b"test"), (VEC2, 4, FOX)])
def test_open_public_vectors(vec, fcnt, plaintext):
    o = session.open_data_frame(vec, NWK, APP)
    assert o.mic_ok and o.accept
    assert o.fcnt == fcnt and o.fcnt_status == OK
    assert o.payload == plaintext
    assert o.mac_commands == [] and o.mac_error is None
    assert o.frame.dev_addr == 0x49BE7DF1 and o.frame.fport == 1
    # with a session history too
    o = session.open_data_frame(vec, NWK, APP, last_fcnt=fcnt - 1)
    assert o.accept and o.payload == plaintext
    o = session.open_data_frame(vec, NWK, APP, last_fcnt=fcnt)
    assert o.mic_ok and o.fcnt_status == REPLAY and not o.accept


@pytest.mark.parametrize("vec, fcnt, plaintext", [(VEC1, 2, b"test"), (VEC2, 4, FOX)])
def test_build_public_vectors_byte_exact(vec, fcnt, plaintext):
    assert session.build_data_frame(UNCONFIRMED_UP, 0x49BE7DF1, fcnt, 1, plaintext, NWK, APP) == vec
    assert session.build_data_frame(UNCONFIRMED_UP, 0x49BE7DF1, fcnt, 1, plaintext, NWK, APP, backend="pure") == vec


def test_join_request_vector3():
    wire = lw_join.build_join_request(H("0101010101010101"), H("0202020202020202"), 771, APP_KEY3)
    assert wire == VEC3
    j = network_side.open_join_request(VEC3, APP_KEY3)
    assert j.mic_ok and j.dev_nonce == 771
    bad = network_side.open_join_request(VEC3[:-1] + b"\x33", APP_KEY3)
    assert bad.mic_ok is False
    assert network_side.open_join_request(VEC3, bytes(16)).mic_ok is False


def test_open_accepts_a_decoded_frame_and_bytearray():
    assert session.open_data_frame(network_side.decode(VEC2), NWK, APP).payload == FOX
    assert session.open_data_frame(bytearray(VEC2), NWK, APP).payload == FOX
    assert session.open_data_frame(memoryview(VEC1), NWK, APP).payload == b"test"


def test_open_rejects_non_data_frames():
    with pytest.raises(FrameError, match="not a data frame"):
        session.open_data_frame(VEC3, NWK, APP)
    with pytest.raises(FrameError, match="too short"):
        session.open_data_frame(VEC1[:11], NWK, APP)
    with pytest.raises(FrameError, match="must be bytes"):
        session.open_data_frame("40F17DBE", NWK, APP)


# --- wrong MIC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vec", [VEC1, VEC2])
def test_every_single_bit_flip_fails_the_mic_or_the_decode(vec):
    for i in range(len(vec) * 8):
        bad = bytearray(vec)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            o = session.open_data_frame(bytes(bad), NWK, APP)
        except FrameError:
            continue
        assert o.mic_ok is False, "bit %d" % i
        assert o.payload is None and o.mac_commands is None and not o.accept


def test_wrong_keys_or_counter_fail_the_mic():
    assert not session.open_data_frame(VEC1, APP, APP).mic_ok
    # Right key, wrong upper counter bits: MIC covers the full 32-bit FCnt
    assert not session.open_data_frame(VEC1, NWK, APP, last_fcnt=0x10000).mic_ok


# --- FCnt beyond 16 bits -----------------------------------------------------------------------


def test_fcnt_across_the_16_bit_wrap():
    addr = 0x26011BDA
    for true in (0xFFFF, 0x10000, 0x10001, 0x2FFFE, 0x30003):
        phy = session.build_data_frame(CONFIRMED_UP, addr, true, 10, b"hello", NWK, APP)
        assert phy == ref_frame(CONFIRMED_UP, addr, true, 10, b"hello", NWK, APP)
        o = session.open_data_frame(phy, NWK, APP, last_fcnt=true - 3)
        assert (o.fcnt, o.fcnt_status, o.mic_ok, o.payload) == (true, OK, True, b"hello")
        # Without history only the low 16 bits are known, so the MIC cannot hold above 0xFFFF
        assert session.open_data_frame(phy, NWK, APP).mic_ok == (true <= 0xFFFF)


def test_fcnt_status_reported():
    phy = session.build_data_frame(UNCONFIRMED_UP, 1, 100, 1, b"x", NWK, APP)
    assert session.open_data_frame(phy, NWK, APP, last_fcnt=100).fcnt_status == REPLAY
    o = session.open_data_frame(session.build_data_frame(UNCONFIRMED_UP, 1, 20100, 1, b"x", NWK, APP), NWK, APP, last_fcnt=100)
    assert (o.fcnt, o.fcnt_status, o.mic_ok) == (20100, GAP_TOO_LARGE, True)
    assert not o.accept
    o = session.open_data_frame(session.build_data_frame(UNCONFIRMED_UP, 1, 0, 1, b"x", NWK, APP), NWK, APP, last_fcnt=0xFFFFFFFF)
    assert (o.fcnt_status, o.mic_ok) == (OVERFLOW, False)
    with pytest.raises(ValueError, match="last FCnt"):
        session.open_data_frame(phy, NWK, APP, last_fcnt=-1)
    with pytest.raises(ValueError, match="max_gap"):
        session.open_data_frame(phy, NWK, APP, last_fcnt=1, max_gap=0)


# --- MAC commands in FOpts and on FPort 0 --------------------------------------------------------


def test_mac_commands_in_fopts_and_fport0():
    up_cmds = [{"name": "LinkCheckReq"}, {"name": "DevStatusAns", "battery": 200, "margin": -5}]
    phy = session.build_data_frame(UNCONFIRMED_UP, 0x01020304, 7, 2, b"data", NWK, APP, fopts=up_cmds)
    assert phy == ref_frame(UNCONFIRMED_UP, 0x01020304, 7, 2, b"data", NWK, APP, fopts=H("02" "06C83B"))
    o = session.open_data_frame(phy, NWK, APP)
    assert [c["name"] for c in o.mac_commands] == ["LinkCheckReq", "DevStatusAns"]
    assert o.mac_commands[1]["margin"] == -5 and o.payload == b"data"

    down_cmds = [{"name": "LinkADRReq", "data_rate": 5, "tx_power": 1, "ch_mask": 7, "ch_mask_cntl": 0, "nb_trans": 1}]
    phy = session.build_data_frame(UNCONFIRMED_DOWN, 0x01020304, 8, 0, down_cmds, NWK, APP, ack=True, fpending=True)
    assert phy == ref_frame(UNCONFIRMED_DOWN, 0x01020304, 8, 0, H("0351070001"), NWK, APP, fctrl_bits=0x30)
    o = session.open_data_frame(phy, NWK, APP)
    assert o.payload == H("0351070001")  # FPort 0: decrypted with NwkSKey
    assert o.mac_commands[0]["name"] == "LinkADRReq" and o.mac_commands[0]["data_rate"] == 5
    assert o.frame.ack and o.frame.fpending


def test_unknown_mac_command_is_reported_not_raised():
    phy = session.build_data_frame(UNCONFIRMED_DOWN, 5, 1, 0, H("06" "0B01" "06"), NWK, APP)
    o = session.open_data_frame(phy, NWK, APP)
    assert o.mic_ok and o.payload == H("060B0106")
    assert [c["name"] for c in o.mac_commands] == ["DevStatusReq"]
    assert "CID 0x0B at offset 1" in o.mac_error


def test_build_errors():
    with pytest.raises(FrameError, match="not a data MType"):
        session.build_data_frame(0, 1, 1, 1, b"", NWK, APP)
    with pytest.raises(FrameError, match="FCnt"):
        session.build_data_frame(UNCONFIRMED_UP, 1, 1 << 32, 1, b"", NWK, APP)
    with pytest.raises(FrameError, match="DevAddr"):
        session.build_data_frame(UNCONFIRMED_UP, -1, 1, 1, b"", NWK, APP)
    with pytest.raises(FrameError, match="needs an FPort"):
        session.build_data_frame(UNCONFIRMED_UP, 1, 1, None, b"x", NWK, APP)
    with pytest.raises(FrameError, match="FPort 0"):
        session.build_data_frame(UNCONFIRMED_UP, 1, 1, 0, b"\x02", NWK, APP, fopts=b"\x02")
    with pytest.raises(FrameError, match="need FPort 0"):
        session.build_data_frame(UNCONFIRMED_UP, 1, 1, 3, [{"name": "LinkCheckReq"}], NWK, APP)
    with pytest.raises(mac.MacCommandError):
        session.build_data_frame(UNCONFIRMED_UP, 1, 1, 3, b"", NWK, APP, fopts=[{"name": "LinkADRReq"}])


# --- join-accept ---------------------------------------------------------------------------------


def ref_join_accept(app_key, body):
    mic = ref_cmac(app_key, body)[:4]
    return body[:1] + ref_ecb(app_key, body[1:] + mic, decrypt=True)


def test_join_accept_round_trip_against_reference():
    app_key = H("98929b92c49edba9676d646d3b612456")
    cf = network_side.cflist_from_frequencies([867100000, 867300000, 867500000, 867700000, 867900000])
    wire = network_side.build_join_accept(app_key, 0x376338, 0xAABBCC, 0x26011BDA, 1, 3, 1, cf)
    body = H("20" "386337" "CCBBAA" "DA1B0126" "13" "01") + cf
    assert wire == ref_join_accept(app_key, body)
    j = lw_join.open_join_accept(wire, app_key)
    assert j.mic_ok
    assert (j.join_nonce, j.net_id, j.dev_addr, j.rx1_dr_offset, j.rx2_dr, j.rx_delay) == (0x376338, 0xAABBCC, 0x26011BDA, 1, 3, 1)
    assert network_side.cflist_fields(j)["frequencies"][0] == 867100000
    short = network_side.build_join_accept(app_key, 1, 2, 3, 0, 0, 0)
    assert len(short) == 17 and short == ref_join_accept(app_key, H("20" "010000" "020000" "03000000" "00" "00"))
    assert lw_join.open_join_accept(short, app_key).mic_ok
    assert lw_join.open_join_accept(short, bytes(16)).mic_ok is False
    assert lw_join.open_join_accept(network_side.decode(short), app_key).mic_ok
    with pytest.raises(FrameError, match="not a join-accept"):
        lw_join.open_join_accept(VEC1, app_key)


# --- hypothesis: random frames against the reference --------------------------------------------

keys = st.binary(min_size=16, max_size=16)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN]),
    st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.one_of(st.none(), st.integers(0, 255)),
    st.binary(max_size=100), keys, keys, st.integers(1, 16384),
)
def test_random_frames_build_and_open(mtype, dev_addr, fcnt, fport, payload, nwk, app, back):
    if fport is None:
        payload = b""
    phy = session.build_data_frame(mtype, dev_addr, fcnt, fport, payload, nwk, app)
    assert phy == ref_frame(mtype, dev_addr, fcnt, fport, payload, nwk, app)
    last = fcnt - back if fcnt >= back else None
    o = session.open_data_frame(phy, nwk, app, last_fcnt=last)
    if last is None and fcnt > 0xFFFF:
        assert not o.mic_ok
        return
    assert o.mic_ok and o.fcnt == fcnt and o.fcnt_status == OK
    assert o.payload == payload
    assert o.frame.fport == fport and o.frame.dev_addr == dev_addr


# --- lora-packet (npm) as an independent implementation -----------------------------------------


def _lora_packet_dir():
    for d in (os.environ.get("LORA_PACKET_DIR"), os.path.join(ROOT, "node_modules", "lora-packet")):
        if d and os.path.isfile(os.path.join(d, "package.json")):
            return d
    return None


LORA_PACKET = _lora_packet_dir()

NODE_SCRIPT = r"""
const lp = require(process.argv[2]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const B = (h) => Buffer.from(h, 'hex');
const out = cases.map((c) => {
  if (c.kind === 'open') {
    const p = lp.fromWire(B(c.phy));
    const msb = B(c.msb);
    return {
      mtype: p.getMType(), dir: p.getDir(), devaddr: p.DevAddr.toString('hex'), fcnt: p.getFCnt(),
      fport: p.getFPort(), fopts: p.FOpts.toString('hex'), adr: p.getFCtrlADR(), ack: p.getFCtrlACK(),
      mic_ok: lp.verifyMIC(p, B(c.nwk), undefined, msb),
      payload: p.FRMPayload.length ? lp.decrypt(p, B(c.app), B(c.nwk), msb).toString('hex') : '',
    };
  }
  if (c.kind === 'build') {
    const p = lp.fromFields({MType: c.mtype, DevAddr: B(c.devaddr), FCnt: c.fcnt & 0xffff, FPort: c.fport,
                             FOpts: B(c.fopts), FCtrl: {ADR: c.adr, ACK: c.ack}, payload: B(c.payload)},
                            B(c.app), B(c.nwk), undefined, B(c.msb));
    return {phy: p.getPHYPayload().toString('hex')};
  }
  if (c.kind === 'join_request') {
    const p = lp.fromWire(B(c.phy));
    return {mic_ok: lp.verifyMIC(p, undefined, B(c.key)), join_eui: p.AppEUI.toString('hex'),
            dev_eui: p.DevEUI.toString('hex'), dev_nonce: p.DevNonce.toString('hex')};
  }
  if (c.kind === 'join_accept') {
    const plain = lp.decryptJoinAccept(lp.fromWire(B(c.phy)), B(c.key));
    const p = lp.fromWire(plain);
    return {plain: plain.toString('hex'), mic_ok: lp.verifyMIC(p, undefined, B(c.key)),
            devaddr: p.DevAddr.toString('hex')};
  }
});
process.stdout.write(JSON.stringify(out));
"""


def _run_lora_packet(cases, tmp_path):
    script = tmp_path / "lp.js"
    script.write_text(NODE_SCRIPT)
    proc = subprocess.run(["node", str(script), LORA_PACKET], input=json.dumps(cases), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(LORA_PACKET is None or shutil.which("node") is None,
                    reason="npm lora-packet not installed (npm install lora-packet, or set LORA_PACKET_DIR)")
def test_cross_check_with_lora_packet(tmp_path):
    rng = random.Random(7)
    rb = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    opened, built = [], []
    for i in range(150):
        mtype = rng.choice([UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN])
        fport = rng.choice([0, 1, 2, 100, 223, 255])
        fopts = b"" if fport == 0 else rb(rng.randint(0, 15))
        fcnt = rng.choice([rng.getrandbits(16), rng.getrandbits(32)])
        f = dict(mtype=mtype, dev_addr=rng.getrandbits(32), fcnt=fcnt, fport=fport, payload=rb(rng.randint(1, 60)),
                 nwk=rb(16), app=rb(16), fopts=fopts, adr=rng.random() < 0.5, ack=rng.random() < 0.5)
        phy = session.build_data_frame(f["mtype"], f["dev_addr"], fcnt, fport, f["payload"], f["nwk"], f["app"],
                                       fopts=fopts, adr=f["adr"], ack=f["ack"])
        msb = hx((fcnt >> 16).to_bytes(2, "little"))  # lora-packet wants the upper FCnt bytes in wire order
        opened.append((f, phy))
        built.append(f)
        common = dict(nwk=hx(f["nwk"]), app=hx(f["app"]), msb=msb)
        f["open_case"] = dict(kind="open", phy=hx(phy), **common)
        f["build_case"] = dict(kind="build", mtype=mtype, devaddr="%08x" % f["dev_addr"], fcnt=fcnt, fport=fport,
                               fopts=hx(fopts), adr=f["adr"], ack=f["ack"], payload=hx(f["payload"]), **common)
    jr_cases, ja_cases = [], []
    for i in range(20):
        key = rb(16)
        jr = lw_join.build_join_request(rb(8), rb(8), rng.getrandbits(16), key)
        jr_cases.append(dict(kind="join_request", phy=hx(jr), key=hx(key)))
        cf = rb(16) if i % 2 else None
        ja = network_side.build_join_accept(key, rng.getrandbits(24), rng.getrandbits(24), rng.getrandbits(32),
                                            rng.randint(0, 7), rng.randint(0, 15), rng.randint(0, 15), cf)
        ja_cases.append(dict(kind="join_accept", phy=hx(ja), key=hx(key)))
    cases = [f["open_case"] for f in built] + [f["build_case"] for f in built] + jr_cases + ja_cases
    results = _run_lora_packet(cases, tmp_path)
    n = len(built)
    for (f, phy), r in zip(opened, results[:n]):
        assert r["mic_ok"] is True
        assert r["devaddr"] == "%08x" % f["dev_addr"]
        assert r["fcnt"] == f["fcnt"] & 0xFFFF
        assert r["fport"] == f["fport"]
        assert r["fopts"] == hx(f["fopts"])
        assert r["dir"] == ("up" if f["mtype"] in (UNCONFIRMED_UP, CONFIRMED_UP) else "down")
        assert (r["adr"], r["ack"]) == (f["adr"], f["ack"])
        assert r["payload"] == hx(f["payload"])
    for (f, phy), r in zip(opened, results[n : 2 * n]):
        theirs = H(r["phy"])
        assert theirs == phy
        last = f["fcnt"] - 1 if f["fcnt"] else None
        o = session.open_data_frame(theirs, f["nwk"], f["app"], last_fcnt=last)
        assert o.mic_ok and o.payload == f["payload"] and o.fcnt == f["fcnt"]
    for case, r in zip(jr_cases, results[2 * n : 2 * n + 20]):
        assert r["mic_ok"] is True
        j = network_side.decode(H(case["phy"]))
        assert (r["join_eui"], r["dev_eui"]) == (hx(j.join_eui), hx(j.dev_eui))
        assert r["dev_nonce"] == "%04x" % j.dev_nonce
    for case, r in zip(ja_cases, results[2 * n + 20 :]):
        assert r["mic_ok"] is True
        j = lw_join.open_join_accept(H(case["phy"]), H(case["key"]))
        assert j.mic_ok and r["plain"] == hx(network_side.encode_join_accept(j))
        assert r["devaddr"] == "%08x" % j.dev_addr


# --- MicroPython VM -----------------------------------------------------------------------------


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_session_on_micropython_matches_cpython():
    rng = random.Random(11)
    rb = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    frames = []
    for mtype in (UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN):
        for n in (0, 5, 16, 33):
            frames.append((mtype, rng.getrandbits(32), rng.getrandbits(32), rng.choice([None, 0, 1, 200]) if n else None,
                           rb(n), rb(16), rb(16)))
    frames = [(m, a, c, p, (d if p is not None else b"")) + tuple(k) for m, a, c, p, d, *k in frames]
    cf = network_side.cflist_from_frequencies([867100000, 867300000])
    lines = [
        "import binascii",
        "from protocol.lorawan import frame, mac, network_side, session, fcnt",
        "from protocol.lorawan import join as lw_join",
        "H = binascii.unhexlify",
        "E = lambda b: binascii.hexlify(b).decode()",
        "NWK = H('%s'); APP = H('%s')" % (hx(NWK), hx(APP)),
        "for v in ('%s', '%s'):" % (hx(VEC1), hx(VEC2)),
        "    o = session.open_data_frame(H(v), NWK, APP)",
        "    print(o.mic_ok, o.fcnt, E(o.payload), E(session.build_data_frame(2, 0x49BE7DF1, o.fcnt, 1, o.payload, NWK, APP)))",
        "print(E(lw_join.build_join_request(H('0101010101010101'), H('0202020202020202'), 771, H('%s'))))" % hx(APP_KEY3),
        "j = network_side.open_join_request(H('%s'), H('%s')); print(j.mic_ok, E(j.dev_eui), j.dev_nonce)" % (hx(VEC3), hx(APP_KEY3)),
        "ja = network_side.build_join_accept(NWK, 0x376338, 0xAABBCC, 0x26011BDA, 1, 3, 1, H('%s'))" % hx(cf),
        "j = lw_join.open_join_accept(ja, NWK)",
        "print(E(ja), j.mic_ok, j.join_nonce, j.net_id, j.dev_addr, network_side.cflist_fields(j)['frequencies'])",
        "print(fcnt.rebuild_fcnt(1, 0x1FFFF), fcnt.rebuild_fcnt(0, 70000), fcnt.check_fcnt(65536, 70000))",
        "print(mac.decode_commands(H('06FF0B'), True)[0]['margin'], E(mac.encode_commands([{'name': 'NewChannelReq', 'ch_index': 3, 'frequency': 867100000, 'max_dr': 5, 'min_dr': 0}], False)))",
        "try:\n    network_side.decode(H('41F17DBE4900020001954378762B11FF0D'))\nexcept frame.FrameError as e:\n    print('FrameError', e)",
        "try:\n    mac.decode_commands(H('0351070001' '0B'), False)\nexcept mac.MacCommandError as e:\n    print('MacCommandError', e.offset, len(e.commands))",
    ]
    for m, a, c, p, d, nwk, app in frames:
        lines.append(
            "phy = session.build_data_frame(%d, %d, %d, %r, H('%s'), H('%s'), H('%s'))\n"
            "o = session.open_data_frame(phy, H('%s'), H('%s'), last_fcnt=%r)\n"
            "print(E(phy), o.mic_ok, o.fcnt, E(o.payload) if o.payload is not None else None)"
            % (m, a, c, p, hx(d), hx(nwk), hx(app), hx(nwk), hx(app), c - 1 if c else None))
    got = sim.mpvm.run("\n".join(lines) + "\n").rstrip("\n").split("\n")

    expected = []
    for v in (VEC1, VEC2):
        o = session.open_data_frame(v, NWK, APP)
        expected.append("%s %d %s %s" % (o.mic_ok, o.fcnt, hx(o.payload), hx(v)))
    expected.append(hx(VEC3))
    expected.append("True 0202020202020202 771")
    ja = network_side.build_join_accept(NWK, 0x376338, 0xAABBCC, 0x26011BDA, 1, 3, 1, cf)
    expected.append("%s True %d %d %d [867100000, 867300000, 0, 0, 0]" % (hx(ja), 0x376338, 0xAABBCC, 0x26011BDA))
    expected.append("%d 65536 replay" % 0x20001)
    expected.append("11 0703184f8450")  # 0x0B as a 6-bit signed margin
    expected.append("FrameError unsupported Major 1 (only 0, LoRaWAN R1)")
    expected.append("MacCommandError 5 1")
    for m, a, c, p, d, nwk, app in frames:
        phy = ref_frame(m, a, c, p, d, nwk, app)
        expected.append("%s True %d %s" % (hx(phy), c, hx(d)))
    assert got == expected


@settings(max_examples=1500)
@given(st.binary(max_size=80), st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))
def test_fuzz_open_only_frame_error(data, last):
    try:
        o = session.open_data_frame(data, NWK, APP, last_fcnt=last)
    except FrameError:
        return
    assert o.mic_ok is False  # random bytes do not carry a valid MIC (2^-32)
    assert o.payload is None and o.mac_commands is None

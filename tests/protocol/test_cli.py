"""`python -m protocol decode`: the decoder for people. One JSON object out, or one line and exit 2."""

import io
import json
import os
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from protocol import cli, payload
from protocol.lorawan import frame, network_side, session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Public vectors, /work/shared/reference/lorawan.md
NWK = "44024241ed4ce9a68c6a8bc055233fd3"
APP = "ec925802ae430ca77fd3dd73cb2cc588"
V1 = "40F17DBE4900020001954378762B11FF0D"
V2 = (
    "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376affb8aa17ad30075293f28"
    "dea8a20af3c5e7"
)
JOIN_REQ = "0001010101010101010202020202020202030309b97b32"
JOIN_KEY = "0102030405060708090a0b0c0d0e0f10"


def run_cli(*args):
    """The real command, in a child process, as a technician runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "protocol", "decode"] + list(args), cwd=ROOT, capture_output=True, text=True
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_vector_1_decodes_with_session_keys():
    rc, out, err = run_cli("--hex", V1, "--nwkskey", NWK, "--appskey", APP)
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["mtype"] == "UnconfirmedDataUp"
    assert obj["dev_addr"] == "49be7df1"
    assert obj["fcnt"] == 2 and obj["fport"] == 1
    assert obj["mic_ok"] is True
    assert bytes.fromhex(obj["payload"]) == b"test"
    assert obj["fopts"] == []
    # FPort 1 is not one of our application ports: the frame still decodes, fields say why not.
    assert obj["fields"] is None and "fPort 1" in obj["fields_error"]


def test_vector_2_three_blocks():
    rc, out, _ = run_main(["decode", "--hex", V2, "--nwkskey", NWK, "--appskey", APP])
    obj = json.loads(out)
    assert rc == 0 and obj["fcnt"] == 4 and obj["mic_ok"] is True
    assert bytes.fromhex(obj["payload"]) == b"The quick brown fox jumps over the lazy dog."


def test_our_pole_report_decodes_to_fields():
    nwk, app = bytes(range(16)), bytes(range(16, 32))
    fields = {"dim_level": 70, "lamp_power": 35.5, "lamp_energy": 12345}
    fport, data = payload.encode_uplink("pole", "report", fields)
    phy = session.build_data_frame(frame.CONFIRMED_UP, 0x26011234, 70000, fport, data, nwk, app)
    rc, out, err = run_main(
        ["decode", "--hex", phy.hex(), "--nwkskey", nwk.hex(), "--appskey", app.hex(), "--last-fcnt", "69990"]
    )
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["mtype"] == "ConfirmedDataUp"
    assert obj["dev_addr"] == "26011234"
    assert obj["fcnt"] == 70000  # rebuilt from the 16 wire bits
    assert obj["fport"] == fport
    assert obj["fields"] == payload.decode_uplink(fport, data)
    assert obj["fields"]["fields"]["dim_level"] == 70
    assert obj["fields"]["fields"]["lamp_energy"] == 12345


def test_fopts_are_decoded_without_keys():
    nwk, app = bytes(16), bytes(16)
    fopts = [{"name": "LinkCheckReq"}, {"name": "DevStatusAns", "battery": 200, "margin": -3}]
    phy = session.build_data_frame(frame.UNCONFIRMED_UP, 0x01020304, 5, 10, b"", nwk, app, fopts=fopts)
    rc, out, err = run_main(["decode", "--hex", phy.hex()])
    assert rc == 0, err
    obj = json.loads(out)
    names = [c["name"] for c in obj["fopts"]]
    assert names == ["LinkCheckReq", "DevStatusAns"]
    assert obj["fopts"][1]["margin"] == -3 and obj["fopts"][1]["battery"] == 200
    assert obj["mic_ok"] is None  # no key, no verdict


def test_join_request_vector():
    rc, out, err = run_cli("--hex", JOIN_REQ, "--appkey", JOIN_KEY)
    assert rc == 0, err
    obj = json.loads(out)
    assert obj == {
        "mtype": "JoinRequest",
        "join_eui": "0101010101010101",
        "dev_eui": "0202020202020202",
        "dev_nonce": 771,
        "mic": "09b97b32",
        "mic_ok": True,
    }


def test_join_accept_with_cflist():
    key = bytes.fromhex(JOIN_KEY)
    cfl = network_side.cflist_from_frequencies([867100000, 867300000, 867500000, 867700000, 867900000])
    wire = network_side.build_join_accept(key, 0x123456, 0x000013, 0x26012345, 1, 3, 1, cflist=cfl)
    rc, out, err = run_main(["decode", "--hex", wire.hex(), "--appkey", JOIN_KEY])
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["mtype"] == "JoinAccept"
    assert obj["join_nonce"] == 0x123456
    assert obj["net_id"] == "000013"
    assert obj["dev_addr"] == "26012345"
    assert obj["rx1_dr_offset"] == 1 and obj["rx2_dr"] == 3 and obj["rx_delay"] == 1
    assert obj["cflist"]["frequencies"] == [867100000, 867300000, 867500000, 867700000, 867900000]
    assert obj["mic_ok"] is True


def _one_line_error(rc, out, err):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_wrong_network_key_is_one_line_exit_2():
    bad = NWK[:-1] + "4"
    rc, out, err = run_cli("--hex", V1, "--nwkskey", bad, "--appskey", APP)
    _one_line_error(rc, out, err)
    assert "MIC" in err


def test_wrong_appkey_on_join_accept():
    key = bytes.fromhex(JOIN_KEY)
    wire = network_side.build_join_accept(key, 1, 2, 3, 0, 0, 1)
    _one_line_error(*run_main(["decode", "--hex", wire.hex(), "--appkey", "00" * 16]))


def test_join_accept_needs_appkey():
    wire = network_side.build_join_accept(bytes(16), 1, 2, 3, 0, 0, 1)
    rc, out, err = run_main(["decode", "--hex", wire.hex()])
    _one_line_error(rc, out, err)
    assert "--appkey" in err


def test_truncated_frame():
    rc, out, err = run_cli("--hex", V1[:14])
    _one_line_error(rc, out, err)
    assert "short" in err


def test_bad_hex_and_bad_key_length():
    _one_line_error(*run_cli("--hex", "4G00"))
    _one_line_error(*run_main(["decode", "--hex", V1, "--nwkskey", "abcd"]))
    _one_line_error(*run_main(["decode", "--hex", V1, "--last-fcnt", "many"]))
    _one_line_error(*run_main(["decode", "--hex", V1, "--appkey", JOIN_KEY, "--nwkskey", NWK]))
    _one_line_error(*run_main(["decode"]))
    _one_line_error(*run_main(["frobnicate", "--hex", V1]))


def test_help_exits_zero():
    rc, out, _ = run_main(["--help"])
    assert rc == 0 and "--nwkskey" in out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([None, NWK]))
def test_random_bytes_never_traceback(data, key):
    argv = ["decode", "--hex", data.hex()]
    if key:
        argv += ["--nwkskey", key, "--appskey", APP]
    rc, out, err = run_main(argv)
    if rc == 0:
        json.loads(out)
    else:
        _one_line_error(rc, out, err)


def test_technician_guide_example_is_true():
    """The example in docs/technician-guide.md is run as written and must print what the guide shows."""
    import re

    with open(os.path.join(ROOT, "docs", "technician-guide.md")) as f:
        guide = f.read()
    command = re.search(r"python -m protocol decode (.*?)\n```", guide, re.S).group(1)
    argv = ["decode"] + command.replace("\\\n", " ").split()
    rc, out, err = run_main(argv)
    assert rc == 0, err
    obj = json.loads(out)
    shown = re.search(r'"payload": "([0-9a-f]+)"', guide).group(1)
    assert obj["payload"] == shown
    assert '"fcnt": %d' % obj["fcnt"] in guide and '"mic": "%s"' % obj["mic"] in guide
    for name, value in obj["fields"]["fields"].items():
        if "/" not in name:
            assert '"%s": %s' % (name, json.dumps(value)) in guide, name

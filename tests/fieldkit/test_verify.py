"""`streetgrid-field verify`'s reading of the console (fieldkit.verify.Console) and its verdicts.

The console lines are the firmware's own: the first test boots a pole on CPython against the
scripted network of tests/firmware and feeds what it printed to the Console, so a change of a
print in the firmware that verify no longer understands fails here. The whole command, with
the real mpremote, a board on a pty and a real gateway, is hil_tests/test_field_kit.py.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldkit.cli import main
from fieldkit.verify import Console, VerifyFailed, _judge
from tests.firmware.test_pole_app import Pole, fresh_board  # noqa: F401 - the fixture


def fed(*lines):
    c = Console()
    for line in lines:
        c.feed(line)
    return c


BANNER = "main: boot pole DevEUI 70B3D57ED0001234 board streetgrid-sx1276 reset 1 unproven 1"


def test_the_firmware_console_is_what_verify_reads(capsys):
    pole = Pole(first_uplink_jitter_s=0)
    pole.run(120)
    printed = capsys.readouterr().out.splitlines()
    c = fed(*printed)
    assert c.banner == ("pole", pole.cfg["dev_eui"].upper(), "streetgrid-sx1276", 1, 1), \
        printed
    assert c.joined == ("joined", "%08X" % pole.ns.dev_addr), printed
    first = pole.uplinks(10)[0][0]
    assert c.report == (first.fcnt, 10), printed
    assert c.join_requests >= 1 and c.faults == [] and c.traceback is None
    _judge(c, None, None, 60)  # a pass: no exception


@given(kind=st.sampled_from(["pole", "meter"]), eui=st.binary(min_size=8, max_size=8),
       board=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
       cause=st.integers(0, 9), unproven=st.integers(0, 99))
def test_a_banner_is_read_back_whatever_its_values(kind, eui, board, cause, unproven):
    line = "main: boot %s DevEUI %s board %s reset %d unproven %d" % (
        kind, eui.hex().upper(), board, cause, unproven)
    c = Console()
    said = c.feed(line)
    assert c.banner == (kind, eui.hex().upper(), board, cause, unproven)
    assert said.startswith("boot: %s %s on board %s" % (kind, eui.hex().upper(), board))


@given(st.lists(st.text(max_size=120), max_size=30))
def test_any_console_noise_is_taken_without_error_and_never_passes(lines):
    c = fed(*lines)
    if c.banner is None:
        with pytest.raises(VerifyFailed):
            _judge(c, None, None, 60)


@pytest.mark.parametrize("lines, expected", [
    (["ets Jul 29 2019", "invalid header: 0xffffffff"], "streetgrid-field flash"),
    (["MicroPython v1.24.1 on 2024-11-29; Generic ESP32 module with ESP32", ">>> "],
     "streetgrid-field deploy"),
    ([], "nothing from the board"),
    ([BANNER, "Traceback (most recent call last):", '  File "firmware.pole", line 3',
      "ValueError: bad pin"], "crashed at boot (ValueError: bad pin)"),
    ([BANNER, "main: BOOT ERROR radio (board streetgrid-sx1276): no SX127x (version 0x00)"],
     "is --board streetgrid-sx1276 the board"),
    ([BANNER, "lorawan: join-request 1, DevNonce 4", "lorawan: join-request 2, DevNonce 5"],
     "2 join-request(s) sent, no join-accept: is the device in the gateway's registry"),
    ([BANNER], "no join-request"),
    ([BANNER, "lorawan: joined, DevAddr 26011F3A"], "joined (DevAddr 26011F3A) but no report"),
    ([BANNER, "safe_mode: too many failed boots; lamp safe"], "safe mode"),
    ([BANNER, "lorawan: joined, DevAddr 26011F3A", "lorawan: uplink FCnt 0 fPort 10 confirmed 0",
      "main: BOOT ERROR SHT3x: no answer"], "boot errors: SHT3x: no answer"),
])
def test_each_failure_names_what_to_check(lines, expected):
    c = fed(*lines)
    with pytest.raises(VerifyFailed, match=None) as e:
        _judge(c, None, None, 60)
    assert expected in str(e.value)


def test_a_report_the_gateway_did_not_accept_fails():
    c = fed(BANNER, "lorawan: joined, DevAddr 26011F3A", "lorawan: uplink FCnt 0 fPort 10 "
            "confirmed 0")
    with pytest.raises(VerifyFailed, match="the gateway has not accepted it"):
        _judge(c, object(), None, 60)
    _judge(c, object(), "gateway: seen", 60)  # seen there: a pass


def test_a_boot_frame_is_shown_and_is_not_the_first_report():
    c = Console()
    c.feed(BANNER.replace("reset 1", "reset 3"))
    said = c.feed("main: boot frame: reset 3, 0 failed boots before, 1 safe modes")
    assert said == "boot frame for the operator: reset 3, 0 failed boots before, 1 safe modes"
    c.feed("lorawan: session restored, DevAddr 26011F3A")
    c.feed("lorawan: uplink FCnt 7 fPort 13 confirmed 1")
    assert c.report is None and c.boot_frame.startswith("reset 3")
    c.feed("lorawan: uplink FCnt 8 fPort 10 confirmed 0")
    assert c.report == (8, 10)


def test_an_uplink_on_another_port_is_not_the_first_report():
    c = fed(BANNER, "lorawan: joined, DevAddr 26011F3A",
            "lorawan: uplink FCnt 0 fPort 11 confirmed 1")  # an alarm
    assert c.report is None
    c.feed("lorawan: uplink FCnt 1 fPort 10 confirmed 0")
    assert c.report == (1, 10)


def test_a_missing_port_or_stats_file_is_one_line(tmp_path, capsys):
    assert main(["verify", "--port", str(tmp_path / "ttyUSB9")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such port" in err and "Traceback" not in err
    assert main(["verify", "--port", str(tmp_path / "ttyUSB9"), "--gateway-stats",
                 str(tmp_path / "stats.json")]) == 1
    assert "no such file" in capsys.readouterr().err

"""`streetgrid-field provision` and `batch` against emulated boards on pseudo-terminals (the real
MicroPython VM behind sim.serial_board, reached through mpremote's transport): what lands in
the board's flash, what lands in the gateway's registry, what the label says, and that every
refusal is one line and leaves both sides as they were."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import serial

from fieldkit import batch
from firmware import config
from gateway.lorawan.registry import load_registry
from sim import serial_board

pytestmark = pytest.mark.skipif(not serial_board.available(), reason="MicroPython VM missing")

KEY = "2B7E151628AED2A6ABF7158809CF4F3C"
EUI = "70B3D57ED0001234"
JOIN = "70B3D57ED0000000"


@pytest.fixture
def board():
    with serial_board.SerialBoard() as b:
        yield b


def field(*args, timeout=60):
    """The installed console script, as a technician runs it."""
    exe = shutil.which("streetgrid-field") or None
    cmd = [exe] if exe else [sys.executable, "-m", "fieldkit"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def board_config(b):
    path = os.path.join(b.flash_dir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_provision_writes_the_config_registers_the_device_and_prints_the_label(board, tmp_path):
    reg = tmp_path / "devices.toml"
    png = tmp_path / "label.png"
    r = field("provision", "--port", board.port, "--kind", "pole", "--dev-eui", EUI.lower(),
              "--join-eui", JOIN, "--board", "streetgrid-sx1262", "--site", "harbour",
              "--name", "pole-0017", "--set", "report_interval_s=300", "--set",
              "latitude=52.37", "--set", "longitude=4.9", "--registry", reg, "--label", png)
    assert r.returncode == 0, r.stderr
    cfg = board_config(board)
    dev = load_registry(reg).get(EUI)
    assert dev is not None and dev.name == "pole-0017" and dev.site == "harbour"
    assert cfg["dev_eui"] == EUI and cfg["board"] == "streetgrid-sx1262"
    assert cfg["report_interval_s"] == 300 and cfg["latitude"] == 52.37
    # the AppKey was generated: fresh, 128 bits, the same on both sides, never printed
    assert bytes.fromhex(cfg["app_key"]) == dev.app_key and len(dev.app_key) == 16
    assert cfg["app_key"] not in r.stdout + r.stderr
    assert config.merge(cfg)["kind"] == "pole"  # the firmware boots this config
    assert "DevEUI %s" % EUI in r.stdout and "pole-0017" in r.stdout
    if shutil.which("zbarimg"):
        scan = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True,
                              text=True)
        assert scan.stdout.strip() == "LW:D0:%s:%s:00000001" % (JOIN, EUI)


def test_two_provisionings_never_share_an_app_key(tmp_path):
    reg = tmp_path / "devices.toml"
    keys = []
    for eui in ("70B3D57ED0000001", "70B3D57ED0000002"):
        with serial_board.SerialBoard() as b:
            r = field("provision", "-p", b.port, "--kind", "meter", "--dev-eui", eui,
                      "--registry", reg)
            assert r.returncode == 0, r.stderr
            keys.append(board_config(b)["app_key"])
    assert keys[0] != keys[1]
    assert [d.kind for d in load_registry(reg)] == ["meter", "meter"]


def _refused(r):
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streetgrid-field: error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


def test_a_duplicate_dev_eui_is_refused_before_the_board_is_touched(board, tmp_path):
    reg = tmp_path / "devices.toml"
    reg.write_text('[[device]]\nname = "old"\nsite = "s"\nkind = "pole"\n'
                   'dev_eui = "%s"\njoin_eui = "%s"\napp_key = "%s"\n' % (EUI, JOIN, KEY))
    before = reg.read_text()
    line = _refused(field("provision", "-p", board.port, "--kind", "pole", "--dev-eui", EUI,
                          "--join-eui", JOIN, "--registry", reg))
    assert "duplicate DevEUI %s" % EUI in line
    assert board_config(board) is None and reg.read_text() == before


@pytest.mark.parametrize("setting, named", [("report_intervall_s=300", "report_intervall_s"),
                                            ("data_rate=9", "data_rate"),
                                            ("door_pin=40", "door_pin")])
def test_a_bad_key_is_refused_on_the_host_by_name(board, tmp_path, setting, named):
    reg = tmp_path / "devices.toml"
    line = _refused(field("provision", "-p", board.port, "--kind", "pole", "--dev-eui", EUI,
                          "--set", setting, "--registry", reg))
    assert named in line
    assert board_config(board) is None and not reg.exists()


def test_port_errors_are_one_line(tmp_path):
    reg = tmp_path / "devices.toml"
    args = ("provision", "--kind", "pole", "--dev-eui", EUI, "--registry", reg, "-p")
    assert "no such port" in _refused(field(*args, "/dev/ttyUSB-none"))
    with serial_board.SerialBoard() as b:
        holder = serial.Serial(b.port, exclusive=True)  # a serial monitor left open
        try:
            assert "busy" in _refused(field(*args, b.port))
        finally:
            holder.close()
        assert board_config(b) is None
    master, slave = os.openpty()  # a port with no MicroPython behind it
    try:
        line = _refused(field(*args, os.ttyname(slave), timeout=90))
        assert "does not answer" in line
    finally:
        os.close(master)
        os.close(slave)
    assert not reg.exists()


def _write_csv(path, rows):
    path.write_text("kind,dev_eui,port,name,lamp_rated_w\n" + "".join(
        "%s,%s,%s,%s,%s\n" % r for r in rows))


def test_batch_resumes_where_it_stopped_and_never_registers_twice(tmp_path):
    reg = tmp_path / "devices.toml"
    csv_path = tmp_path / "poles.csv"
    euis = ["70B3D57ED00000A%d" % i for i in range(3)]
    with serial_board.SerialBoard() as b0, serial_board.SerialBoard() as b1, \
            serial_board.SerialBoard() as b2:
        boards = [b0, b1, b2]
        # the third board is not plugged in yet: its port does not exist
        rows = [("pole", euis[0], b0.port, "p0", 75), ("pole", euis[1], b1.port, "p1", ""),
                ("pole", euis[2], "/dev/ttyUSB-later", "p2", 90)]
        _write_csv(csv_path, rows)
        line = _refused(field("batch", "--csv", csv_path, "--registry", reg))
        assert "line 4" in line and "no such port" in line
        assert [d.name for d in load_registry(reg)] == ["p0", "p1"]
        assert board_config(b0)["lamp_rated_w"] == 75 and "lamp_rated_w" not in board_config(b1)
        first_keys = [board_config(b)["app_key"] for b in boards[:2]]
        # ... now it is: run the same command again
        rows[2] = ("pole", euis[2], b2.port, "p2", 90)
        _write_csv(csv_path, rows)
        r = field("batch", "--csv", csv_path, "--registry", reg)
        assert r.returncode == 0, r.stderr
        assert "1 provisioned, 2 already done before" in r.stdout
        assert [d.name for d in load_registry(reg)] == ["p0", "p1", "p2"]
        assert [board_config(b)["app_key"] for b in boards[:2]] == first_keys  # untouched
        assert board_config(b2)["lamp_rated_w"] == 90


def test_a_row_stopped_after_its_registry_step_is_finished_with_the_registered_key(tmp_path):
    reg = tmp_path / "devices.toml"
    csv_path = tmp_path / "m.csv"
    with serial_board.SerialBoard() as b:
        # as if the previous run was killed after the registry commit, before its journal line
        reg.write_text('[[device]]\nname = "m0"\nsite = "s"\nkind = "meter"\n'
                       'dev_eui = "%s"\njoin_eui = "%s"\napp_key = "%s"\n' % (EUI, JOIN, KEY))
        csv_path.write_text("kind,dev_eui,port\nmeter,%s,%s\n" % (EUI, b.port))
        now, skipped = batch.run(str(csv_path), str(reg), out=lambda *a: None)
        assert (now, skipped) == (1, 0)
        assert board_config(b)["app_key"] == KEY and board_config(b)["join_eui"] == JOIN
        assert len(load_registry(reg)) == 1
        assert batch.done_set(str(csv_path)) == {EUI}


def test_reconfigure_keeps_the_registered_keys_and_rewrites_the_config(board, tmp_path):
    reg = tmp_path / "devices.toml"
    args = ("provision", "-p", board.port, "--kind", "meter", "--dev-eui", EUI, "--registry", reg)
    assert field(*args).returncode == 0
    key = board_config(board)["app_key"]
    assert "duplicate DevEUI" in _refused(field(*args, "--set", "phases=1"))
    r = field(*args, "--reconfigure", "--set", "phases=1")
    assert r.returncode == 0, r.stderr
    assert board_config(board)["phases"] == 1 and board_config(board)["app_key"] == key
    assert len(load_registry(reg)) == 1

"""The technician's four commands on one emulated board, as docs/technician-guide.md gives them:
`streetgrid-field flash` (the real esptool, against the board's ROM loader in download mode),
`deploy` (the real mpremote, against the real MicroPython VM), `provision` (its config on the
board, the device in the gateway's registry file) and `verify`: the board boots what was
deployed, joins the real gateway through the simulated radio (sim.field_air: a packet
forwarder over real UDP, in real time), and its first report reaches the real mosquitto. One
board (sim.field_board) on one pty for all four, as on the bench.

Also: verify fails, in one line that says what to check, for a board that has no MicroPython
and for a device the gateway does not know.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from hil_tests.rig import MOSQUITTO, Broker, HilGateway, Readings, wait_for
from sim import serial_board

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(not serial_board.available(), reason="MicroPython VM missing"),
]

DEV_EUI = "70B3D57ED0F1E1D0"


def field(*args, timeout=300):
    """The installed console script, as a technician runs it."""
    exe = shutil.which("streetgrid-field")
    cmd = [exe] if exe else [sys.executable, "-m", "fieldkit"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def micropython_bin(path, chip="esp32"):
    """A MicroPython-like firmware .bin for the chip: an ESP app image (magic, this chip's id
    in the extended header, one segment), built by esptool's own image classes."""
    from esptool.bin_image import ESP32FirmwareImage, ESP32S3FirmwareImage, ImageSegment

    image = ESP32FirmwareImage() if chip == "esp32" else ESP32S3FirmwareImage()
    image.entrypoint = 0x40080000
    segment = ImageSegment(0x40080000, bytes(range(256)) * 256)
    segment.name = ".iram0.text"
    image.segments = [segment]
    image.save(str(path))
    return path


@pytest.fixture
def bench(tmp_path):
    from sim.field_air import FieldAir
    from sim.field_board import FieldBoard

    broker = Broker(tmp_path)
    broker.start()
    board = FieldBoard("pole", "streetgrid-sx1262", chip="esp32", name="pole-bench")
    air = None
    gateway = None

    class Bench:
        pass

    b = Bench()
    b.tmp, b.broker, b.board = tmp_path, broker, board
    b.registry = tmp_path / "devices.toml"

    def start_gateway():
        nonlocal air, gateway
        gateway = HilGateway(str(tmp_path), str(b.registry), broker.url).start()
        air = FieldAir(gateway.addr).start()
        air.add(board)
        b.gateway = gateway
        return gateway

    b.start_gateway = start_gateway
    try:
        yield b
    finally:
        board.close()
        if air is not None:
            air.close()
        if gateway is not None:
            gateway.stop()
        broker.stop()


def test_flash_deploy_provision_verify_on_one_board(bench):
    board = bench.board
    # 1. flash: the board held in download mode, the real esptool through the field tool
    board.reset(boot_held=True)
    fw = micropython_bin(bench.tmp / "micropython.bin")
    r = field("flash", "--port", board.port, "--chip", "esp32", "--firmware", fw)
    assert r.returncode == 0, r.stdout + r.stderr
    assert board.flash[0x1000:0x1000 + os.path.getsize(fw)] == fw.read_bytes()
    board.reset()  # EN: MicroPython starts from what was flashed
    # 2. deploy: this checkout's image into the romfs partition, /main.py
    r = field("deploy", "--port", board.port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "image written in slot 0" in r.stdout and "main.py written" in r.stdout
    # 3. provision: config on the board, the device in the registry the gateway will load
    r = field("provision", "--port", board.port, "--kind", "pole", "--dev-eui", DEV_EUI,
              "--board", "streetgrid-sx1262", "--site", "bench", "--name", "pole-bench",
              "--registry", bench.registry, "--set", "first_uplink_jitter_s=2",
              "--label", bench.tmp / "label.svg")
    assert r.returncode == 0, r.stdout + r.stderr
    gateway = bench.start_gateway()
    # 4. verify, against the readings on MQTT: a reset, the boot, a join, the first report
    r = field("verify", "--port", board.port, "--mqtt", bench.broker.url, "--timeout", 150)
    print(r.stdout)  # shown when the test fails: what the technician would have seen
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("verify: PASS: pole %s" % DEV_EUI), r.stdout
    joined = [x for x in lines if "joined, DevAddr" in x]
    assert len(joined) == 1, r.stdout
    session = gateway.session(DEV_EUI)
    assert joined[0].endswith("%08X" % session.dev_addr), (joined, session)
    assert any("gateway: published FCnt" in x and "%08X" % session.dev_addr in x
               for x in lines), r.stdout
    assert any("boot: pole %s on board streetgrid-sx1262" % DEV_EUI in x for x in lines)
    # the same board verified again, against the gateway's stats.json: the board resumes its
    # session (kept in NVS across the reset), and its next report is seen there
    readings = Readings(bench.broker.port, client_id="hil-field-kit")
    r = field("verify", "--port", board.port, "--gateway-stats",
              os.path.join(gateway.data_dir, "stats.json"), "--timeout", 150)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "session restored, DevAddr %08X" % session.dev_addr in r.stdout
    assert "verify: PASS" in r.stdout.splitlines()[-1]
    assert gateway.stats()["devices"][DEV_EUI]["joins"] == 1
    # verify's reset is news for the operator: a boot frame (fPort 13) went out first, and its
    # records reached the broker (SenML CBOR labels: 0 name, 3 string value, 4 boolean value)
    assert "boot frame for the operator: reset 5, 0 failed boots before, 0 safe modes" \
        in r.stdout, r.stdout
    boot = wait_for(lambda: [u for u in readings.uplinks() if u["eui"] == DEV_EUI and any(
        x.get(0) == "reset_cause" for x in u["records"])], 20, "the boot frame's records")
    fields = {x[0]: x.get(3, x.get(2, x.get(4))) for x in boot[0]["records"] if 0 in x}
    assert fields["reset_cause"] == "soft" and fields["events/safe_mode"] is False, fields
    readings.stop()
    # an update: the next version goes into slot 1 on trial, and is kept once it has shown
    # itself healthy (its session resumed, an uplink sent): slot 0 stays the way back until then
    from fieldkit import deploy, image

    files = image.source_files(image.closure()) + ["firmware/build_2.py"]
    update = image.build_romfs(files, empty=("firmware/build_2.py",))
    lines = []
    done = deploy.deploy(board.port, out=lines.append, data=update)
    assert (done["image"], done["slot"], done["trial"]) == ("written", 1, True), lines
    r = field("verify", "--port", board.port, "--mqtt", bench.broker.url, "--timeout", 150)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    slots = os.path.join(board.flash_dir, "slots.json")
    wait_for(lambda: json.load(open(slots)) == {"good": 1, "trial": None, "tried": 0}, 20,
             "the trial kept in /slots.json")


def test_verify_fails_in_one_line_for_a_board_without_micropython(bench):
    bench.board.reset()  # an erased chip: the ROM's boot loop
    r = field("verify", "--port", bench.board.port, "--timeout", 5)
    print(r.stdout)
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1].startswith("verify: FAIL: ")
    assert "streetgrid-field flash" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_verify_fails_for_a_device_the_gateway_does_not_know(bench):
    board = bench.board
    board.reset(boot_held=True)
    r = field("flash", "--port", board.port, "--chip", "esp32", "--firmware",
              micropython_bin(bench.tmp / "micropython.bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    board.reset()
    assert field("deploy", "--port", board.port).returncode == 0
    other = bench.tmp / "other-gateway.toml"  # registered with another gateway, not this one
    r = field("provision", "--port", board.port, "--kind", "pole", "--dev-eui", DEV_EUI,
              "--board", "streetgrid-sx1262", "--registry", other)
    assert r.returncode == 0, r.stdout + r.stderr
    bench.registry.write_text('[[device]]\nname = "pole-other"\nsite = "bench"\nkind = "pole"\n'
                              'dev_eui = "70B3D57ED0F1E1D1"\njoin_eui = "0000000000000000"\n'
                              'app_key = "%s"\n' % ("00" * 16))
    bench.start_gateway()
    r = field("verify", "--port", board.port, "--mqtt", bench.broker.url, "--timeout", 25)
    print(r.stdout)
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stdout.splitlines()[-1]
    assert last.startswith("verify: FAIL: ") and "no join-accept" in last, r.stdout
    assert "registry" in last
    assert bench.gateway.stats()["forwarder_server"].get("join-unknown-device", 0) >= 1, \
        bench.gateway.stats()["forwarder_server"]

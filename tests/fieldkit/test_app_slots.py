"""A/B app slots (firmware/vfs/app_slots.py, fieldkit.deploy): a new image goes into the slot
that is not the good one and runs on trial; one that crashes or hangs before it proved itself
healthy gives the board back its good slot, and nothing of the device is lost on the way. A hang
is a loop that sleeps (the watchdog is seen at the sleep) or one that never sleeps nor yields
(the board's watchdog_everywhere: the VM's settrace build checks it between Python events).

On an emulated board (sim.field_board: the real MicroPython VM with two romfs partitions, its
chip models and NVS), with the real mpremote underneath deploy. The slot logic's state
transitions are also checked on CPython, and boot_health's self-test on the pole firmware.
"""

import importlib.util
import json
import os
import re
import select
import sys
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldkit import deploy, image
from sim import serial_board

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_vm = pytest.mark.skipif(not serial_board.available(), reason="MicroPython VM missing")


def load_app_slots(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "app_slots_under_test", os.path.join(ROOT, "firmware", "vfs", "app_slots.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.PATH = str(tmp_path / "slots.json")
    mod.TMP = str(tmp_path / "slots.tmp")
    return mod


class FakeMachine:
    PWRON_RESET, SOFT_RESET, WDT_RESET = 1, 5, 3

    def __init__(self, cause):
        self.cause = cause

    def reset_cause(self):
        return self.cause


class FakeVfs:
    def __init__(self):
        self.mounted = []

    def umount(self, at):
        self.mounted.append(("umount", at))

    def rom_ioctl(self, op, slot):
        return "partition %d" % slot

    def VfsRom(self, part):  # noqa: N802 - MicroPython's name
        return part

    def mount(self, what, at):
        self.mounted.append((what, at))


@pytest.mark.parametrize("state, cause, slot, after", [
    (None, 5, 0, None),  # no A/B deploy yet: partition 0
    ({"good": 1, "trial": None}, 5, 1, {"good": 1, "trial": None}),
    ({"good": 0, "trial": 1, "tried": 0}, 1, 1, {"good": 0, "trial": 1, "tried": 1}),
    # tried already, and this is a crash's or the watchdog's reset: back to the good slot
    ({"good": 0, "trial": 1, "tried": 1}, 5, 0,
     {"good": 0, "trial": None, "tried": 1, "rolled_back": 1}),
    ({"good": 1, "trial": 0, "tried": 1}, 3, 1,
     {"good": 1, "trial": None, "tried": 1, "rolled_back": 0}),
    # a power cut during the trial is not the image's fault: it runs again
    ({"good": 0, "trial": 1, "tried": 1}, 1, 1, {"good": 0, "trial": 1, "tried": 1}),
])
def test_select_chooses_the_slot_and_records_the_trial(tmp_path, state, cause, slot, after):
    slots = load_app_slots(tmp_path)
    if state is not None:
        (tmp_path / "slots.json").write_text(json.dumps(state))
    vfs = FakeVfs()
    assert slots.select(FakeMachine(cause), vfs, types.SimpleNamespace(path=[])) == slot
    assert slots.read() == after
    assert (("partition %d" % slot, "/rom") in vfs.mounted) == (slot != 0)
    assert not (tmp_path / "slots.tmp").exists()


def test_keep_trial_makes_the_trial_the_good_slot(tmp_path):
    slots = load_app_slots(tmp_path)
    assert slots.keep_trial() is False  # nothing on trial
    (tmp_path / "slots.json").write_text(json.dumps({"good": 0, "trial": 1, "tried": 1}))
    assert slots.on_trial()
    assert slots.keep_trial() is True
    assert slots.read() == {"good": 1, "trial": None, "tried": 0}
    assert not slots.on_trial()


# ---- boot_health's self-test, on the pole firmware -----------------------------------------

from tests.firmware.test_pole_app import Pole, fresh_board  # noqa: E402,F401 - the fixture


@pytest.mark.parametrize("light, kept", [(True, True), (False, False)])
def test_an_app_on_trial_is_kept_only_if_its_drivers_answered(monkeypatch, light, kept):
    calls = []
    fake = types.ModuleType("app_slots")
    fake.on_trial = lambda: True
    fake.keep_trial = lambda: calls.append("kept") or True
    monkeypatch.setitem(sys.modules, "app_slots", fake)
    pole = Pole(light=light, first_uplink_jitter_s=0)  # light False: the VEML7700 is missing
    pole.run(120)
    assert pole.app.mac.joined and pole.app.mac.uplinks
    assert calls == (["kept"] if kept else [])
    assert bool(pole.resets) is not kept  # a failed self-test resets: the good slot boots


# ---- on an emulated board ------------------------------------------------------------------

def _image_of(tmp_path, main_source):
    """A ROMFS image whose firmware.main.run() is main_source."""
    tree = tmp_path / "img"
    (tree / "firmware").mkdir(parents=True)
    (tree / "firmware" / "__init__.py").write_text("")
    (tree / "firmware" / "main.py").write_text(main_source)
    return image.build_romfs(["firmware/__init__.py", "firmware/main.py"], root=str(tree))


CRASHING = "def run():\n    print('new app: crashing')\n    raise ValueError('boom')\n"
HANGING = ("def run():\n    import machine, time\n    machine.WDT(timeout=1000)\n"
           "    print('new app: hanging')\n    while True:\n        time.sleep_ms(100)\n")
# a driver that spins on a flag that never comes, without ever sleeping or yielding
SPINNING = ("def ready():\n    return False\n\n\ndef run():\n    import machine\n"
            "    machine.WDT(timeout=1000)\n    print('new app: spinning')\n"
            "    while not ready():\n        pass\n")


class Console:
    """Everything the board printed since it was opened."""

    def __init__(self, port):
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.text = ""

    def wait_for(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline:
                raise AssertionError("no %r on the console:\n%s" % (pattern, self.text))
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.text += os.read(self.fd, 4096).decode(errors="replace")
                except BlockingIOError:
                    pass
        return self.text

    def close(self):
        os.close(self.fd)


@pytest.fixture(scope="module")
def firmware_image():
    return image.build()[1]


@pytest.fixture
def board(tmp_path, request):
    """A flashed field board; watchdog_everywhere when the test is parametrized with a
    SPINNING image (indirect)."""
    from hil_tests.test_field_kit import micropython_bin
    from fieldkit.flash import flash
    from sim.field_board import FieldBoard

    b = FieldBoard("pole", "streetgrid-sx1276",
                   watchdog_everywhere=getattr(request, "param", False))
    try:
        b.reset(boot_held=True)
        flash(b.port, "esp32", str(micropython_bin(tmp_path / "mp.bin")), baud=115200)
        b.reset()
        yield b
    finally:
        b.close()


def slots_of(board):
    with open(os.path.join(board.flash_dir, "slots.json")) as f:
        return json.load(f)


def provision(board, tmp_path):
    from fieldkit.provision import provision as run

    run(board.port, "pole", "70B3D57ED0001234", str(tmp_path / "devices.toml"),
        out=lambda *a: None)
    with open(os.path.join(board.flash_dir, "config.json"), "rb") as f:
        return f.read()


@needs_vm
@pytest.mark.parametrize("bad, seen, board", [
    (CRASHING, "new app: crashing", False),
    (HANGING, r"new app: hanging\s+wdt: the watchdog was not fed", False),
    (SPINNING, r"new app: spinning\s+wdt: the watchdog was not fed", True),
], indirect=["board"], ids=["crash", "hang", "spin"])
def test_a_new_image_that_crashes_or_hangs_gives_the_board_back_its_good_slot(
        board, tmp_path, firmware_image, bad, seen):
    quiet = lambda *a: None  # noqa: E731
    first = deploy.deploy(board.port, out=quiet, data=firmware_image)
    assert (first["image"], first["slot"], first["trial"]) == ("written", 0, False)
    assert slots_of(board) == {"good": 0, "trial": None, "tried": 0}
    config = provision(board, tmp_path)
    console = Console(board.port)  # closed before deploy: one reader on a serial port
    try:
        board.reset()  # the good app runs once: its NVS (DevNonce, boots) is there to be kept
        console.wait_for(r"lorawan: join-request 1")
    finally:
        console.close()
    nvs = board.nvs()
    lines = []
    second = deploy.deploy(board.port, out=lines.append, data=_image_of(tmp_path, bad))
    assert (second["image"], second["slot"], second["trial"]) == ("written", 1, True)
    assert any("goes back to slot 0" in x for x in lines), lines
    assert slots_of(board) == {"good": 0, "trial": 1, "tried": 0}
    console = Console(board.port)
    try:
        board.reset()
        text = console.wait_for(r"back to slot 0[\s\S]*main: boot pole", timeout=90)
    finally:
        console.close()
    assert re.search(seen, text) and "boot: app slot 1 (on trial)" in text
    assert slots_of(board) == {"good": 0, "trial": None, "tried": 1, "rolled_back": 1}
    with open(os.path.join(board.flash_dir, "config.json"), "rb") as f:
        assert f.read() == config  # provisioning kept
    after = board.nvs()
    for ns, keys in nvs.items():  # every key committed before is still there
        assert set(keys) <= set(after.get(ns, {})), (ns, keys, after.get(ns))
    # and deploying the good image again is a no-op: it is what runs
    assert deploy.deploy(board.port, out=quiet, data=firmware_image)["image"] == "unchanged"


# ---- power cuts at random instants of a deploy and of the switch-over ----------------------

def _other_version(tmp_path, n):
    """The real firmware, as a build that differs by one empty module: a new version."""
    modules = image.closure()
    files = image.source_files(modules) + ["firmware/build_%d.py" % n]
    return image.build_romfs(files, empty=("firmware/build_%d.py" % n,))


class Cut:
    """Cuts the board's power `after` seconds from start() (in a thread, as mains fails)."""

    def __init__(self, board, after):
        import threading

        self.timer = threading.Timer(after, board.power_off)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.join()


@pytest.fixture(scope="module")
def bench(tmp_path_factory, firmware_image):
    """One provisioned board whose good slot runs the firmware; deploying it takes `deploy_s`."""
    from fieldkit.flash import flash
    from hil_tests.test_field_kit import micropython_bin
    from sim.field_board import FieldBoard

    tmp = tmp_path_factory.mktemp("power-cuts")
    b = FieldBoard("pole", "streetgrid-sx1276")
    try:
        b.reset(boot_held=True)
        flash(b.port, "esp32", str(micropython_bin(tmp / "mp.bin")), baud=115200)
        b.reset()
        deploy.deploy(b.port, out=lambda *a: None, data=firmware_image)
        b.config = provision(b, tmp)
        t0 = time.monotonic()
        deploy.deploy(b.port, out=lambda *a: None, data=_other_version(tmp, 0))
        b.deploy_s = time.monotonic() - t0
        b.tmp = tmp
        b.versions = 0
        yield b
    finally:
        b.close()


def _boots_a_whole_image(board):
    """Power on; -> the console up to the app's banner (which only a whole image prints)."""
    console = Console(board.port)
    try:
        board.reset()
        return console.wait_for(r"main: boot pole DevEUI 70B3D57ED0001234", timeout=60)
    finally:
        console.close()


@needs_vm
@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(phase=st.sampled_from(["deploy", "switch-over"]), at=st.floats(0.0, 1.0))
def test_a_power_cut_at_any_instant_leaves_a_board_that_boots_a_whole_image(bench, phase, at):
    from fieldkit.board_link import BoardError

    board = bench
    _boots_a_whole_image(board)  # running, as in the field, with its NVS written
    nvs = board.nvs()
    bench.versions += 1
    new = _other_version(bench.tmp, bench.versions)
    if phase == "deploy":
        with Cut(board, at * bench.deploy_s * 1.2):
            try:
                deploy.deploy(board.port, out=lambda *a: None, data=new, timeout_s=15)
            except BoardError:
                pass  # the power went while it wrote: what matters is what boots next
    else:
        deploy.deploy(board.port, out=lambda *a: None, data=new)
        with Cut(board, at * 4.0):  # during the trial's first boot, or just after it
            board.reset()
    text = _boots_a_whole_image(board)
    slots = slots_of(board)
    ran = int(re.findall(r"boot: app slot (\d)", text)[-1])
    assert ran in (slots["good"], slots.get("trial")), (text, slots)
    with open(os.path.join(board.flash_dir, "config.json"), "rb") as f:
        assert f.read() == board.config  # provisioning kept
    after = board.nvs()
    for ns, keys in nvs.items():  # nothing committed is lost
        assert set(keys) <= set(after.get(ns, {})), (ns, keys, after.get(ns))
    for name in ("main.py", "boot.py", "app_slots.mpy"):  # whole, or the tool's old one
        assert os.path.exists(os.path.join(board.flash_dir, name))

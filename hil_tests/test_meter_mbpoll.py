"""mbpoll (libmodbus, a C Modbus master a technician carries on a laptop) reads our emulated
meter exactly as docs/technician-guide.md tells a technician to, over a real pty pair: the
guide's own command line, then the exact energy, the serial number and the relay's two-step
write. A third implementation besides pymodbus and minimalmodbus (test_meter_bus.py)."""

import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from hil_tests.meter_bus_rig import lone_meter
from protocol.modbus import registers as regmap
from sim.devices.meter_board import VOLTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDRESS = 7  # the guide's example meter
BAUD = 9600
LOAD_W = 3600.0

pytestmark = pytest.mark.skipif(shutil.which("mbpoll") is None,
                                reason="mbpoll is not installed (scripts/test.sh installs it as root)")


def guide_command():
    with open(os.path.join(ROOT, "docs", "technician-guide.md")) as f:
        text = f.read()
    line = re.search(r"^\s*(mbpoll .*?)\s*(#.*)?$", text, re.M).group(1)
    return shlex.split(line)


def mbpoll(args, path):
    """Run mbpoll once on `path`; {reference: value text} of what it printed."""
    args = [path if a == "/dev/ttyUSB0" else a for a in args]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    return {int(r): v for r, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.stdout, re.M)}


@pytest.fixture
def meter():
    with lone_meter(ADDRESS, LOAD_W, BAUD) as m:
        yield m


def test_the_technician_guide_mbpoll_command_reads_our_meter(meter):
    path, _ = meter
    args = guide_command()
    assert args[0] == "mbpoll" and "/dev/ttyUSB0" in args
    got = mbpoll(args, path)
    assert sorted(got) == [1, 3, 5]  # 3 floats, 2 registers each, 1-based references
    assert [float(got[r]) for r in (1, 3, 5)] == pytest.approx(list(VOLTS), abs=0.05)


def test_mbpoll_reads_the_exact_energy_and_identity_and_switches_the_relay(meter):
    path, _ = meter
    base = ["mbpoll", "-m", "rtu", "-b", str(BAUD), "-P", "none", "-a", str(ADDRESS), "-1",
            "-0"]  # -0: 0-based references, as our register map writes them

    def energy_wh():
        regs = mbpoll(base + ["-t", "3:hex", "-r", str(regmap.entry("energy_import_wh").address),
                              "-c", "4", path], path)
        return regmap.decode_u64([int(v, 16) for _, v in sorted(regs.items())])

    def power_w():
        regs = mbpoll(base + ["-t", "3:float", "-B", "-r", str(regmap.entry("power").address),
                              path], path)
        return float(regs[regmap.entry("power").address])

    first = energy_wh()
    deadline = time.monotonic() + 15
    while energy_wh() < first + 2:  # 3.6 kW commits a Wh (the step) every second
        assert time.monotonic() < deadline, "energy did not advance at 3.6 kW"
        time.sleep(0.5)
    assert power_w() == pytest.approx(LOAD_W, rel=0.01)
    serial = mbpoll(base + ["-t", "3:hex", "-r", str(regmap.entry("serial").address), "-c", "2",
                            path], path)
    assert (int(serial[0x2002], 16) << 16) | int(serial[0x2003], 16) == 20260000 + ADDRESS

    relay = regmap.entry("relay").address
    # an unarmed relay write is refused by the meter (mbpoll exits non-zero with exception 03)
    out = subprocess.run(base + ["-t", "4", "-r", str(relay), path, "--", "0"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "Illegal data value" in (out.stdout + out.stderr)
    for register, value in ((regmap.entry("relay_arm").address, regmap.RELAY_ARM_MAGIC),
                            (relay, 0)):
        out = subprocess.run(base + ["-t", "4", "-r", str(register), path, "--", str(value)],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stdout + out.stderr
    assert mbpoll(base + ["-t", "4", "-r", str(relay), path], path) == {relay: "0"}
    deadline = time.monotonic() + 5
    while power_w() != 0.0:  # the disconnected load: the next metering step reads nothing
        assert time.monotonic() < deadline, "power still flows through the open relay"
        time.sleep(0.3)

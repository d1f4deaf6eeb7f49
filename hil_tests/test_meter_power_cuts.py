"""Hardware in the loop, issue #4 item 6: energy never decreases across power cuts injected at
random instants (hypothesis chooses them), on both of the meter's interfaces.

LoRaWAN: meters running the real firmware (interfaces "both") in a city, through the real
gateway process and mosquitto; board.power_cut at hypothesis-chosen virtual instants (RTC memory, pins,
uncommitted NVS and the chip's counts lost; the firmware boots cold). Each meter's
import energy at MQTT, in the order the meter sent it, never decreases and is never above what
really flowed; every report the firmware made lags the truth at that instant by no more than
the stated loss bound: per cut so far less than one commit step plus one metering step
(firmware/energy_register.py), plus one step of commit lag (+1 Wh: whole Wh reported).

Modbus: `python -m sim meter --nvs FILE` (the real firmware, its committed NVS on disk) is
SIGKILLed at hypothesis-chosen instants and restarted, while pymodbus, a standard master,
reads the exact Wh at 0x1000 over a pty as fast as it can: a value read never decreases, and
after each restart the first value served is at least the last one ever served.
"""

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient

import sim.demo
from hil_tests.rig import MOSQUITTO, CityUnderTest, MeterReports, wait_for
from hil_tests.truth import fields_of
from sim.city import City
from sim.rs485 import PtyLink

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 5
LOADS_W = [900.0, 250.0]  # less than a commit step per report: a served uncommitted Wh would show
STEP_WH = 10
REPORT_S = 60
PHASE_S = 600  # virtual seconds per hypothesis example
MAX_METERING_WH = max(LOADS_W) / 3600.0  # one 1 s metering step at the biggest load


class CutCity(CityUnderTest):
    def __init__(self, workdir):
        super().__init__(workdir)
        city = City(0, 1, ("127.0.0.1", 9), seed=SEED, site=sim.demo.SITE,
                    barriers="expected", grace_s=3.0, boot_spread_s=10,
                    n_meters=len(LOADS_W), meter_load_w=LOADS_W,
                    meter_cfg={"report_interval_s": REPORT_S, "energy_step_wh": STEP_WH, "phases": 3,
                               "interfaces": "both"})  # Modbus and LoRaWAN, as deployed
        self.meter_reports = MeterReports(city)
        self.attach(city)
        self.cuts = collections.defaultdict(list)  # name -> virtual ms of each cut


@pytest.fixture(scope="module")
def city_rig(tmp_path_factory):
    r = CutCity(tmp_path_factory.mktemp("hil-meter-cuts"))
    r.run(120)  # joined and reporting before the first cut
    yield r
    r.close()


def meter_readings(rig):
    """name -> [import_energy] at MQTT, in the order each meter sent them (its FCnt; a cut
    does not reset it: the frame counter is reserved in NVS)."""
    names = {b.dev_eui: b.name for b in rig.city.boards}
    out = collections.defaultdict(list)
    for m in sorted(rig.readings.uplinks(), key=lambda m: (m["eui"], m["fcnt"])):
        if m["lora"]["fport"] == 20:
            out[names[m["eui"]]].append(fields_of(m["records"])["import_energy"][0])
    return out


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, PHASE_S * 1000 - 1), st.integers(0, len(LOADS_W) - 1)),
                min_size=1, max_size=3))
def test_lorawan_meter_energy_never_decreases_across_power_cuts(city_rig, cuts):
    rig, city = city_rig, city_rig.city
    t0_s = city.clock.now_us / 1e6
    for at_ms, k in cuts:  # whole ms: inside a metering step, a report, a join, anything
        name = city.boards[k].name
        city.power_cut(t0_s + at_ms / 1000.0, name)
        rig.cuts[name].append(int(round(t0_s * 1000)) + at_ms)
    rig.run(PHASE_S)
    delivered = {(u["dev_eui"], u["fcnt"]) for u in city.delivered() if u["fport"] == 20}
    wait_for(lambda: delivered <= set(rig.readings.keys()), 30, "the meters' reports at MQTT")

    readings = meter_readings(rig)
    for b in city.boards:
        values = readings[b.name]
        assert values, b.name
        assert all(a <= b_ for a, b_ in zip(values, values[1:])), (b.name, values)
        assert values[-1] <= b.truth()["import_wh"] + 1e-6
        assert b.counters["power_cuts"] == len(rig.cuts[b.name])  # every cut happened
    # every report the firmware made (delivered or not): never backwards, never above the
    # truth at that instant, and behind it by no more than the stated bound: less than one
    # commit step plus one metering step per cut so far, plus the same for its own lag
    for name, reps in rig.meter_reports.reports.items():
        energies = [f["import_energy"] for _, f, _ in reps]
        assert energies == sorted(energies), name
        for ms, f, truth in reps:
            n = sum(1 for t in rig.cuts[name] if t <= ms)
            lag = truth["import_wh"] - f["import_energy"]
            assert -1e-6 <= lag <= (n + 1) * (STEP_WH + MAX_METERING_WH) + 1, (name, ms, lag, n)


# ---- Modbus: SIGKILL is the power cut ------------------------------------------------------

BAUD = 38400
ADDRESS = 7
MODBUS_LOAD_W = 18000  # 5 Wh per 1 s metering step
MODBUS_STEP_WH = 12  # a commit every third step: served (committed) and live Wh differ
WARM_WH = 10


class ServedLog:
    """A pymodbus master reading 0x1000 (exact import Wh) in a loop from its own thread."""

    def __init__(self, path):
        self.values = []  # (monotonic time, Wh)
        self.failures = 0
        self._stop = threading.Event()
        self.c = ModbusSerialClient(path, framer=FramerType.RTU, baudrate=BAUD, bytesize=8,
                                    parity="N", stopbits=1, timeout=0.2, retries=0)
        assert self.c.connect()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                r = self.c.read_input_registers(0x1000, count=4, device_id=ADDRESS)
            except Exception:  # noqa: BLE001 - a dead meter is a timeout; keep asking
                self.failures += 1
                continue
            if r.isError():
                self.failures += 1
                continue
            self.values.append((time.monotonic(), ModbusSerialClient.convert_from_registers(
                r.registers, ModbusSerialClient.DATATYPE.UINT64)))

    def stop(self):
        self._stop.set()
        self._t.join(5)
        self.c.close()


class MeterProcess:
    def __init__(self, path, nvs):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "meter", "--serial", path, "--address", str(ADDRESS),
             "--baud", str(BAUD), "--nvs", nvs, "--load-w", str(MODBUS_LOAD_W),
             "--energy-step-wh", str(MODBUS_STEP_WH)], cwd=ROOT, stderr=subprocess.PIPE,
            text=True)
        self.banner = self.proc.stderr.readline()
        assert self.banner.startswith("meter %d on " % ADDRESS), self.banner

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def modbus_rig(tmp_path_factory):
    d = tmp_path_factory.mktemp("hil-meter-modbus-cuts")
    with PtyLink() as link:
        master = ServedLog(link.paths[1])
        state = {"path": link.paths[0], "nvs": str(d / "meter-nvs.json"), "master": master,
                 "max_served": 0, "restarts": 0, "kills": []}
        # warm up: energy committed and served before the first cut, so every check below
        # compares real values (not zeros)
        meter = MeterProcess(state["path"], state["nvs"])
        try:
            wait_for(lambda: [v for _, v in master.values if v >= WARM_WH], 20,
                     "%d Wh served" % WARM_WH)
        finally:
            meter.kill()
        state["max_served"] = max(v for _, v in master.values)
        yield state
        master.stop()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 2500), min_size=1, max_size=3))
def test_modbus_meter_energy_never_decreases_across_sigkill(modbus_rig, runs_ms):
    master = modbus_rig["master"]
    for run_ms in runs_ms:
        committed = os.path.exists(modbus_rig["nvs"])  # killed before any commit: a cold boot
        meter = MeterProcess(modbus_rig["path"], modbus_rig["nvs"])
        started = time.monotonic()
        # the first value this run serves, then run_ms more of life, then the cut
        try:
            assert committed == ("warm boot" in meter.banner), meter.banner
            first = wait_for(lambda: [v for t, v in master.values if t > started], 10,
                             "a value served after the restart")[0]
            assert first >= modbus_rig["max_served"], (first, modbus_rig["max_served"])
            time.sleep(run_ms / 1000.0)
        finally:
            meter.kill()
            modbus_rig["kills"].append(time.monotonic())
        modbus_rig["restarts"] += 1
        seen = list(master.values)
        back = [i for i in range(1, len(seen)) if seen[i][1] < seen[i - 1][1]]
        assert not back, "a read went backwards: %r; kills at %r" % (
            seen[max(0, back[0] - 3):back[0] + 3], modbus_rig["kills"][-3:])
        modbus_rig["max_served"] = max(v for _, v in seen)
    assert modbus_rig["max_served"] >= WARM_WH

"""Hardware in the loop, issue #4 item 6 (meters over LoRaWAN): AMI meters running the real
meter firmware (main.create, kind "meter", interfaces "lorawan"; one of them on the real
MicroPython VM when it is installed) in a simulated city beside street poles, packet forwarders speaking GWMP over real UDP to the real gateway process,
publishing to a real mosquitto, read back by a paho subscriber.

Every delivered data frame (meters' fPort 20 reports, and the poles' too) reaches MQTT exactly
once, and each meter reading says what the meter reported, within the codec's resolution,
which in turn is the board's physical truth at the instant it reported: the energy at most
what really flowed and at least that minus one commit step and one metering step; the power
and the voltage as the household drew them (constant loads, one per meter, so an EUI mix-up
would show).
"""

import collections

import pytest

import sim.demo
import sim.mpvm
from hil_tests.rig import MOSQUITTO, CityUnderTest, MeterReports, wait_for
from hil_tests.test_city_to_mqtt import distinct_data
from hil_tests.truth import fields_of
from sim.board import LocalBoard
from sim.city import City
from sim.vmboard import VMBoard

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

SEED = 11
VM_METER = sim.mpvm.available()  # one meter's firmware on the real MicroPython VM
EPOCH_S = 1774114800
N_POLES = 2
LOADS_W = [2300.0, 4600.0, -1150.0]  # the last one exports (rooftop PV)
STEP_WH = 20  # the meters' energy commit step
REPORT_S = 300
RUN_S = 3600
MAX_METERING_WH = max(abs(w) for w in LOADS_W) / 3600.0  # energy of one 1 s metering step

# SenML name -> (the report field, codec resolution: half a step + float slack)
FIELDS = {"import_energy": ("import_energy", 1e-6), "export_energy": ("export_energy", 1e-6),
          "active_power": ("active_power", 0.5 + 1e-6), "voltage": ("voltage", 0.05 + 1e-6),
          "power_factor": ("power_factor", 0.005 + 1e-6), "frequency": ("frequency", 0.05 + 1e-6)}


def board_factory():
    """The first meter on the MicroPython VM (when node and the package are installed), every
    other board LocalBoard."""
    made = []

    def factory(name, dev_eui, cfg, x, y):
        kw = dict(x=x, y=y, seed=SEED, epoch_s=EPOCH_S)
        if VM_METER and name == "meter-0001":
            b = VMBoard(name, dev_eui, cfg, **kw)
        else:
            b = LocalBoard(name, dev_eui, cfg, **kw)
        made.append(b)
        return b

    factory.made = made
    return factory


class MeterCity(CityUnderTest):
    def __init__(self, workdir):
        super().__init__(workdir)
        factory = board_factory()
        try:
            city = City(N_POLES, 1, ("127.0.0.1", 9), seed=SEED, site=sim.demo.SITE,
                        epoch_s=EPOCH_S, barriers="expected", grace_s=3.0, boot_spread_s=30,
                        cfg={"report_interval_s": REPORT_S}, board_factory=factory,
                        n_meters=len(LOADS_W), meter_load_w=LOADS_W,
                        meter_cfg={"report_interval_s": REPORT_S, "energy_step_wh": STEP_WH,
                                   "phases": 3, "confirmed_report_every": 4})
        except BaseException:
            for b in factory.made:
                b.close()
            raise
        self.meter_reports = MeterReports(city)
        self.attach(city)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = MeterCity(tmp_path_factory.mktemp("hil-meter-lorawan"))
    yield r
    r.close()


def check_truth(name, f, truth):
    """A meter's report against the board's truth at that instant: problems."""
    p = []
    imp, exp = truth["import_wh"], truth["export_wh"]
    for field, wh in (("import_energy", imp), ("export_energy", exp)):
        # committed Wh only: never above what flowed, behind by < one step + one read
        if not wh - STEP_WH - MAX_METERING_WH - 1 <= f[field] <= wh + 1e-6:
            p.append("%s %s = %r, truth %.3f Wh" % (name, field, f[field], wh))
    if abs(f["active_power"] - truth["power_w"]) > 0.01:
        p.append("%s active_power %r, truth %r W" % (name, f["active_power"], truth["power_w"]))
    if abs(f["voltage"] - truth["voltage_v"]) > 0.01:
        p.append("%s voltage %r, truth %r V" % (name, f["voltage"], truth["voltage_v"]))
    return p


def test_every_meter_reading_reaches_mqtt_once_with_the_true_values(rig):
    rig.run(RUN_S)
    city = rig.city
    expected = distinct_data(city.delivered())
    wait_for(lambda: set(expected) <= set(rig.readings.keys()), 30,
             "every delivered frame at MQTT")
    got = [m for m in rig.readings.uplinks() if (m["eui"], m["fcnt"]) in expected]
    counts = collections.Counter((m["eui"], m["fcnt"]) for m in got)
    assert set(counts) == set(expected)
    assert [k for k, n in counts.items() if n != 1] == []  # exactly once
    assert rig.readings.bad == []

    meters = [b for b in city.boards if b.kind == "meter"]
    assert isinstance(meters[0], VMBoard) == VM_METER
    problems = []
    n_checked = 0
    for b in meters:
        frames = sorted((u for u in expected.values()
                         if u["board"] == b.name and u["fport"] == 20), key=lambda u: u["t_us"])
        reports = rig.meter_reports.reports[b.name]
        assert len(frames) >= RUN_S // REPORT_S - 2, (b.name, len(frames))
        # the last report may still wait in the MAC's queue when the run stops
        assert len(reports) - len(frames) in (0, 1), (b.name, len(reports), len(frames))
        by_key = {(m["eui"], m["fcnt"]): m for m in got}
        last_import = -1
        for (ms, f, truth), u in zip(reports, frames):
            assert ms <= u["t_us"] // 1000 < ms + REPORT_S * 1000, (b.name, ms, u["t_us"])
            m = by_key[(u["dev_eui"], u["fcnt"])]
            values = fields_of(m["records"])
            for senml, (field, tol) in FIELDS.items():
                if senml not in values:
                    problems.append("%s fcnt %d: %s missing" % (b.name, u["fcnt"], senml))
                elif f[field] is None or abs(values[senml][0] - f[field]) > tol:
                    problems.append("%s fcnt %d: %s = %r, the meter reported %r" % (
                        b.name, u["fcnt"], senml, values[senml][0], f[field]))
            problems += check_truth(b.name, f, truth)
            assert values["import_energy"][0] >= last_import  # monotonic at MQTT
            last_import = values["import_energy"][0]
            n_checked += 1
    assert problems == []
    assert n_checked >= len(meters) * (RUN_S // REPORT_S - 2)

    # the values are the ones each house drew: an hour at 2.3 kW, 4.6 kW, and 1.15 kW exported
    final = {b.name: rig.meter_reports.reports[b.name][-1][1] for b in meters}
    for b, w in zip(meters, LOADS_W):
        f = final[b.name]
        assert f["active_power"] == pytest.approx(w, abs=0.01)
        energy = f["import_energy"] if w > 0 else f["export_energy"]
        assert energy >= abs(w) * (RUN_S - 600) / 3600.0 - STEP_WH, (b.name, f)
    # and the poles' readings went through the same gateway, once each
    pole_frames = [k for k, u in expected.items() if u["fport"] == 10]
    assert len(pole_frames) >= N_POLES * (RUN_S // REPORT_S - 2)

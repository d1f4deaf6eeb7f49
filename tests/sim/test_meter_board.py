"""Meter boards (sim/devices/meter_board.py) on LocalBoard running the real meter firmware
(main.create, kind "meter"): the chip counts what the household draws, the relay disconnects
it, and a power cut at any instant loses only uncommitted energy: what the firmware reports
never goes backwards."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.board import LocalBoard
from sim.city import City
from sim.world import World

STEP_WH = 5


def meter(name="m", load_w=3000.0, interfaces="lorawan", **cfg):
    c = {"kind": "meter", "interfaces": interfaces, "phases": 3, "energy_step_wh": STEP_WH,
         "dev_eui": "70B3D57ED1000001", "app_key": "00" * 16, "join_eui": "70B3D57ED0000000"}
    c.update(cfg)
    b = LocalBoard(name, c["dev_eui"], c, strict=True)
    b.apply_env({"power_w": load_w, "voltage_v": 230.0, "line_hz": 50.0})
    return b


def run(b, until_ms):
    t = b.now_ms
    wake = b.poll(t) if b.app is not None else b.boot(t)
    while wake < until_ms:
        wake = b.poll(wake)
    return b.poll(until_ms)


def served_wh(b):
    return b.app.hw.register.import_wh()


def test_the_firmware_counts_what_flowed_and_serves_only_committed_wh():
    b = meter()
    run(b, 60000)  # one minute at 3 kW: 50 Wh
    truth = b.truth()
    assert truth["import_wh"] == pytest.approx(50.0, abs=0.01)
    live_mwh = b.app.hw.register.live()[0]
    assert live_mwh / 1000 == pytest.approx(truth["import_wh"], abs=3000 * 1.0 / 3600 + 0.01)
    assert truth["import_wh"] - STEP_WH - 1 <= served_wh(b) <= truth["import_wh"]
    chip = b.app.hw.chip
    assert chip.total_mw == pytest.approx(3000000, abs=10) and chip.mv[0] == 230000


def test_an_open_relay_stops_the_energy_and_survives_a_power_cut():
    b = meter()
    run(b, 10000)
    b.app.execute_command(70, {"action": "open"})  # the relay downlink (fPort 70)
    run(b, 12000)
    before = b.truth()["import_wh"]
    run(b, 30000)
    assert b.truth()["import_wh"] == pytest.approx(before, abs=1e-9)
    assert b.truth()["power_w"] == 0.0
    b.power_cut(30000)
    run(b, 40000)
    assert b.outputs()["relay"] == 0  # a cut does not reconnect a disconnected customer
    assert b.truth()["import_wh"] == pytest.approx(before, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 20000), min_size=1, max_size=4))
def test_power_cuts_at_any_instant_never_take_served_energy_back(gaps_ms):
    """A cut at hypothesis-chosen instants (ms, so inside a metering step or a commit too):
    after each boot the register serves at least what it served before the cut, and never
    more than what really flowed."""
    b = meter(load_w=20000.0)  # 5.6 Wh/s: a commit every second or so at a 5 Wh step
    t = 0
    last = 0
    for gap in gaps_ms:
        t += gap
        run(b, t)
        served = served_wh(b)
        assert served >= last
        last = served
        b.power_cut(t)
        run(b, t)  # boots from NVS
        assert served_wh(b) >= last, "energy went back across a cut at %d ms" % t
        assert served_wh(b) <= b.truth()["import_wh"] + 1e-6
    run(b, t + 5000)
    assert served_wh(b) >= last


def test_city_meters_get_the_worlds_household_load():
    world = World(seed=2)
    city = City(0, 1, ("127.0.0.1", 9), seed=2, world=world, n_meters=2,
                meter_cfg={"phases": 1})
    assert [d["kind"] for d in city.devices()] == ["meter", "meter"]
    assert [d["dev_eui"] for d in city.devices()] == ["70B3D57ED1000001", "70B3D57ED1000002"]
    assert 'kind = "meter"' in city.registry_toml()
    for b in city.boards:
        world.apply(b, 600 * 10**6)
        want = world.household(b.name, 600 * 10**6)
        assert len(want) == 1 and b.hardware.env()["phase_power_w"] == want
    a, b = (world.household(m.name, 600 * 10**6)[0] for m in city.boards)
    assert a != b  # each house draws its own load


@pytest.mark.skipif(not __import__("sim.mpvm").mpvm.available(), reason="MicroPython VM missing")
def test_the_same_meter_on_the_micropython_vm_counts_the_same_and_survives_a_cut():
    """sim/devices/meter_board.py and the meter firmware on the real VM: same truth, same
    committed energy as on CPython, and a power cut keeps it."""
    from sim.vmboard import VMBoard

    local = meter()
    cfg = dict(local.cfg)
    with VMBoard("vm", cfg["dev_eui"], cfg, strict=True) as vm:
        vm.apply_env({"power_w": 3000.0, "voltage_v": 230.0, "line_hz": 50.0})
        for b in (local, vm):
            wake = b.boot(0)
            while wake < 45000:
                wake = b.poll(wake)
            b.poll(45000)
        served = vm.eval("app.hw.register.import_wh()")
        assert served == served_wh(local) and served >= 25
        assert vm.truth() == pytest.approx(local.truth())
        vm.power_cut(45000)
        vm.poll(45000)
        assert vm.eval("app.hw.register.import_wh()") == served

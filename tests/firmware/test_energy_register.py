"""Energy registers: never backwards across power cuts at any instant, bounded loss, bounded commits."""

import zlib

import pytest
from hypothesis import given, settings, strategies as st

from firmware.energy_register import EnergyRegister, crc32
from sim.fakes import esp32

STEP = 50000  # mWh
PERIOD = 3600000  # ms


@pytest.fixture(autouse=True)
def fresh_flash(monkeypatch):
    monkeypatch.setattr(esp32, "FLASH", esp32.Flash())
    yield
    esp32.power_cut()


def wipe():
    """A factory-fresh flash (hypothesis runs many examples inside one test)."""
    esp32.power_cut()
    esp32.FLASH = esp32.Flash()


def boot(step=STEP, period=PERIOD):
    return EnergyRegister(esp32.NVS("meter"), step_mwh=step, period_ms=period)


class PowerCut(BaseException):
    pass


class CuttingNVS(esp32.NVS):
    """NVS whose power goes at a chosen point of a commit sequence: before set_blob, between
    set_blob and commit, or with the slot's blob torn (garbage committed, as a write cut
    halfway through the flash page program would leave it)."""

    def __init__(self, namespace, cut_at_save, where):
        super().__init__(namespace)
        self.saves = 0
        self.cut_at_save, self.where = cut_at_save, where

    def set_blob(self, key, value):
        self.saves += 1
        if self.saves == self.cut_at_save:
            if self.where == "before_write":
                raise PowerCut()
            if self.where == "torn":
                bad = bytearray(value)
                bad[7] ^= 0xFF  # bits of the totals flipped, CRC no longer matches
                super().set_blob(key, bytes(bad[:20]))  # and cut short
                super().commit()
                raise PowerCut()
        super().set_blob(key, value)

    def commit(self):
        if self.saves == self.cut_at_save and self.where == "before_commit":
            raise PowerCut()
        super().commit()


def test_crc32_is_zlibs():
    for data in (b"", b"123456789", bytes(range(21))):
        assert crc32(data, len(data)) == zlib.crc32(data)


@given(st.binary(min_size=0, max_size=40))
def test_crc32_matches_zlib_for_any_bytes(data):
    assert crc32(data, len(data)) == zlib.crc32(data)


def test_fresh_register_is_zero_and_commits_per_step():
    r = boot()
    assert r.served() == (0, 0) and esp32.FLASH.commits == 0
    r.add(STEP - 1, 0, 0)
    assert r.served() == (0, 0) and r.live() == (STEP - 1, 0)  # not durable yet: not served
    assert esp32.FLASH.commits == 0
    r.add(1, 7, 1000)
    assert r.served() == (STEP, 7) and esp32.FLASH.commits == 1
    assert r.import_wh() == 50 and r.export_wh() == 0


def test_energy_waiting_a_period_is_committed():
    r = boot()
    r.add(10, 0, 5000)
    assert not r.poll(5000 + PERIOD - 1)
    assert r.poll(5000 + PERIOD)
    assert r.served() == (10, 0)
    assert not r.poll(5000 + 3 * PERIOD)  # nothing new: no commit
    assert esp32.FLASH.commits == 1


def test_period_is_measured_on_the_ticks_circle():
    r = boot()
    t0 = (1 << 30) - 1000  # ticks_ms wraps at 2**30 on the ESP32
    r.add(10, 0, t0)
    assert not r.poll(500)
    assert r.poll((t0 + PERIOD) & ((1 << 30) - 1))


def test_boot_restores_the_newest_slot_and_alternates():
    r = boot(step=10)
    for i in range(5):
        r.add(10, 3, i)
    assert esp32.FLASH.commits == 5
    assert set(esp32.FLASH.data["meter"]) == {"e0", "e1"}
    esp32.power_cut()
    r2 = boot(step=10)
    assert r2.served() == r2.live() == (50, 15) and r2.seq == 5


def test_a_corrupt_newest_slot_falls_back_to_the_other():
    r = boot(step=10)
    r.add(10, 0, 0)
    r.add(10, 0, 0)  # seq 2 in slot e1
    kind, blob = esp32.FLASH.data["meter"]["e1"]
    esp32.FLASH.data["meter"]["e1"] = (kind, blob[:5] + bytes([blob[5] ^ 1]) + blob[6:])
    r2 = boot(step=10)
    assert r2.served() == (10, 0) and r2.bad_slots == 1


def test_negative_energy_is_refused():
    r = boot()
    with pytest.raises(ValueError):
        r.add(-1, 0, 0)


def run_and_cut(ops, cut_at_save, where, step, period):
    """Feed ops (import, export, dt_ms) until the power goes; returns (served_max, live_at_cut,
    last_delta) as the meter had them."""
    nvs = CuttingNVS("meter", cut_at_save, where)
    r = EnergyRegister(nvs, step_mwh=step, period_ms=period)
    served_max = r.served()
    t = 0
    delta = (0, 0)
    try:
        for imp, exp, dt in ops:
            t += dt
            delta = (imp, exp)
            before = r.live()
            r.add(imp, exp, t)
            delta = (0, 0)
            s = r.served()
            assert s[0] >= served_max[0] and s[1] >= served_max[1]
            served_max = s
        live = r.live()
    except PowerCut:
        live = (before[0] + delta[0], before[1] + delta[1])
        return served_max, live, delta
    return served_max, live, (0, 0)


ops_st = st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 5000), st.integers(0, 600000)),
                  min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(ops=ops_st, cut_at_save=st.integers(1, 40),
       where=st.sampled_from(["anywhere", "before_write", "before_commit", "torn"]),
       cut_after=st.integers(0, 120), step=st.sampled_from([1000, 10000, 50000]))
def test_power_cut_at_any_instant_never_goes_backwards_and_loses_at_most_a_step(ops, cut_at_save, where, cut_after, step):
    wipe()
    if where == "anywhere":
        ops = ops[:cut_after]  # the power goes between two operations
        cut_at_save = 0
    served_max, live, in_flight = run_and_cut(ops, cut_at_save, where, step, PERIOD)
    esp32.power_cut()
    r = boot(step=step)
    restored = r.live()
    assert r.served() == restored
    for d in (0, 1):
        # never backwards: at least everything ever served
        assert restored[d] >= served_max[d]
        # never invented: at most what was measured
        assert restored[d] <= live[d]
        # bounded loss: less than a step, plus the delta being added when the cut hit
        assert live[d] - restored[d] < step + in_flight[d]


@settings(max_examples=15, deadline=None)
@given(import_w=st.integers(0, 15000), export_w=st.integers(0, 5000), read_s=st.sampled_from([10, 60]))
def test_commits_per_day_stay_within_the_stated_bound(import_w, export_w, read_s):
    wipe()
    r = boot()
    t = 0
    for _ in range(86400 // read_s):
        t += read_s * 1000
        r.add(import_w * read_s * 1000 // 3600, export_w * read_s * 1000 // 3600, t)
    e_imp, e_exp = r.live()
    bound = e_imp // STEP + e_exp // STEP + 86400000 // PERIOD + 2
    assert esp32.FLASH.commits == r.commits <= bound
    # and the energy at a cut now would lose less than a step or an hour's worth
    for d, w in ((0, import_w), (1, export_w)):
        assert r.live()[d] - r.served()[d] < min(STEP, w * 1000 + 1)


def test_a_steady_kilowatt_costs_about_500_commits_a_day():
    r = boot()
    t = 0
    for _ in range(8640):  # a read every 10 s, 1 kW import
        t += 10000
        r.add(1000 * 10 * 1000 // 3600, 0, t)
    assert 400 <= esp32.FLASH.commits <= 504  # 24 kWh / 50 Wh = 480, + 24 hourly at most


class FailingNVS(esp32.NVS):
    fail = True

    def commit(self):
        if self.fail:
            raise OSError(28, "ESP_ERR_NVS_NOT_ENOUGH_SPACE")
        super().commit()


def test_a_failed_commit_serves_nothing_new_and_is_retried():
    nvs = FailingNVS("meter")
    r = EnergyRegister(nvs, step_mwh=1000)
    r.add(1500, 0, 0)
    assert r.served() == (0, 0) and r.save_errors == 1 and r.live() == (1500, 0)
    nvs.fail = False
    r.add(0, 0, 10)
    assert r.served() == (1500, 0) and r.commits == 1
    esp32.power_cut()
    assert boot().served() == (1500, 0)

"""FCnt / DevNonce persistence: values never repeat across power cuts, and flash writes stay bounded."""

import json

import pytest
from hypothesis import given, settings, strategies as st

import sim.mpvm
from firmware.nvs_store import NvsStore
from firmware.reserved_counter import ReservedCounter
from sim.fakes import esp32


@pytest.fixture(autouse=True)
def fresh_flash(monkeypatch):
    monkeypatch.setattr(esp32, "FLASH", esp32.Flash())
    yield
    esp32.power_cut()


def boot(key="fcnt", step=256):
    """A cold boot: new Python objects over whatever the flash kept."""
    return ReservedCounter(NvsStore(esp32.NVS("lorawan")), key, step=step)


def test_counts_from_zero_and_writes_once_per_step():
    c = boot(step=16)
    assert [c.take() for _ in range(40)] == list(range(40))
    assert esp32.FLASH.commits == 3  # reservations at 0, 16 and 32


def test_power_cut_skips_ahead_never_back():
    c = boot(step=16)
    for _ in range(5):
        c.take()
    esp32.power_cut()
    c = boot(step=16)
    assert c.take() == 16  # resumes at the reservation: values 5..15 are skipped, none repeats


def test_uncommitted_write_is_lost_on_a_cut():
    nvs = esp32.NVS("x")
    nvs.set_blob("k", b"12345678")
    esp32.power_cut()
    with pytest.raises(OSError):
        esp32.NVS("x").get_blob("k", bytearray(8))


def test_values_beyond_i32_survive():
    store = NvsStore(esp32.NVS("lorawan"))
    store.save("fcnt", 0xFFFFFFF0)
    esp32.power_cut()
    assert NvsStore(esp32.NVS("lorawan")).load("fcnt") == 0xFFFFFFF0


def test_exhausted_counter_refuses():
    c = ReservedCounter(NvsStore(esp32.NVS("l")), "n", step=4, limit=2)
    assert [c.take(), c.take(), c.take()] == [0, 1, 2]
    with pytest.raises(OverflowError):
        c.take()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12), st.integers(1, 64))
def test_never_repeats_across_random_power_cuts(runs, step):
    """Each run takes some values, then the power is cut at that instant."""
    esp32.FLASH = esp32.Flash()
    seen = []
    for n in runs:
        c = boot(step=step)
        seen.extend(c.take() for _ in range(n))
        esp32.power_cut()
    assert seen == sorted(set(seen)), "a value repeated or went backwards"
    # Wear: one commit per `step` values, plus at most one per boot that took anything.
    boots_used = sum(1 for n in runs if n)
    assert esp32.FLASH.commits <= len(seen) // step + boots_used + 1


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_runs_on_micropython():
    script = """
import json
from reserved_counter import ReservedCounter
class Store:
    def __init__(self): self.d = {}; self.saves = 0
    def load(self, k): return self.d.get(k)
    def save(self, k, v): self.d[k] = v; self.saves += 1
s = Store()
c = ReservedCounter(s, "fcnt", step=10)
a = [c.take() for _ in range(25)]
c = ReservedCounter(s, "fcnt", step=10)   # cold boot
a.append(c.take())
print(json.dumps([a, s.saves]))
"""
    out = json.loads(sim.mpvm.run(script, mounts=[(sim.mpvm.ROOT + "/firmware", "/lib")]))
    assert out[0] == list(range(25)) + [30]
    assert out[1] == 4

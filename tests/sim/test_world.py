"""World: daylight, weather cycle, lamp power and energy, incidents; deterministic per seed."""

import pytest

from sim.world import World

H = 3_600_000_000  # one virtual hour in us


class FakeOutputs:
    """Only the board's outputs() and apply_env() are used by World.apply."""

    def __init__(self, name, duty, relay=1):
        self.name, self.duty, self.relay, self.env = name, duty, relay, []

    def outputs(self):
        return {"dimmer_duty_u16": self.duty, "relay": self.relay}

    def apply_env(self, env):
        self.env.append(env)


def world(seed=1):
    w = World(seed=seed)  # Amsterdam, starting 2026-01-01T00:00Z
    w.add_pole("p1")
    w.add_pole("p2", rated_w=100.0, invert=True)
    return w


def test_daylight_follows_the_sun_in_amsterdam_in_january():
    w = world()
    # sunrise ~07:50 UTC, sunset ~15:40 UTC on 1 January
    assert w.solar_elevation_deg(7 * H + H // 2) < 0 < w.solar_elevation_deg(8 * H + H // 6)
    assert w.solar_elevation_deg(15 * H + H // 4) > 0 > w.solar_elevation_deg(16 * H)
    assert 13 < w.solar_elevation_deg(11 * H + H // 2) < 16  # noon: 90 - 52.4 - 23
    night, noon = w.daylight_lux(0), w.daylight_lux(11 * H + H // 2)
    assert night == pytest.approx(0.1)
    assert 3000 < noon < 30000
    assert w.env("p1", 0)["lux"] < 1 < w.env("p1", 11 * H)["lux"]


def test_weather_has_a_daily_cycle_and_is_reproducible():
    a, b, c = world(1), world(1), world(2)
    t = [a.temperature_c(h * H) for h in range(24)]
    assert max(t) - min(t) > 8  # amplitude 5 around the mean
    assert t.index(max(t)) in (13, 14, 15)  # warmest in the afternoon (UTC, lon 4.9 E)
    assert a.humidity_rh(14 * H) < a.humidity_rh(4 * H)
    assert [a.env("p1", h * H) for h in range(48)] == [b.env("p1", h * H) for h in range(48)]
    assert [a.env("p1", h * H) for h in range(48)] != [c.env("p1", h * H) for h in range(48)]
    assert a.env("p1", H) != a.env("p2", H)  # per-pole placement


def test_lamp_power_energy_and_failure():
    w = world()
    p1, p2 = FakeOutputs("p1", 65535), FakeOutputs("p2", 65535 // 4)
    w.apply(p1, 0)
    w.apply(p2, 0)
    assert p1.env[-1]["power_w"] == 60.0
    assert p2.env[-1]["power_w"] == pytest.approx(75.0, abs=0.01)  # inverted PWM: 75 %
    p1.duty = 32768
    w.apply(p1, 2 * H, full=False)  # 2 h at 60 W, then half power
    assert p1.env[-1]["power_w"] == pytest.approx(30.0, abs=0.01)
    assert w.apply(p1, 3 * H, full=False) is None  # unchanged: nothing applied
    w.inject(4 * H, "p1", "lamp_failure", True)
    w.apply(p1, 4 * H, full=False)
    assert p1.env[-1]["power_w"] == 0.0
    w.apply(p1, 6 * H, full=False)
    assert w.energy_wh["p1"] == pytest.approx(120 + 60, rel=1e-4)
    p1.relay = 0
    assert w.lamp("p1", p1.outputs(), 0) == (0.0, 0.0)


def test_incidents_change_the_truth_from_their_instant():
    w = world()
    w.inject(5 * H, "p1", "tilt", 12.5)
    w.inject(6 * H, "p1", "door", True)
    w.inject(7 * H, "p1", "door", False)
    assert w.env("p1", 5 * H - 1)["tilt_deg"] == 0.0
    assert w.env("p1", 5 * H)["tilt_deg"] == 12.5
    assert w.env("p1", 6 * H + 1)["door_open"] and not w.env("p1", 7 * H)["door_open"]
    assert w.env("p2", 6 * H + 1)["door_open"] is False
    assert w.next_event_us(5 * H) == 6 * H
    with pytest.raises(ValueError):
        w.inject(0, "p1", "earthquake", 1)
    with pytest.raises(ValueError):
        w.inject(0, "nope", "tilt", 1)

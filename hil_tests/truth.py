"""What a reading at MQTT must say: the pole's own report (within the codec's resolution) and
the simulated world's physical truth at the instant the pole measured it.

A report (firmware/pole.py) carries the last sample, taken at most one sample interval before
the report; the world (sim/world.py) sets every pole's sensors once per env step and its lamp
power whenever the board's outputs change, and logs each application. So the value the pole
measured must equal one of the values that were applied in that sampling window.
"""

import math

from protocol.payload import layouts

# the pole report's fields: SenML unit and the codec's rounding (half a step; the lux float
# e4m12 keeps 12 significant bits)
UNITS = {"status": None, "dim_level": "/100", "lamp_power": "W", "lamp_energy": "Wh",
         "ambient_light": "lx", "temperature": "Cel", "humidity": "%RH"}
STATUS_BITS = {name: bit for bit, name, _ in layouts.POLE_STATUS}


def codec_tolerance(name, value):
    if name == "ambient_light":
        return max(0.05, abs(value) * 2.0 ** -12) + 1e-6
    return {"lamp_power": 0.05, "temperature": 0.25, "humidity": 0.25}.get(name, 0) + 1e-6


def fields_of(records):
    """{name: (value, unit)} of one uplink's SenML records (bit records under "status/x")."""
    out = {}
    for r in records:
        name = r[0]
        value = r[2] if 2 in r else r.get(4, r.get(3))
        out[name] = (value, r.get(1))
    return out


def check_against_report(mqtt_records, report):
    """Every field of the pole's report arrives with its unit, within the codec's resolution;
    returns a list of problems (empty when all is well)."""
    got = fields_of(mqtt_records)
    problems = []
    for name, unit in UNITS.items():
        if name not in got:
            problems.append("%s missing" % name)
            continue
        value, u = got[name]
        if u != unit:
            problems.append("%s unit %r, want %r" % (name, u, unit))
        want = report[name]
        if name == "lamp_energy":
            want = want % (1 << 24)
        if abs(value - want) > codec_tolerance(name, want):
            problems.append("%s = %r, the pole reported %r" % (name, value, want))
    for bit_name, bit in STATUS_BITS.items():
        value, _ = got.get("status/" + bit_name, (None, None))
        if value is not bool(report["status"] & (1 << bit)):
            problems.append("status/%s = %r, status %d" % (bit_name, value, report["status"]))
    return problems


class WorldTruth:
    """The physical values the world applied to each pole, from World.log."""

    def __init__(self, world, sample_interval_s=60):
        self.world = world
        self.window_us = int(sample_interval_s * 1e6)
        self.log = {}
        for t_us, name, env in world.log:
            self.log.setdefault(name, []).append((t_us, env))

    def _in_effect(self, name, key, t0_us, t1_us):
        """Values of env[key] in effect at some instant of [t0, t1]: the last one applied at
        or before t0 and every one applied inside."""
        vals, before = [], None
        for t, env in self.log.get(name, ()):
            if key not in env:
                continue
            if t <= t0_us:
                before = env[key]
            elif t <= t1_us:
                vals.append(env[key])
        return ([before] if before is not None else []) + vals

    def energy_wh(self, name, t_us):
        """True energy drawn by the pole's lamp up to t_us (the power applied, integrated)."""
        e, w0, t0 = 0.0, None, None
        for t, env in self.log.get(name, ()):
            if t > t_us:
                break
            if "power_w" in env:
                if w0 is not None:
                    e += w0 * (t - t0) / 3.6e9
                w0, t0 = env["power_w"], t
        if w0 is not None:
            e += w0 * (t_us - t0) / 3.6e9
        return e

    def check(self, name, report_ms, report):
        """Problems with the pole's measured values against the truth of its sampling window
        (empty list when each value is one that was in effect, within the sensor's
        resolution)."""
        t1 = report_ms * 1000
        t0 = t1 - self.window_us
        problems = []
        for field, key, tol in (("temperature", "temperature_c", 0.02),
                                ("humidity", "humidity_rh", 0.02),
                                ("lamp_power", "power_w", 0.11)):
            cands = self._in_effect(name, key, t0, t1)
            if not any(abs(report[field] - c) <= tol for c in cands):
                problems.append("%s %r not among the truths %r" % (field, report[field], cands))
        lux = report["ambient_light"]
        cands = self._in_effect(name, "lux", t0, t1)
        # VEML7700 as the firmware sets it up (gain 1, 100 ms: 0.0576 lx per count, up to
        # ~3.7 klx): one count, and 1 % for the sensor model above that
        if not any(abs(lux - c) <= 0.01 * c + 0.0577 for c in cands):
            problems.append("ambient_light %r not among the truths %r" % (lux, cands))
        e_lo, e_hi = self.energy_wh(name, t0), self.energy_wh(name, t1)
        # whole Wh, never more than was drawn, at most one Wh (plus the BL0942 pulse) behind
        if not math.floor(e_lo) - 1 <= report["lamp_energy"] <= e_hi + 1e-9:
            problems.append("lamp_energy %r outside the truth [%.3f, %.3f]"
                            % (report["lamp_energy"], e_lo, e_hi))
        for field, key in (("door_open", "door_open"),):
            cands = self._in_effect(name, key, t0, t1)
            bit = bool(report["status"] & (1 << STATUS_BITS[field]))
            if bit not in cands:
                problems.append("status/%s %r, world %r" % (field, bit, cands))
        return problems

"""The physical world of a simulated city over virtual time: light, weather, lamps, incidents.

Everything is a deterministic function of the seed, the virtual instant and the injected
events, so a test can recompute the truth for any pole at any instant and compare it with
what reached MQTT. What was actually applied to each board is also logged (``log``).

* Daylight: solar elevation from the day of year, the UTC time and the city's latitude /
  longitude (the usual declination + equation-of-time approximation, good to a few minutes),
  turned into illuminance: ~110 klx x sin(elevation) in sun, ~400 lx at sunrise/sunset, a
  decade per ~3 deg of civil twilight down to 0.1 lx at night. A cloud factor (0.3..1, one
  seeded draw per hour, interpolated) and a per-pole shading factor (0.7..1) scale it.
* Weather: temperature = daily mean + amplitude x cos(2 pi (hour - 15) / 24) (warmest at
  15:00 local solar time) + a seeded offset per day; relative humidity moves opposite to it.
  Per-pole offsets of a few tenths model placement.
* Lamps: power = rated W x level x relay, level = the dimmer's duty (inverted when the board
  inverts its PWM), relay None (no relay) counts as closed; a failed lamp draws nothing.
  The world integrates the true energy per pole (``energy_wh``) exactly as the BL0942 model
  does (at the power last applied).
* Incidents: ``inject(t_us, pole, kind, value)``: "tilt" (degrees from vertical), "door"
  (True = open), "lamp_failure" (True = failed), "lux_offset" (a passing shadow, lx).

* Households (AMI meters, ``add_meter``): per-phase net power from household_power_w, scaled
  and shifted in time per meter (seeded), or a constant ``load_w`` a test knows exactly; the
  mains voltage and frequency are the lamps'. The meter board integrates what really flowed
  (its relay may be open), so the energy truth is the board's (LocalBoard.truth()).

``env(name, t_us)`` is the sensor-facing truth for one pole (lux, temperature_c, humidity_rh,
tilt_deg, door_open); ``lamp(name, outputs)`` the lamp power from the board's outputs;
``household(name, t_us)`` a meter's per-phase load.
"""

import math
import random

EVENT_KINDS = ("tilt", "door", "lamp_failure", "lux_offset")


def household_power_w(t_s, phases, base_w=(800, 450, 300)):
    """Net active power per phase (W, < 0 = export) at t_s seconds: a slow swing plus a
    20 s ripple; L3 has rooftop PV that exports at times."""
    out = []
    for i in range(phases):
        base = base_w[i]
        p = base * (1.0 + 0.3 * math.sin(t_s / 600.0 + i) + 0.1 * math.sin(t_s / 20.0 + 2 * i))
        if i == 2:
            p -= 600 * max(0.0, math.sin(t_s / 900.0))
        out.append(p)
    return out


class World:
    def __init__(self, seed=0, epoch_s=1767225600, latitude=52.37, longitude=4.90,
                 temp_mean_c=10.0, temp_amplitude_c=5.0, humidity_mean=75.0, rated_w=60.0,
                 voltage_v=230.0, line_hz=50.0):
        self.seed = seed
        self.epoch_s = epoch_s
        self.latitude = latitude
        self.longitude = longitude
        self.temp_mean_c = temp_mean_c
        self.temp_amplitude_c = temp_amplitude_c
        self.humidity_mean = humidity_mean
        self.rated_w = rated_w
        self.voltage_v = voltage_v
        self.line_hz = line_hz
        self.poles = {}  # name -> per-pole constants
        self.meters = {}  # name -> per-household constants
        self.events = []  # (t_us, pole, kind, value), kept sorted
        self.energy_wh = {}
        self._power = {}  # name -> (watts now, since t_us)
        self.log = []  # (t_us, pole, applied env dict)
        self._hourly = {}
        self._base_cache = None

    # ---- setup ---------------------------------------------------------------------------

    def add_pole(self, name, rated_w=None, invert=False):
        rng = random.Random("%s/pole/%s" % (self.seed, name))
        self.poles[name] = {"shade": 0.7 + 0.3 * rng.random(),
                            "temp_off": rng.uniform(-0.4, 0.4),
                            "rh_off": rng.uniform(-2.0, 2.0),
                            "rated_w": self.rated_w if rated_w is None else rated_w,
                            "invert": invert}
        self.energy_wh[name] = 0.0

    def add_meter(self, name, phases=3, load_w=None):
        """A household behind meter `name`: load_w None = a seeded household_power_w, else that
        constant net power (W, < 0 = export) split evenly over the phases."""
        rng = random.Random("%s/meter/%s" % (self.seed, name))
        self.meters[name] = {"phases": phases, "load_w": load_w, "scale": 0.5 + rng.random(),
                             "shift_s": rng.uniform(0.0, 3600.0)}

    def household(self, name, t_us):
        """Per-phase net power (W) the household behind meter `name` draws at t_us."""
        m = self.meters[name]
        n = m["phases"]
        if m["load_w"] is not None:
            return [m["load_w"] / n] * n
        return [p * m["scale"] for p in household_power_w(t_us / 1e6 + m["shift_s"], n)]

    def inject(self, t_us, pole, kind, value):
        if kind not in EVENT_KINDS:
            raise ValueError("unknown event kind %r (known: %s)" % (kind, ", ".join(EVENT_KINDS)))
        if pole not in self.poles:
            raise ValueError("unknown pole %r" % (pole,))
        self.events.append((int(t_us), pole, kind, value))
        self.events.sort(key=lambda e: e[0])

    def next_event_us(self, after_us):
        for e in self.events:
            if e[0] > after_us:
                return e[0]
        return None

    def state(self, name, t_us):
        """Incident state of a pole at t_us: {"tilt": deg, "door": bool, ...}."""
        s = {"tilt": 0.0, "door": False, "lamp_failure": False, "lux_offset": 0.0}
        for t, pole, kind, value in self.events:
            if t > t_us:
                break
            if pole == name:
                s[kind] = value
        return s

    # ---- nature --------------------------------------------------------------------------

    def solar_elevation_deg(self, t_us):
        unix = self.epoch_s + t_us / 1e6
        days = unix / 86400.0
        g = math.radians(357.529 + 0.98560028 * (days - 10957.5))
        q = 280.459 + 0.98564736 * (days - 10957.5)
        lam = math.radians(q + 1.915 * math.sin(g) + 0.020 * math.sin(2 * g))
        eps = math.radians(23.439)
        dec = math.asin(math.sin(eps) * math.sin(lam))
        ra = math.degrees(math.atan2(math.cos(eps) * math.sin(lam), math.cos(lam)))
        eot_min = 4.0 * (((q - ra) + 180.0) % 360.0 - 180.0)
        utc_min = (unix % 86400.0) / 60.0
        solar_min = utc_min + eot_min + 4.0 * self.longitude
        ha = math.radians(solar_min / 4.0 - 180.0)
        lat = math.radians(self.latitude)
        s = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
        return math.degrees(math.asin(max(-1.0, min(1.0, s))))

    def _hour_draw(self, key, hour):
        k = (key, hour)
        v = self._hourly.get(k)
        if v is None:
            v = self._hourly[k] = random.Random("%s/%s/%d" % (self.seed, key, hour)).random()
            if len(self._hourly) > 4096:
                self._hourly.clear()
        return v

    def cloud(self, t_us):
        """Cloud transmission 0.3..1, one seeded draw per hour, linearly interpolated."""
        h = t_us / 3.6e9
        i = math.floor(h)
        a, b = self._hour_draw("cloud", i), self._hour_draw("cloud", i + 1)
        v = a + (b - a) * (h - i)
        return 0.3 + 0.7 * v

    def daylight_lux(self, t_us):
        e = self.solar_elevation_deg(t_us)
        if e > 0:
            lux = 400.0 + 110000.0 * math.sin(math.radians(e)) ** 1.15
        elif e > -9:
            lux = 400.0 * 10.0 ** (e / 2.9)  # ~3.5 lx at -6 deg (end of civil twilight)
        else:
            lux = 0.0
        return max(0.1, lux * self.cloud(t_us))

    def temperature_c(self, t_us):
        unix = self.epoch_s + t_us / 1e6
        local_h = ((unix % 86400.0) / 3600.0 + self.longitude / 15.0) % 24.0
        day = int((unix + self.longitude * 240.0) // 86400)
        off = (random.Random("%s/day/%d" % (self.seed, day)).random() - 0.5) * 4.0
        return self.temp_mean_c + off + self.temp_amplitude_c * math.cos(
            2.0 * math.pi * (local_h - 15.0) / 24.0)

    def humidity_rh(self, t_us):
        dt = self.temperature_c(t_us) - self.temp_mean_c
        return max(5.0, min(100.0, self.humidity_mean - 3.0 * dt))

    # ---- per pole ------------------------------------------------------------------------

    def _base(self, t_us):
        # the city-wide values at t_us, computed once for all poles
        c = self._base_cache
        if c is None or c[0] != t_us:
            c = self._base_cache = (t_us, self.daylight_lux(t_us), self.temperature_c(t_us),
                                    self.humidity_rh(t_us))
        return c

    def env(self, name, t_us):
        p = self.poles[name]
        s = self.state(name, t_us)
        _, lux, temp, rh = self._base(t_us)
        return {"lux": max(0.0, lux * p["shade"] + s["lux_offset"]),
                "temperature_c": temp + p["temp_off"],
                "humidity_rh": max(0.0, min(100.0, rh + p["rh_off"])),
                "tilt_deg": float(s["tilt"]), "door_open": bool(s["door"])}

    def lamp(self, name, outputs, t_us):
        """(power_w, current_a) of the pole's lamp for the board's outputs at t_us."""
        p = self.poles[name]
        if self.state(name, t_us)["lamp_failure"]:
            return 0.0, 0.0
        duty = outputs.get("dimmer_duty_u16")
        relay = outputs.get("relay")
        if duty is None or relay == 0:
            return 0.0, 0.0
        level = duty / 65535.0
        if p["invert"]:
            level = 1.0 - level
        w = p["rated_w"] * level
        return w, w / self.voltage_v

    def apply(self, board, t_us, full=True):
        """Set the board's physical inputs at t_us (a pole's lamp power from its outputs now;
        a meter's household load, on full updates only: its board applies the relay)."""
        name = board.name
        if name in self.meters:
            if not full:
                return None
            env = {"phase_power_w": self.household(name, t_us), "voltage_v": self.voltage_v,
                   "line_hz": self.line_hz, "now_ms": t_us // 1000}
            board.apply_env(env)
            self.log.append((t_us, name, env))
            return env
        w, a = self.lamp(name, board.outputs(), t_us)
        changed = self.lamp_power(name) != w or name not in self._power
        self._account(name, w, t_us)
        if not full and not changed:
            return None
        env = self.env(name, t_us) if full else {}
        env.update({"power_w": w, "current_a": a, "voltage_v": self.voltage_v,
                    "line_hz": self.line_hz, "now_ms": t_us // 1000})
        board.apply_env(env)
        self.log.append((t_us, name, env))
        return env

    def _account(self, name, watts, t_us):
        last = self._power.get(name)
        if last is not None:
            w0, t0 = last
            if t_us > t0:
                self.energy_wh[name] += w0 * (t_us - t0) / 3.6e9
        self._power[name] = (watts, t_us)

    def lamp_power(self, name):
        return self._power.get(name, (0.0, 0))[0]

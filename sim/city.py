"""A simulated city: street poles running the real firmware, packet forwarders on rooftops, the
radio medium, the physical world and one virtual clock, driven against a gateway over UDP.

    city = City(n_poles=12, n_forwarders=2, gateway_addr=("127.0.0.1", 1700), seed=1)
    city.write_registry("devices.toml")        # what the gateway must know
    city.gateway_addr = ("127.0.0.1", port)    # if only known once the gateway serves
    await city.run(3600)                       # one virtual hour (can be called again)
    await city.close()

Poles are switched on at seeded instants within the first ``boot_spread_s`` virtual seconds
(``boot_at_us``), as real installations are, so their report timers do not run in step.

Layout: poles ``spacing_m`` apart along streets ``block_m`` apart (a near-square grid);
forwarders at the centres of an even partition of the area (extra ones where coverage is
thinnest), so every pole is within radio
range of at least one (checked with the medium's mean link budget and ``link_margin_db``;
ValueError names the pole otherwise) and poles between two forwarders are heard by both
(``coverage()``), which exercises the gateway's dedup.

Meters: ``n_meters`` AMI meters (LoRaWAN, cfg kind "meter", interfaces "lorawan" unless
``meter_cfg`` says "both") in houses beside the streets, named ``meter-0001``..., DevEUI
``70B3D57ED1`` + 6 hex digits, reporting on fPort 20; the world gives each a household load
(``meter_load_w``: a constant net W instead, one for all or a list, one per meter, for
tests that want exact truth), and each
board's truth() says what really flowed through it. A city may have meters and no poles.

Identity: DevEUI ``70B3D57ED0`` + 6 hex digits (pole index + 1), JoinEUI fixed, AppKey drawn
from the seed. ``devices()`` lists them in the gateway registry's fields; ``registry_toml()``
writes the file format of gateway/lorawan/registry.py.

Faults, at virtual instants (seconds from the start): ``power_cut(at_s, pole)``,
``tilt(at_s, pole, deg)``, ``door(at_s, pole, open)``, ``lamp_failure(at_s, pole, failed)``,
``schedule(at_s, fn)`` (fn(city) runs then).

Log of every uplink sent (``uplinks``): the dicts of sim/air.py (board, dev_eui, t_us,
end_us, freq_hz, sf, bw_hz, phy, mtype, dev_addr, fcnt, fport, received = {forwarder EUI:
(rssi, snr)} of intact copies pushed to the gateway, lost = {forwarder EUI: reason}) plus
``utc`` (virtual time of the end of the frame). ``delivered()`` are those some forwarder
pushed intact, i.e. what the gateway must publish exactly once.

Observers (``observers``): callables ``fn(board, now_ms)`` run after every poll of a board
(after the world has followed its outputs), e.g. a test recording each report right after the
poll that made it. ``barriers`` (read/write) is the air's barrier mode, so a phase that needs
every uplink's RX1 held (a queued operator command rides the reply to any uplink) can switch
to "all" and back.

Radios: every device runs the firmware's real LoRa driver against the register-level model of
its board's chip; ``radio_boards`` (default: the streetgrid board with an SX1276 and with an
SX1262, alternating over poles and then meters) gives the device's config ``board`` in turn,
unless ``cfg``/``meter_cfg`` name one, so both chips are mixed in every city.

Boards are built by ``board_factory(name, dev_eui, cfg, x, y)`` (default: LocalBoard running
firmware.main.create, its rng seeded from the city's seed; ``board_factory=VMBoard`` runs the
firmware on the MicroPython VM instead).
"""

import asyncio
import math
import random

from protocol.lorawan.region import region
from sim.air import BARRIER_MODES, Air
from sim.board import LocalBoard
from sim.clock import DEFAULT_EPOCH_S, DEFAULT_GRACE_S, VirtualClock
from sim.forwarder import Forwarder
from sim.radio import Medium, range_m
from sim.world import World

JOIN_EUI = "70B3D57ED0000000"
DEV_EUI_PREFIX = "70B3D57ED0"
METER_EUI_PREFIX = "70B3D57ED1"
HOUSE_SETBACK_M = 10.0  # a meter's house from the street
FWD_EUI_PREFIX = "AA555A00000000"


def default_board_factory(name, dev_eui, cfg, x, y, seed=0, epoch_s=DEFAULT_EPOCH_S):
    return LocalBoard(name, dev_eui, cfg, x=x, y=y, seed=seed, epoch_s=epoch_s)


class City:
    def __init__(self, n_poles, n_forwarders, gateway_addr, seed=0, speed=2880.0,
                 spacing_m=25.0, block_m=50.0, site="sim-city", cfg=None, board_factory=None,
                 model="lorasim", shadowing_sigma_db=0.0, grace_s=DEFAULT_GRACE_S,
                 epoch_s=DEFAULT_EPOCH_S, link_margin_db=6.0, env_step_s=60.0,
                 world=None, forwarder_kw=None, jump_idle=True, boot_spread_s=60.0, barriers="all",
                 n_meters=0, meter_cfg=None, meter_load_w=None,
                 radio_boards=("streetgrid-sx1276", "streetgrid-sx1262")):
        if n_poles < 0 or n_meters < 0 or n_poles + n_meters < 1 or n_forwarders < 1:
            raise ValueError("a city needs at least one pole or meter and one forwarder")
        self.seed = seed
        self.site = site
        self._gateway_addr = tuple(gateway_addr)
        self.env_step_us = int(env_step_s * 1e6)
        self.clock = VirtualClock(speed=speed, grace_s=grace_s, epoch_s=epoch_s,
                                  jump_idle=jump_idle)
        self.medium = Medium(model=model, seed=seed, shadowing_sigma_db=shadowing_sigma_db)
        self.air = Air(self.medium, self.clock, barriers=barriers)
        self.world = world or World(seed=seed, epoch_s=epoch_s)
        self.link_margin_db = link_margin_db
        rng = random.Random("city/%s" % seed)
        base_cfg = {"join_eui": JOIN_EUI}
        base_cfg.update(cfg or {})
        self.pole_cfg = base_cfg
        factory = board_factory or (
            lambda *a: default_board_factory(*a, seed=seed, epoch_s=epoch_s))  # noqa: E731
        self.boards = []
        self._devices = []
        cols = max(1, int(math.ceil(math.sqrt(max(n_poles, n_meters) * block_m / spacing_m))))
        for i in range(n_poles):
            name = "pole-%04d" % (i + 1)
            dev_eui = "%s%06X" % (DEV_EUI_PREFIX, i + 1)
            app_key = "%032X" % rng.getrandbits(128)
            c = dict(base_cfg, dev_eui=dev_eui, app_key=app_key)
            c.setdefault("board", radio_boards[len(self._devices) % len(radio_boards)])
            # the lamp the world lights is the lamp the firmware judges its power alarms by
            c.setdefault("lamp_rated_w", int(round(self.world.rated_w)))
            x, y = (i % cols) * spacing_m, (i // cols) * block_m
            self.world.add_pole(name, rated_w=c["lamp_rated_w"],
                                invert=bool(c.get("dimmer_invert", False)))
            b = factory(name, dev_eui, c, x, y)
            self.boards.append(b)
            self.air.add_board(b)
            self._devices.append({"name": name, "site": site, "kind": "pole", "dev_eui": dev_eui,
                                  "join_eui": c["join_eui"], "app_key": app_key})
        self.meter_cfg = {"join_eui": JOIN_EUI, "kind": "meter", "interfaces": "lorawan"}
        self.meter_cfg.update(meter_cfg or {})
        for j in range(n_meters):
            name = "meter-%04d" % (j + 1)
            dev_eui = "%s%06X" % (METER_EUI_PREFIX, j + 1)
            app_key = "%032X" % rng.getrandbits(128)
            c = dict(self.meter_cfg, dev_eui=dev_eui, app_key=app_key)
            c.setdefault("board", radio_boards[len(self._devices) % len(radio_boards)])
            # a house beside the street, between two poles
            x, y = (j % cols + 0.5) * spacing_m, (j // cols) * block_m + HOUSE_SETBACK_M
            load = meter_load_w[j] if isinstance(meter_load_w, (list, tuple)) else meter_load_w
            self.world.add_meter(name, phases=int(c.get("phases", 3)), load_w=load)
            b = factory(name, dev_eui, c, x, y)
            self.boards.append(b)
            self.air.add_board(b)
            self._devices.append({"name": name, "site": site, "kind": "meter",
                                  "dev_eui": dev_eui, "join_eui": c["join_eui"],
                                  "app_key": app_key})
        self.by_name = {b.name: b for b in self.boards}
        self._started = False
        self.forwarders = []
        for j, (fx, fy) in enumerate(self._forwarder_sites(n_forwarders)):
            kw = {"band": region(base_cfg.get("region", "EU868")).band}
            kw.update(forwarder_kw or {})
            fwd = Forwarder("%s%02X" % (FWD_EUI_PREFIX, j + 1), fx, fy, self.clock,
                            self.gateway_addr, seed=seed, **kw)
            self.forwarders.append(fwd)
            self.air.add_forwarder(fwd)
        self._check_coverage()
        self._actions = []  # (t_us, seq, fn)
        self._seq = 0
        # poles are not all switched on at the same millisecond (reports would stay in step)
        self.boot_at_us = {b.name: int(rng.random() * boot_spread_s * 1e3) * 1000
                          for b in self.boards}
        self._next_env_us = 0
        self._started = False
        self.booted = set()
        self.counters = {"power_cuts": 0, "env_updates": 0}
        self.observers = []  # fn(board, now_ms) after every board poll

    @property
    def barriers(self):
        """The air's barrier mode ("all", "expected", "none"; sim/air.py)."""
        return self.air.barriers

    @barriers.setter
    def barriers(self, mode):
        if mode not in BARRIER_MODES:
            raise ValueError("barriers must be one of %r" % (BARRIER_MODES,))
        self.air.barriers = mode

    @property
    def gateway_addr(self):
        return self._gateway_addr

    @gateway_addr.setter
    def gateway_addr(self, addr):
        """Point the forwarders elsewhere (before run(): e.g. once the gateway, started with the
        registry this city wrote, reports its UDP port)."""
        if self._started:
            raise RuntimeError("the forwarders are already connected")
        self._gateway_addr = tuple(addr)
        for f in self.forwarders:
            f.gateway_addr = self._gateway_addr

    # ---- layout --------------------------------------------------------------------------

    def _forwarder_sites(self, n):
        """Centres of an fx x fy partition of the poles' bounding box (fx * fy <= n), then the
        remaining forwarders each at the pole farthest from every forwarder so far."""
        xs = [b.x for b in self.boards]
        ys = [b.y for b in self.boards]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        fx = min(n, max(1, int(round(math.sqrt(n * w / h)))))
        fy = max(1, n // fx)
        sites = [(x0 + w * (i + 0.5) / fx, y0 + h * (j + 0.5) / fy)
                 for j in range(fy) for i in range(fx)]
        while len(sites) < n:
            far = max(self.boards, key=lambda b: (min(math.hypot(b.x - sx, b.y - sy)
                                                      for sx, sy in sites), -b.x, -b.y))
            sites.append((far.x, far.y))
        return sites

    def _in_range(self, b, fwd):
        sf = 12 - int(b.cfg.get("data_rate", 5)) if int(b.cfg.get("data_rate", 5)) <= 5 else 7
        power = b.cfg.get("tx_power_dbm", 14)
        reach = range_m(sf, 125000, power - self.link_margin_db)
        return math.hypot(b.x - fwd.x, b.y - fwd.y) <= reach

    def coverage(self):
        """pole name -> forwarder EUIs whose mean link budget (with the margin) reaches it."""
        return {b.name: [f.eui_hex for f in self.forwarders if self._in_range(b, f)]
                for b in self.boards}

    def _check_coverage(self):
        for name, fwds in self.coverage().items():
            if not fwds:
                b = self.by_name[name]
                d = min(math.hypot(b.x - f.x, b.y - f.y) for f in self.forwarders)
                raise ValueError("%s at (%.0f, %.0f) m is %.0f m from the nearest forwarder, out "
                                 "of range: use more forwarders or a smaller spacing"
                                 % (name, b.x, b.y, d))

    # ---- registry ------------------------------------------------------------------------

    def devices(self):
        """[{name, site, kind, dev_eui, join_eui, app_key}] for the gateway registry."""
        return [dict(d) for d in self._devices]

    def registry_toml(self):
        out = []
        for d in self._devices:
            out.append("[[device]]")
            for k in ("name", "site", "kind", "dev_eui", "join_eui", "app_key"):
                out.append('%s = "%s"' % (k, d[k]))
            out.append("")
        return "\n".join(out)

    def write_registry(self, path):
        with open(path, "w") as f:
            f.write(self.registry_toml())
        return path

    # ---- faults --------------------------------------------------------------------------

    def schedule(self, at_s, fn):
        self._seq += 1
        self._actions.append((int(round(at_s * 1e3)) * 1000, self._seq, fn))  # whole ms
        self._actions.sort(key=lambda a: (a[0], a[1]))

    def power_cut(self, at_s, pole):
        def cut(city):
            b = city.by_name[pole]
            city.counters["power_cuts"] += 1
            city.booted.add(pole)
            city.air.wake(b, b.power_cut(city.clock.now_ms))
        self.schedule(at_s, cut)

    def _incident(self, at_s, pole, kind, value):
        self.world.inject(int(at_s * 1e6), pole, kind, value)
        self.schedule(at_s, lambda city: city._apply_env(city.by_name[pole]))

    def tilt(self, at_s, pole, deg):
        self._incident(at_s, pole, "tilt", deg)

    def door(self, at_s, pole, open_=True):
        self._incident(at_s, pole, "door", open_)

    def lamp_failure(self, at_s, pole, failed=True):
        self._incident(at_s, pole, "lamp_failure", failed)

    # ---- running -------------------------------------------------------------------------

    def _apply_env(self, board, full=True):
        self.world.apply(board, self.clock.now_us, full=full)
        if board.name in self.booted:
            self.air.wake(board, self.clock.now_ms)  # e.g. the door pin changed: poll now

    def _next_hook_us(self):
        t = self._next_env_us
        if self._actions and self._actions[0][0] < t:
            t = self._actions[0][0]
        return t

    def _hook(self, now_us):
        while self._actions and self._actions[0][0] <= now_us:
            _, _, fn = self._actions.pop(0)
            fn(self)
        if now_us >= self._next_env_us:
            for b in self.boards:
                self.world.apply(b, now_us)
            self.counters["env_updates"] += 1
            self._next_env_us = now_us + self.env_step_us

    def _after_poll(self, board):
        self.world.apply(board, self.clock.now_us, full=False)  # lamp power follows the PWM
        for fn in self.observers:
            fn(board, board.now_ms)

    async def start(self):
        if self._started:
            return
        self._started = True
        for f in self.forwarders:
            await f.start()
        await asyncio.sleep(0.05)  # let the PULL_DATA reach the gateway before any uplink
        for b in self.boards:
            self.world.apply(b, self.clock.now_us)
        self._next_env_us = self.clock.now_us + self.env_step_us
        self.air.after_poll = self._after_poll
        t0 = self.clock.now_us
        for b in self.boards:
            self.schedule((t0 + self.boot_at_us[b.name]) / 1e6, self._booter(b))

    @staticmethod
    def _booter(board):
        def boot(city):
            city.booted.add(board.name)
            city.air.wake(board, board.boot(city.clock.now_ms))
            city.world.apply(board, city.clock.now_us, full=False)
        return boot

    async def run(self, duration_virtual_s):
        """Run for duration_virtual_s virtual seconds from the current virtual time."""
        await self.start()
        until = self.clock.now_us + int(duration_virtual_s * 1e6)
        return await self.air.run_until(until, self._next_hook_us, self._hook)

    async def close(self):
        for f in self.forwarders:
            await f.stop()
        for b in self.boards:
            b.close()

    # ---- results -------------------------------------------------------------------------

    @property
    def uplinks(self):
        for u in self.air.uplinks:
            if "utc" not in u:
                u["utc"] = self.clock.utc_iso(u["end_us"])
        return self.air.uplinks

    def delivered(self, data_only=True):
        """Uplinks some forwarder pushed intact (data frames only unless data_only=False)."""
        return [u for u in self.uplinks if u["received"]
                and (not data_only or u["mtype"] in (2, 4))]

    def stats(self):
        fw = {}
        for f in self.forwarders:
            for k, v in f.counters.items():
                fw[k] = fw.get(k, 0) + v
        boards = {}
        for b in self.boards:
            for k, v in getattr(b, "counters", {}).items():
                boards[k] = boards.get(k, 0) + v
        return {"virtual_s": self.clock.now_us / 1e6, "air": dict(self.air.counters),
                "clock": dict(self.clock.counters), "forwarders": fw, "boards": boards,
                "city": dict(self.counters), "uplinks": len(self.air.uplinks),
                "delivered": len(self.delivered())}

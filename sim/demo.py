"""`python -m sim demo`: a city block of emulated poles and meters, live, through the real
gateway to MQTT.

What runs, all on this machine: an MQTT broker (sim/broker.py), the gateway as its own process
(`python -m gateway run`, exactly as deployed), and a sim.city.City whose poles and LoRaWAN
meters run the real firmware (one or more of them on the real MicroPython VM) and whose packet
forwarders speak GWMP over UDP to the gateway. Beside it, an RS-485 bus: emulated meters
running the meter firmware (`python -m sim meter`, one process) on a pseudo-terminal that the
gateway polls as its serial port, with one configured address where no meter answers. The
demo subscribes to `streetgrid/#` like any consumer and prints one line per uplink or Modbus
poll it receives (sim/demo_view.py), then a summary that compares what the devices sent, what
the air delivered and what arrived at MQTT, with the gateway's counters.

The city runs on virtual time (its readings carry the virtual date), the Modbus bus on real
time (a serial line cannot be accelerated; its polls carry today's date).

Ctrl-C (or SIGTERM) stops the city, lets the gateway flush, stops it with SIGTERM, stops the
broker and prints the summary; a second Ctrl-C skips the flush. Children run in their own
process groups, so the terminal's Ctrl-C reaches only the demo, which stops them in order.
"""

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import sim.broker
import sim.mpvm
from sim import demo_view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY_ID = "gw-1"
SITE = "block-a"

DEFAULTS = {"poles": 6, "forwarders": 2, "duration": 3 * 3600.0, "speed": 300.0,
            "report_interval_s": 600, "seed": 1, "meters": 2, "bus_meters": 3}
BUS = "rs485-1"
BUS_BAUD = 19200
BUS_POLL_S = 5.0
BUS_POINTS = ("voltage_l1", "voltage_l2", "voltage_l3", "power", "frequency",
              "energy_import_wh", "energy_export_wh")
EPOCH_S = 1774069200  # virtual start: 2026-03-21 05:00 UTC, an hour before sunrise (lamps go off)
# (virtual seconds from the start, pole index, incident, value): alarms show up in the feed
INCIDENTS = ((40 * 60, 2, "door", True), (55 * 60, 2, "door", False),
             (90 * 60, 4, "tilt", 12.0))


class DemoError(RuntimeError):
    """Something the demo depends on failed; the message says what and where its log is."""


class Printer:
    """Serialises output lines from the MQTT thread and the main thread."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, line=""):
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


class LiveReadings:
    """The demo's MQTT subscriber: decodes each batch and prints one line per uplink."""

    def __init__(self, broker, names, printer):
        import paho.mqtt.client as mqtt

        self.names = names
        self.printer = printer
        self.batches = 0
        self.uplinks = 0
        self.seen = set()  # (DevEUI, fcnt) / (bus.address, time): the gateway delivers at least once
        self.repeats = 0
        self.polls = 0  # Modbus polls (counted apart from uplinks)
        self.bad = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id="streetgrid-demo-%d" % os.getpid(),
                                   protocol=mqtt.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._broker = broker

    def start(self, timeout=10.0):
        try:
            self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        except OSError as exc:
            raise DemoError("cannot connect to the MQTT broker at %s: %s"
                            % (self._broker.url, exc)) from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise DemoError("no SUBACK from the broker at %s" % self._broker.url)
        return self

    def stop(self):
        self._client.loop_stop()
        self._client.disconnect()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe("streetgrid/#", qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            ups = demo_view.uplinks(msg.payload)
        except ValueError as exc:
            self.bad += 1
            self.printer("  ! %s: not a readings batch (%s)" % (msg.topic, exc))
            return
        self.batches += 1
        for up in ups:
            poll = bool(up["modbus"])
            key = (up["eui"], up["t"] if poll else up["lora"].get("fcnt"))
            if key in self.seen:
                self.repeats += 1
                continue
            self.seen.add(key)
            if poll:
                self.polls += 1
            else:
                self.uplinks += 1
            self.printer(demo_view.format_uplink(up, self.names))


class Gateway:
    """`python -m gateway run` as a child process with its own config, data dir and log.

    udp_port 0 lets the gateway pick a free port (the ready file says which); a fixed one lets
    a restarted gateway come back where the forwarders' sockets point. max_batch_age_s: how
    long a partial batch waits before it is published."""

    def __init__(self, workdir, registry, mqtt_url, region="EU868", stats_interval_s=5,
                 udp_port=0, max_batch_age_s=0.5, extra_toml=""):
        self.workdir = workdir
        self.udp_port = int(udp_port)
        self.config = os.path.join(workdir, "gateway.toml")
        self.ready = os.path.join(workdir, "gateway.ready.json")
        self.log = os.path.join(workdir, "gateway.log")
        self.data_dir = os.path.join(workdir, "var", GATEWAY_ID)
        with open(self.config, "w") as f:
            f.write('[gateway]\nid = "%s"\nsite = "%s"\nregion = "%s"\ndata_dir = "var/%s"\n'
                    'registry = "%s"\n\n[udp]\nhost = "127.0.0.1"\nport = %d\n\n'
                    '[mqtt]\nurl = "%s"\nmax_batch_age_s = %r\n\n'
                    '[log]\nlevel = "INFO"\nstats_interval_s = %d\n'
                    % (GATEWAY_ID, SITE, region, GATEWAY_ID, os.path.basename(registry),
                       self.udp_port, mqtt_url, float(max_batch_age_s), stats_interval_s))
            # the status page on a free port: the demo says which
            f.write('\n[commands]\nkey_file = "command.key"\n\n[http]\nlisten = "127.0.0.1:0"\n')
            f.write(extra_toml)
        # the key operators sign commands with (gateway/commands/auth.py), new for each run
        self.command_key = secrets.token_bytes(32)
        key_path = os.path.join(workdir, "command.key")
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.command_key.hex() + "\n")
        self.proc = None
        self.addr = None
        self.http_port = None

    def start(self, timeout=30.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", self.config,
             "--ready-file", self.ready],
            cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError("the gateway exited with status %d:\n%s"
                                % (self.proc.returncode, self.log_tail()))
            try:
                with open(self.ready) as f:
                    info = json.load(f)
                if int(info["pid"]) != self.proc.pid:
                    raise ValueError("a ready file left by an earlier gateway process")
                self.addr = (info["udp_host"], int(info["udp_port"]))
                self.http_port = info.get("http_port")
                return self
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise DemoError("the gateway did not get ready in %.0f s:\n%s" % (timeout, self.log_tail()))

    def stats(self):
        """The gateway's last stats.json snapshot ({} if none yet)."""
        try:
            with open(os.path.join(self.data_dir, "stats.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stop(self, timeout=20.0):
        """SIGTERM (the gateway's clean shutdown writes a final stats.json); exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no gateway log)"


class MeterBus:
    """An RS-485 bus for the gateway: a pty pair (sim.rs485.PtyLink), emulated meters on one
    end (`python -m sim meter`, one process, the meter firmware on one line model), the
    gateway's serial port on the other, and one more configured address where nobody answers
    (a dead meter: it costs the bus only its timeout, then is skipped with back-off)."""

    def __init__(self, workdir, n_meters, baud=BUS_BAUD):
        from sim.rs485 import PtyLink

        self.addresses = tuple(range(1, n_meters + 1))
        self.dead = n_meters + 1
        self.baud = baud
        self.link = PtyLink(2)
        self.port = self.link.paths[0]
        self.log = os.path.join(workdir, "meters.log")
        self.proc = None

    def toml(self):
        points = ", ".join('"%s"' % p for p in BUS_POINTS)
        out = ['', '[[modbus.bus]]', 'name = "%s"' % BUS, 'kind = "rtu"',
               'port = "%s"' % self.port, 'baudrate = %d' % self.baud,
               'poll_interval_s = %r' % BUS_POLL_S, 'timeout_s = 0.2', 'retries = 1',
               'backoff_min_s = 5.0', 'backoff_max_s = 30.0']
        for a in self.addresses + (self.dead,):
            out += ['  [[modbus.bus.meter]]', '  address = %d' % a, '  points = [%s]' % points]
        return "\n".join(out) + "\n"

    def start(self, timeout=30.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        self._logf = open(self.log, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "meter", "--serial", self.link.paths[1],
             "--address", ",".join(str(a) for a in self.addresses), "--baud", str(self.baud),
             "--energy-step-wh", "1"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._logf.seek(0)
            if self._logf.read().count(" on %s at " % self.link.paths[1]) >= len(self.addresses):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self._logf.seek(0)
        raise DemoError("the emulated meters did not start:\n%s" % self._logf.read()[-2000:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._logf.close()
        self.link.close()


def board_factory(vm_poles, epoch_s, seed):
    """The City's board factory: the first vm_poles poles on the MicroPython VM, the rest
    LocalBoard (firmware on CPython)."""
    from sim.board import LocalBoard
    from sim.vmboard import VMBoard

    def factory(name, dev_eui, cfg, x, y):
        if len(factory.made) < vm_poles:
            b = VMBoard(name, dev_eui, cfg, x=x, y=y, seed=seed, epoch_s=epoch_s)
        else:
            b = LocalBoard(name, dev_eui, cfg, x=x, y=y, seed=seed, epoch_s=epoch_s)
        factory.made.append(b)
        return b

    factory.made = []  # so a City that fails half-built does not leave VM processes behind
    return factory


class Demo:
    def __init__(self, poles=6, forwarders=2, duration=3 * 3600.0, broker=None, speed=300.0,
                 vm_poles=None, seed=1, report_interval_s=600, workdir=None, out=None,
                 meters=2, bus_meters=3):
        self.n_poles = poles
        self.n_meters = meters
        self.n_bus_meters = bus_meters
        self.n_forwarders = forwarders
        self.duration = float(duration)
        self.broker_url = broker
        self.speed = speed
        self.vm_poles = (1 if sim.mpvm.available() else 0) if vm_poles is None else vm_poles
        self.seed = seed
        self.report_interval_s = report_interval_s
        self.keep = workdir is not None
        self.workdir = workdir
        self.say = Printer(out or sys.stdout)
        self.stopping = False
        self.hurry = False
        self.city = self.gateway = self.broker = self.live = self.bus = None

    # ---- signals -------------------------------------------------------------------------

    def _on_signal(self):
        if self.stopping:
            self.hurry = True
            return
        self.stopping = True
        self.say("\n-- stopping (Ctrl-C again to skip waiting for the last readings)")

    # ---- run -----------------------------------------------------------------------------

    def run(self):
        """Exit status: 0 when readings flowed end to end (or the user stopped the demo), 1 when
        a part failed."""
        try:
            return asyncio.run(self._main())
        except (DemoError, sim.broker.BrokerError) as exc:
            self.say("demo: %s" % exc)
            return 1

    async def _main(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="streetgrid-demo-")
        os.makedirs(self.workdir, exist_ok=True)
        t0 = time.monotonic()
        try:
            self._build_city()
            await self._start_services()
            virtual = await self._run_city()
            await self._drain()
            return self._finish(virtual, time.monotonic() - t0)
        finally:
            await self._teardown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _build_city(self):
        from sim.city import City

        # LocalBoard imports the firmware from this source tree (it is deployed to boards, not
        # installed as a Python package), so the demo works from any working directory.
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)

        if self.vm_poles and not sim.mpvm.available():
            raise DemoError("--vm-poles needs node and the MicroPython npm package (npm ci)")
        cfg = {"report_interval_s": self.report_interval_s}
        factory = board_factory(self.vm_poles, EPOCH_S, self.seed)
        try:
            self.city = City(self.n_poles, self.n_forwarders, ("127.0.0.1", 9), seed=self.seed,
                             speed=self.speed, site=SITE, cfg=cfg, barriers="expected",
                             jump_idle=False,  # a steady pace: readings arrive as a live feed
                             epoch_s=EPOCH_S, board_factory=factory, n_meters=self.n_meters,
                             meter_cfg={"report_interval_s": self.report_interval_s})
        except BaseException as exc:
            for b in factory.made:
                b.close()
            if isinstance(exc, ValueError):  # e.g. a pole out of every forwarder's range
                raise DemoError(str(exc)) from None
            raise
        poles = [b for b in self.city.boards if b.cfg.get("kind", "pole") == "pole"]
        for at_s, index, kind, value in INCIDENTS:
            if index < len(poles):
                getattr(self.city, kind)(at_s, poles[index].name, value)
        self.names = {}
        for i, b in enumerate(self.city.boards):
            self.names[b.dev_eui.upper()] = b.name + ("*" if i < self.vm_poles else "")
        for j, f in enumerate(self.city.forwarders):
            self.names[f.eui_hex.upper()] = "fwd-%d" % (j + 1)
        for a in range(1, self.n_bus_meters + 2):
            self.names["%s.%d" % (BUS.upper(), a)] = "%s.%d" % (BUS, a)

    async def _start_services(self):
        registry = self.city.write_registry(os.path.join(self.workdir, "devices.toml"))
        self.broker = sim.broker.choose(self.broker_url)
        self.broker.start()
        self.say("streetgrid demo: %d poles (%d on the MicroPython VM, marked *), %d LoRaWAN "
                 "meters, %d forwarders, %.1f virtual hours at %gx" % (
                     self.n_poles, self.vm_poles, self.n_meters, self.n_forwarders,
                     self.duration / 3600.0, self.speed))
        extra = ""
        if self.n_bus_meters:
            self.bus = MeterBus(self.workdir, self.n_bus_meters)
            await asyncio.get_running_loop().run_in_executor(None, self.bus.start)
            extra = self.bus.toml()
            self.say("modbus: %d meters on %s at %d baud (real time, polled every %g s), "
                     "address %d configured with no meter there" % (
                         self.n_bus_meters, BUS, self.bus.baud, BUS_POLL_S, self.bus.dead))
        self.say("broker: %s (%s); work dir %s" % (self.broker.url, self.broker.kind,
                                                    self.workdir))
        self.live = LiveReadings(self.broker, self.names, self.say).start()
        self.gateway = Gateway(self.workdir, registry, self.broker.url, extra_toml=extra)
        await asyncio.get_running_loop().run_in_executor(None, self.gateway.start)
        self.say("gateway: pid %d, GWMP on %s:%d, log %s" % (
            (self.gateway.proc.pid,) + self.gateway.addr + (self.gateway.log,)))
        if self.gateway.http_port:
            self.say("status page: http://127.0.0.1:%d/ (live while the demo runs)"
                     % self.gateway.http_port)
        self.city.gateway_addr = self.gateway.addr  # known only now that the gateway serves
        self.say("")

    async def _run_city(self, chunk_s=60.0):
        city = self.city
        start = city.clock.now_us / 1e6
        while not self.stopping:
            done = city.clock.now_us / 1e6 - start
            if done >= self.duration:
                break
            await city.run(min(chunk_s, self.duration - done))
            if self.gateway.proc.poll() is not None:
                raise DemoError("the gateway stopped (status %s):\n%s"
                                % (self.gateway.proc.returncode, self.gateway.log_tail()))
        return city.clock.now_us / 1e6 - start

    def _distinct_delivered(self):
        """Data frames some forwarder pushed intact, a retransmission (same DevEUI and FCnt)
        counted once: what the gateway must publish exactly once."""
        return len(set((u["dev_eui"], u["fcnt"]) for u in self.city.delivered()))

    async def _drain(self, timeout=10.0):
        """Wait until every data uplink the forwarders pushed, and the bus's first poll cycle,
        have come back over MQTT."""
        want = self._distinct_delivered()
        polls = len(self.bus.addresses) if self.bus is not None else 0  # at least a first cycle
        deadline = time.monotonic() + timeout
        while not self.hurry and (self.live.uplinks < want or self.live.polls < polls) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def _finish(self, virtual_s, real_s):
        city = self.city
        uplinks = city.uplinks
        joins = sum(1 for u in uplinks if u["mtype"] == 0)
        data = [u for u in uplinks if u["mtype"] in (2, 4)]
        delivered = city.delivered()
        distinct = self._distinct_delivered()
        copies = sum(len(u["received"]) for u in uplinks)
        status = self.gateway.stop()
        gw = self.gateway.stats()
        fs, up = gw.get("forwarder_server", {}), gw.get("uplink", {})
        dd, pub = gw.get("dedup", {}), gw.get("publisher", {})
        rejected = dict((k, v) for k, v in up.items() if k not in ("accepted", "join") and v)
        say = self.say
        say("")
        say("summary: %.2f virtual hours in %.1f s of real time%s" % (
            virtual_s / 3600.0, real_s, " (stopped early)" if self.stopping else ""))
        say("  uplinks sent by the devices    %5d  (%d join-requests, %d data frames)"
            % (len(uplinks), joins, len(data)))
        say("  data frames delivered          %5d  (heard intact by at least one forwarder; "
            "%d of them retransmissions)" % (len(delivered), len(delivered) - distinct))
        say("  copies pushed to the gateway   %5d  (duplicates removed by the gateway: %d)"
            % (copies, dd.get("merged", 0) + dd.get("late", 0)))
        air = city.air.counters
        say("  downlinks (join-accepts, acks) %5d  sent by the gateway (RX1 %d, RX2 %d, "
            "failed %d), %d received by the devices" % (
                fs.get("downlink-rx1", 0) + fs.get("downlink-rx2", 0), fs.get("downlink-rx1", 0),
                fs.get("downlink-rx2", 0), fs.get("downlink-failed", 0),
                air.get("downlinks_delivered", 0)))
        say("  received at MQTT               %5d  uplinks in %d batches%s" % (
            self.live.uplinks, self.live.batches,
            (", %d repeats ignored" % self.live.repeats) if self.live.repeats else ""))
        say("  gateway: joins accepted %d, uplinks accepted %d, rejected %s, batches "
            "published %d, records acked %d, exit status %s" % (
                fs.get("joins-accepted", 0), up.get("accepted", 0),
                json.dumps(rejected, sort_keys=True) if rejected else "none",
                pub.get("published", 0), pub.get("acked_records", 0), status))
        if self.bus is not None:
            meters = gw.get("modbus", {}).get(BUS, {}).get("meters", {})
            polled = sum(meters.get(str(a), {}).get("polls", 0) for a in self.bus.addresses)
            dead = meters.get(str(self.bus.dead), {})
            say("  modbus polls at MQTT           %5d  of %d the gateway stored from %d meters on %s "
                "(%d records still queued for the next start); address %d (no meter): %d "
                "timeouts, %d polls" % (
                    self.live.polls, polled, len(self.bus.addresses), BUS,
                    gw.get("queue", {}).get("records", 0), self.bus.dead,
                    dead.get("timeouts", 0), dead.get("polls", 0)))
        vm = [b for b in city.boards if hasattr(b, "heap")]
        for b in vm:
            try:
                h = b.heap()
                say("  %s on the MicroPython VM: heap %.0f KB in use, %d crashes"
                    % (b.name, h["alloc"] / 1024.0, b.counters.get("crashes", 0)))
            except Exception as exc:  # the summary must not fail on a dead VM
                say("  %s on the MicroPython VM: %s" % (b.name, exc))
        if self.keep:
            say("  work dir kept: %s" % self.workdir)
        if self.live.uplinks < distinct:
            say("  %d delivered frames did not reach MQTT (see %s)"
                % (distinct - self.live.uplinks, self.gateway.log))
        if self.live.uplinks == 0 and not self.stopping:
            say("demo: no reading reached MQTT; gateway log:\n%s" % self.gateway.log_tail())
            return 1
        return 0

    async def _teardown(self):
        if self.city is not None:
            try:
                await self.city.close()
            except Exception as exc:
                self.say("demo: closing the city: %s" % exc)
        if self.gateway is not None:
            self.gateway.stop()
        if self.bus is not None:
            self.bus.stop()
        if self.live is not None:
            self.live.stop()
        if self.broker is not None:
            self.broker.stop()
        if not self.keep and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

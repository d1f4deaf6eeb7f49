"""The hardware-in-the-loop test rig: a real mosquitto, the real gateway process,
an MQTT subscriber, a recorder of what each pole reported, and a UDP socket posing as a packet
forwarder. The building blocks are the demo's (sim.demo.Gateway, tests/gateway/mosquitto.py);
what is added here is only what a test needs on top: a fixed UDP port (a restarted gateway
must be reachable at the same address, the forwarders' sockets are connected to it), SIGKILL,
a subscriber that keeps every message with its arrival time, and recorders on the City's and
the forwarders' public hooks (City.observers, Forwarder.on_push).
"""

import asyncio
import os
import signal
import socket
import threading
import time

import paho.mqtt.client as mqtt

import sim.demo
from gateway.backhaul.batch import decode_batch
from gateway.lorawan.sessions import SessionStore
from protocol import gwmp
from tests.gateway.mosquitto import MOSQUITTO, Mosquitto

__all__ = ["MOSQUITTO", "Broker", "HilGateway", "Readings", "ReportRecorder", "MeterReports",
           "PushLog",
           "FakeForwarder", "wait_for", "free_udp_port", "run_city", "dev_eui_of"]


def wait_for(cond, timeout, what, interval=0.05):
    """Poll cond() until it is truthy (returns it) or fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_eui_of(record):
    """DevEUI (upper-case hex) from a first record's bn "urn:dev:eui64:<hex>:"."""
    bn = record[-2]
    assert bn.startswith("urn:dev:eui64:") and bn.endswith(":"), bn
    return bn[len("urn:dev:eui64:"):-1].upper()


class Broker(Mosquitto):
    """The tests' mosquitto with persistence on, so a consumer's persistent session
    (clean_session=False, QoS 1 subscription) survives a broker restart: what the gateway
    publishes after the restart is kept for the test's subscriber even when the gateway
    reconnects first. restart() brings it back on the same port."""

    def __init__(self, tmpdir, port=None):
        super().__init__(tmpdir, port, persistence=True)
        self.tmpdir = str(tmpdir)

    def restart(self):
        self.stop()
        return self.start()


class HilGateway(sim.demo.Gateway):
    """The demo's gateway process on a fixed UDP port (a restarted gateway must come back
    where the forwarders' sockets point), with SIGKILL, restart and one log per run."""

    def __init__(self, workdir, registry, mqtt_url, udp_port=None, stats_interval_s=1,
                 max_batch_age_s=0.5):
        super().__init__(workdir, registry, mqtt_url, stats_interval_s=stats_interval_s,
                         udp_port=udp_port or free_udp_port(), max_batch_age_s=max_batch_age_s)
        self.starts = 0
        self.logs = []

    def start(self, timeout=30.0):
        self.starts += 1
        # each run keeps its own log (Gateway.start truncates self.log)
        self.log = os.path.join(self.workdir, "gateway-%d.log" % self.starts)
        self.logs.append(self.log)
        super().start(timeout)
        assert self.addr == ("127.0.0.1", self.udp_port), self.addr
        return self

    def kill(self):
        """SIGKILL: no shutdown code runs. The stale ready file is removed so start() waits for
        the new process's own."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._logf.close()
        try:
            os.unlink(self.ready)
        except OSError:
            pass
        return self.proc.returncode

    def session(self, dev_eui):
        """The gateway's session for dev_eui (hex), read from its own store while it runs:
        gateway.lorawan.sessions.SessionStore on <data_dir>/sessions.db. The file is in WAL mode, so
        this second connection reads the committed state beside the gateway's writer (the
        store is only read here, then closed)."""
        with SessionStore(os.path.join(self.data_dir, "sessions.db")) as store:
            return store.get_by_dev_eui(bytes.fromhex(dev_eui))

    def stats_after(self, cond, timeout=15.0, what="gateway stats"):
        """Wait for a stats.json snapshot for which cond(stats) holds; return it."""
        return wait_for(lambda: (lambda s: s if s and cond(s) else None)(self.stats()),
                        timeout, what)

    def fresh_stats(self, timeout=15.0):
        """The first stats.json snapshot written after this call (counts everything the
        gateway did before it)."""
        now = time.time()
        return self.stats_after(lambda s: s.get("time", 0) > now, timeout, "a fresh stats.json")

    def all_logs(self):
        out = []
        for p in self.logs:
            try:
                with open(p, errors="replace") as f:
                    out.append(f.read())
            except OSError:
                pass
        return "\n".join(out)


class Readings:
    """A paho subscriber (streetgrid/# unless told another topic filter) that keeps every
    batch with its arrival time.

    uplinks(): one entry per uplink record group (a record carrying "lora" starts one):
    {"eui", "fcnt", "lora", "records", "topic", "seq", "at"}.
    """

    def __init__(self, port, client_id="hil-readings", topic="streetgrid/#"):
        self.topic = topic
        self.msgs = []  # (monotonic arrival, topic, decoded batch)
        self.bad = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1.0)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self._subscribed.wait(10), "no SUBACK from mosquitto"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connects += 1
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            b = decode_batch(msg.payload)
        except ValueError as exc:
            with self._lock:
                self.bad.append((msg.topic, repr(exc)))
            return
        with self._lock:
            self.msgs.append((time.monotonic(), msg.topic, b))

    def uplinks(self, since=None, until=None):
        out = []
        with self._lock:
            msgs = list(self.msgs)
        for at, topic, b in msgs:
            if (since is not None and at < since) or (until is not None and at > until):
                continue
            for r in b["records"]:
                if "lora" in r:
                    out.append({"eui": dev_eui_of(r), "fcnt": r["lora"]["fcnt"],
                                "lora": r["lora"], "records": [], "topic": topic,
                                "seq": b["seq"], "gateway_id": b["gateway_id"], "at": at})
                assert out, "a batch starts with a record without radio metadata"
                out[-1]["records"].append(r)
        return out

    def keys(self, **kw):
        return [(u["eui"], u["fcnt"]) for u in self.uplinks(**kw)]

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


class ReportRecorder:
    """Every report the poles' firmware made, in order, with the virtual ms it was made at.

    A City observer (run after every board poll), so it sees each report right after the poll
    that produced it, for LocalBoard (app attributes) and VMBoard (one eval round trip inside
    the VM) alike.
    """

    def __init__(self, city):
        self.city = city
        self.reports = {b.name: [] for b in city.boards}  # name -> [(now_ms, fields)]
        self._last = {}  # name -> (boot count, reports count)
        city.observers.append(self._look)

    def _look(self, board, now_ms):
        if hasattr(board, "eval"):  # VMBoard: the app lives in the VM
            got = board.eval("None if app is None else (app.reports, app.last_report)")
            if got is None:
                return
            n, f = got
        else:
            app = board.app
            if app is None:
                return
            n, f = app.reports, app.last_report
        key = (board.counters["boots"], n)
        if self._last.get(board.name, (None, 0)) != key and n > 0:
            self.reports[board.name].append((now_ms, dict(f)))
        self._last[board.name] = key


class MeterReports:
    """Every report each LoRaWAN meter's firmware made, with the virtual ms and the board's
    physical truth (board.truth(): energy that really flowed, power, voltage) at the poll
    that made it: name -> [(now_ms, fields, truth)]. A City observer, like ReportRecorder
    (LocalBoard and VMBoard alike)."""

    def __init__(self, city):
        self.reports = {b.name: [] for b in city.boards if getattr(b, "kind", "") == "meter"}
        self._last = {}
        city.observers.append(self._look)

    def _look(self, board, now_ms):
        if board.name not in self.reports:
            return
        if hasattr(board, "eval"):  # VMBoard: one round trip into the VM
            got = board.eval("None if app is None else (app.reports, app.last_report, "
                             "board.hardware.truth())")
            if got is None:
                return
            n, f, truth = got
        else:
            if board.app is None:
                return
            n, f, truth = board.app.reports, board.app.last_report, None
        key = (board.counters["boots"], n)
        if self._last.get(board.name, (None, 0)) != key and n > 0:
            self.reports[board.name].append((now_ms, dict(f), truth or board.truth()))
        self._last[board.name] = key


class PushLog:
    """Every PUSH_DATA the city's forwarders send, with the real (monotonic) time it left:
    (time, forwarder EUI, datagram bytes, [rxpk]). A test uses it to know which frames reached
    the gateway before or after an instant, and to replay a captured datagram byte for byte."""

    def __init__(self, city):
        self.pushes = []
        for fwd in city.forwarders:
            fwd.on_push = self._recorder(fwd.eui_hex)

    def _recorder(self, eui_hex):
        def on_push(datagram, rxpks):
            if rxpks:
                self.pushes.append((time.monotonic(), eui_hex, datagram, rxpks))
        return on_push

    def times(self, phy):
        """(first, last) real time a copy of this PHYPayload was pushed, or None."""
        ts = [t for t, _, _, rxpk in self.pushes for r in rxpk if r.data == phy]
        return (min(ts), max(ts)) if ts else None

    def forwarders_of(self, phy):
        """The forwarders (EUI hex) whose PUSH_DATA carried this PHYPayload, one entry per push,
        in the order they left: the order the gateway's one UDP socket gets them in (loopback
        delivers each datagram inside sendto)."""
        return [eui for _, eui, _, rxpk in self.pushes for r in rxpk if r.data == phy]

    def datagram_with(self, phy):
        """A captured PUSH_DATA whose only rxpk is this frame: (time, datagram)."""
        for t, _, dgram, rxpk in self.pushes:
            if len(rxpk) == 1 and rxpk[0].data == phy:
                return t, dgram
        return None


class FakeForwarder:
    """A UDP socket posing as a packet forwarder (its own gateway EUI): sends PUSH_DATA and
    collects the PUSH_ACKs, so a test can inject captured or forged frames."""

    def __init__(self, gateway_addr, eui_hex="DEADBEEF0000A77C"):
        self.eui_hex = eui_hex
        self.eui = bytes.fromhex(eui_hex)
        self.addr = tuple(gateway_addr)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.token = 0x4000

    def push(self, rxpks):
        """PUSH_DATA with these rxpk; returns once the gateway's PUSH_ACK came back."""
        self.token += 1
        self.sock.sendto(gwmp.PushData(self.token, self.eui, list(rxpks)).encode(), self.addr)
        return self._ack(self.token)

    def resend(self, datagram):
        """A captured datagram, byte for byte (token included)."""
        self.sock.sendto(datagram, self.addr)
        return self._ack(int.from_bytes(datagram[1:3], "big"))

    def _ack(self, token):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            msg = gwmp.decode(data)
            if isinstance(msg, gwmp.PushAck) and msg.token == token:
                return True
        raise AssertionError("no PUSH_ACK for token %d" % token)

    def close(self):
        self.sock.close()


class CityUnderTest:
    """A real mosquitto, a subscriber, a City and the real gateway process in front of it: the
    parts every HIL city test starts the same way. Subclasses build their City, then attach()."""

    def __init__(self, workdir, **readings_kw):
        self.workdir = str(workdir)
        self.broker = Broker(workdir).start()
        self.readings = Readings(self.broker.port, **readings_kw)
        self.city = self.gateway = self.loop = None

    def attach(self, city):
        """Register the city's poles with a fresh gateway process and point the forwarders at it."""
        self.city = city
        registry = city.write_registry(os.path.join(self.workdir, "devices.toml"))
        self.gateway = HilGateway(self.workdir, registry, "mqtt://127.0.0.1:%d" % self.broker.port)
        self.gateway.start()
        city.gateway_addr = self.gateway.addr
        for f in city.forwarders:
            f.gateway_addr = self.gateway.addr
        self.loop = asyncio.new_event_loop()

    def run(self, virtual_s, timeout=120):
        run_city(self.loop, self.city, virtual_s, timeout)

    def close(self):
        try:
            if self.loop is not None:
                self.loop.run_until_complete(self.city.close())
        finally:
            if self.loop is not None:
                self.loop.close()
            if self.gateway is not None:
                self.gateway.stop()
            self.readings.stop()
            self.broker.stop()


def run_city(loop, city, virtual_s, timeout):
    """Run the city for virtual_s virtual seconds on loop (fails the test after timeout)."""
    loop.run_until_complete(asyncio.wait_for(city.run(virtual_s), timeout))


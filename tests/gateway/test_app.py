"""`python -m gateway run` as a real subprocess: real UDP forwarders on 127.0.0.1, a real
mosquitto, SIGKILL and restart.  The forwarders are hand-rolled from protocol.gwmp and the
frames built with real keys by protocol.lorawan.session, as a device would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from gateway.backhaul import batch
from gateway.commands.auth import sign
from gateway.lorawan.readings import parse_rxpk_time
from protocol import cbor, gwmp, payload
from protocol.lorawan import frame
from protocol.lorawan.session import build_data_frame, open_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys, open_join_accept
from tests.gateway.mosquitto import Mosquitto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NET_ID = 0x000013
KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
POLE = bytes.fromhex("70B3D57ED0001234")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")
GW_A = bytes.fromhex("AA555A0000000001")
GW_B = bytes.fromhex("AA555A0000000002")
FREQ = 868300000
DATR = "SF9BW125"
GW_ID, SITE = "gw-1", "block-a"
TOPIC = batch.topic(SITE, GW_ID)
COMMAND_KEY = bytes(range(32))  # written to command.key by write_setup: [commands] key_file


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Forwarder:
    """A packet forwarder's UDP side, as PROTOCOL.TXT describes it (one socket for up and down)."""

    def __init__(self, eui, port):
        self.eui = eui
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.token = 0
        self.pending = []  # datagrams received while waiting for something else

    def recv(self, kind, timeout=5.0):
        for i, m in enumerate(self.pending):
            if isinstance(m, kind):
                return self.pending.pop(i)
        self.sock.settimeout(timeout)
        while True:
            m = gwmp.decode(self.sock.recv(65535))
            if isinstance(m, kind):
                return m
            self.pending.append(m)

    def pull(self):
        self.token += 1
        self.sock.sendto(gwmp.PullData(self.token, self.eui).encode(), self.server)
        assert self.recv(gwmp.PullAck).token == self.token

    def push(self, phy, tmst, snr, rssi=-90, when=None):
        self.token += 1
        rx = gwmp.Rxpk(tmst, FREQ, DATR, phy, rssi, lsnr=snr, codr="4/5", time=when)
        self.sock.sendto(gwmp.PushData(self.token, self.eui, [rx]).encode(), self.server)
        assert self.recv(gwmp.PushAck).token == self.token

    def tx_ack(self, token, error=None):
        self.sock.sendto(gwmp.TxAck(token, self.eui, error).encode(), self.server)

    def no_pull_resp(self, wait=0.3):
        with pytest.raises(socket.timeout):
            self.recv(gwmp.PullResp, wait)

    def close(self):
        self.sock.close()


class Subscriber:
    def __init__(self, port):
        self.messages = []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-app-sub",
                             clean_session=True)
        self.c.reconnect_delay_set(0.05, 0.2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_disconnect = lambda *a: self.subscribed.clear()
        self.c.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(5)

    def uplinks(self):
        """Records grouped per uplink (a record with "lora" starts one): {fcnt: [records]}."""
        out, cur = {}, None
        for payload_ in list(self.messages):
            for r in batch.decode_batch(payload_)["records"]:
                if "lora" in r:
                    cur = out.setdefault(r["lora"]["fcnt"], [])
                cur.append(r)
        return out

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def write_setup(tmp_path, mqtt_port, **extra):
    (tmp_path / "devices.toml").write_text(f'''
[[device]]
name = "pole-1"
site = "{SITE}"
kind = "pole"
dev_eui = "{POLE.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY.hex()}"
''')
    (tmp_path / "command.key").write_text(COMMAND_KEY.hex() + "\n")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'''
[gateway]
id = "{GW_ID}"
site = "{SITE}"
region = "EU868"
net_id = {NET_ID}
data_dir = "var/gw"
registry = "devices.toml"
time_source = "forwarder"
[udp]
host = "127.0.0.1"
port = 0
[dedup]
window_ms = 300
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
max_batch_age_s = 0.05
[log]
level = "INFO"
stats_interval_s = 0.2
[http]
listen = "127.0.0.1:0"
[commands]
key_file = "command.key"
''' + extra.get("more", ""))
    return cfg


class Gateway:
    def __init__(self, tmp_path, cfg):
        self.ready = tmp_path / "ready.json"
        self.stats_path = tmp_path / "var" / "gw" / "stats.json"
        self.log = open(tmp_path / "gateway.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--ready-file",
             str(self.ready)], cwd=ROOT, stdout=self.log, stderr=self.log)
        info = wait_for(self._ready, 15, "the ready file")
        assert info["udp_host"] == "127.0.0.1" and info["pid"] == self.proc.pid
        self.port = info["udp_port"]

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}")
        try:
            return json.loads(self.ready.read_text())
        except (OSError, ValueError):
            return None

    def stats(self):
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return None

    def wait_stats(self, cond, what):
        return wait_for(lambda: (s := self.stats()) is not None and cond(s) and s, 10, what)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.log.close()
        return rc


def data_frame(keys, fcnt, fields=None, mtype=frame.UNCONFIRMED_UP, message="report", fport=None,
               body=None):
    dev_addr, nwk, app = keys
    port, enc = payload.encode_uplink("pole", message, fields or {})
    if fport is not None:
        port, enc = fport, body
    return build_data_frame(mtype, dev_addr, fcnt, port, enc, nwk, app)


def join(a, b, nonce=1):
    """Join through both forwarders; returns the device's (dev_addr, nwk, app)."""
    req = build_join_request(JOIN_EUI, POLE, nonce, KEY)
    a.push(req, 1000, snr=9.0)
    b.push(req, 5000, snr=2.0)
    resp = a.recv(gwmp.PullResp)
    tx = resp.txpk
    assert (tx.tmst, tx.freq_hz, tx.datr, tx.ipol) == (1000 + 5_000_000, FREQ, DATR, True)
    a.tx_ack(resp.token)
    ja = open_join_accept(tx.data, KEY)
    assert ja.mic_ok and ja.net_id == NET_ID and ja.dev_addr >> 25 == NET_ID & 0x7F
    nwk, app = derive_session_keys(KEY, ja.join_nonce, ja.net_id, nonce)
    return ja.dev_addr, nwk, app


T0 = "2026-11-28T06:00:00.250000123Z"


@pytest.fixture
def broker(tmp_path):
    m = Mosquitto(tmp_path).start()
    yield m
    m.stop()


def test_join_uplinks_ack_rejections_restart(tmp_path, broker):
    cfg = write_setup(tmp_path, broker.port)
    sub = Subscriber(broker.port)
    gw = Gateway(tmp_path, cfg)
    a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
    try:
        a.pull()
        b.pull()
        keys = join(a, b)
        b.no_pull_resp(0.05)

        # report heard by both forwarders: one uplink, both copies' metadata
        up0 = data_frame(keys, 0, {"dim_level": 40, "lamp_power": 61.5})
        a.push(up0, 2_000_000, snr=8.5, rssi=-97, when=T0)
        b.push(up0, 7_000_000, snr=-3.0, rssi=-118, when="2026-11-28T06:00:09Z")
        # a confirmed alarm gets an ACK in RX1 via the best forwarder (B this time)
        up1 = data_frame(keys, 1, {"alarms/door_open": True}, frame.CONFIRMED_UP, "alarm")
        a.push(up1, 3_000_000, snr=1.0)
        b.push(up1, 8_000_000, snr=6.0)
        resp = b.recv(gwmp.PullResp)
        tx = resp.txpk
        assert (tx.tmst, tx.freq_hz, tx.datr) == (8_000_000 + 1_000_000, FREQ, DATR)
        ack = open_data_frame(tx.data, keys[1], keys[2])
        f = ack.frame
        assert ack.mic_ok and f.mtype == frame.UNCONFIRMED_DOWN and f.ack and f.fport is None
        assert f.dev_addr == keys[0] and ack.fcnt == 0 and ack.payload == b""
        b.tx_ack(resp.token)
        a.no_pull_resp(0.05)

        # rejected: a replay of FCnt 0 (other bytes, good MIC), a forged MIC, an unknown port
        # (good MIC, so it is queued as hex), and garbage
        a.push(data_frame(keys, 0, {"dim_level": 99}), 4_000_000, snr=5.0)
        forged = bytearray(data_frame(keys, 5, {"dim_level": 1}))
        forged[-1] ^= 0x55
        a.push(bytes(forged), 4_100_000, snr=5.0)
        a.push(data_frame(keys, 2, fport=99, body=b"\x01\x02\x03"), 4_200_000, snr=5.0)
        a.sock.sendto(b"\x02\x00\x07\x00not a forwarder", a.server)

        s = gw.wait_stats(lambda s: s["uplink"]["payload-error"] == 1 and s["uplink"]["bad-mic"] == 1
                          and s["uplink"]["replay"] == 1 and s["forwarder_server"].get("downlink-rx1") == 2,
                          "the rejections in stats.json")
        fs = s["forwarder_server"]
        assert s["uplink"]["accepted"] == 2 and fs["joins-accepted"] == 1 and fs["acks"] == 1
        assert fs["uplink-replay"] == 1 and fs["uplink-bad-mic"] == 1 and fs["malformed"] == 1
        gw.log.flush()
        logged = (tmp_path / "gateway.log").read_text()
        for reason in ("replay", "bad-mic"):  # each rejected frame has its line, with its reason
            assert logged.count("uplink rejected (%s): DevAddr" % reason) == 1, logged
        assert set(s["forwarders"]) == {GW_A.hex().upper(), GW_B.hex().upper()}
        assert s["dedup"]["merged"] == 3  # second copies of the join, up0 and up1
        s = gw.wait_stats(lambda s: s["publisher"]["acked_records"] >= 3, "the publisher")
        assert s["queue"]["records"] == 0 and s["intake"]["queued"] == 3
        assert s["records"] == {"items": 3, "time_fallback": 2, "payload_errors": 1}

        ups = wait_for(lambda: (u := sub.uplinks()) and len(u) == 3 and u, 5, "three uplinks")
        first = ups[0][0]
        lora = first["lora"]
        assert first[-2] == f"urn:dev:eui64:{POLE.hex()}:" and first[-1] == 26
        assert first[-3] == pytest.approx(parse_rxpk_time(T0)) and lora["time_source"] == "forwarder"
        assert abs(first[-3] - 1795845600.25) < 1e-3
        assert (lora["fcnt"], lora["fport"], lora["datr"], lora["dr"], lora["freq"]) == (0, 10, DATR, 3, FREQ)
        assert lora["dev_addr"] == "%08X" % keys[0] and lora["confirmed"] is False
        assert lora["copies"] == [
            {"fwd": GW_A.hex().upper(), "rssi": -97, "snr": 8.5, "tmst": 2_000_000, "time": T0},
            {"fwd": GW_B.hex().upper(), "rssi": -118, "snr": -3.0, "tmst": 7_000_000,
             "time": "2026-11-28T06:00:09Z"}]
        values = {r[0]: r.get(2, r.get(4)) for r in ups[0]}
        assert values["dim_level"] == 40 and values["lamp_power"] == 61.5
        assert ups[1][0]["lora"]["confirmed"] is True and ups[1][0]["lora"]["time_source"] == "gateway"
        assert {r[0]: r.get(4) for r in ups[1]}["alarms/door_open"] is True
        err = ups[2][0]
        assert (err[0], err[3], err["lora"]["fport"]) == ("frm_payload", "010203", 99)
        assert "fPort 99" in err["lora"]["error"]

        # the same batches, saved back to back, through `python -m gateway decode-batch`
        saved = tmp_path / "saved.cbor"
        saved.write_bytes(b"".join(sub.messages))
        p = subprocess.run([sys.executable, "-m", "gateway", "decode-batch", str(saved)], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        recs = [r for line in p.stdout.splitlines() for r in json.loads(line)["records"]]
        firsts = [r for r in recs if "lora" in r]
        assert [r["lora"]["fcnt"] for r in firsts] == [0, 1, 2]
        assert firsts[0]["bt"] == first[-3] and firsts[0]["lora"]["copies"][0]["time"] == T0
        assert {"n": "lamp_power", "u": "W", "v": 61.5} in recs

        # broker down: readings are accepted into the durable queue only; then SIGKILL
        broker.stop()
        up3 = data_frame(keys, 3, {"dim_level": 70})
        a.push(up3, 9_000_000, snr=5.0, when=T0)
        gw.wait_stats(lambda s: s["intake"]["queued"] == 4 and s["queue"]["records"] == 1,
                      "the reading queued while the broker is down")
        gw.kill()
        assert gw.ready.exists()  # SIGKILL: nothing cleaned up

        broker.start()
        assert sub.subscribed.wait(5) or wait_for(sub.subscribed.is_set, 5, "resubscribe")
        gw.ready.unlink()
        gw = Gateway(tmp_path, cfg)
        a.close()
        b.close()
        a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
        a.pull()
        # the session survived: FCnt 4 accepted, a replay of FCnt 3 rejected, ACK FCntDown moves on
        a.push(data_frame(keys, 3, {"dim_level": 1}), 9_500_000, snr=5.0)
        a.push(data_frame(keys, 4, {"dim_level": 80}, frame.CONFIRMED_UP), 10_000_000, snr=5.0)
        resp = a.recv(gwmp.PullResp)
        ack = open_data_frame(resp.txpk.data, keys[1], keys[2])
        assert ack.mic_ok and ack.frame.ack and ack.fcnt == 1
        a.tx_ack(resp.token)
        gw.wait_stats(lambda s: s["uplink"]["replay"] == 1 and s["uplink"]["accepted"] == 1
                      and s["publisher"]["acked_records"] >= 1 and s["queue"]["records"] == 0,
                      "after the restart")
        ups = wait_for(lambda: (u := sub.uplinks()) and 3 in u and 4 in u and u, 5,
                       "FCnt 3 (queued before the kill) and 4")
        assert {r[0]: r.get(2) for r in ups[3]}["dim_level"] == 70
        assert {r[0]: r.get(2) for r in ups[4]}["dim_level"] == 80
        assert sorted(ups) == [0, 1, 2, 3, 4]

        assert gw.terminate() == 0
        assert not gw.ready.exists()
        final = json.loads(gw.stats_path.read_text())
        assert final["forwarder_server"]["downlink-rx1"] == 1
    finally:
        a.close()
        b.close()
        sub.stop()
        if gw.proc.poll() is None:
            gw.kill()


def test_bad_config_and_registry_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "x"\n[udp]\nport = "1700"\n')
    p = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "missing key 'site'" in p.stderr and "[udp] port = '1700'" in p.stderr
    assert "Traceback" not in p.stderr

    cfg = write_setup(tmp_path, 1)
    (tmp_path / "devices.toml").write_text('[[device]]\nname = "p"\n')
    p = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "device registry" in p.stderr and "missing field 'dev_eui'" in p.stderr
    assert "Traceback" not in p.stderr


def test_operator_command_over_mqtt_reaches_the_device(tmp_path, broker):
    cfg = write_setup(tmp_path, broker.port)
    gw = Gateway(tmp_path, cfg)
    a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-app-ops")
    try:
        a.pull()
        keys = join(a, b)
        gw.wait_stats(lambda s: s["commands"]["subscribed"], "the command subscription")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        topic = f"streetgrid/{SITE}/{GW_ID}/commands"
        dim = sign({"id": "op-1", "dev_eui": POLE.hex(), "command": "dim",
                    "fields": {"seq": 9, "level": 25}}, COMMAND_KEY)
        for body in (b"not json", json.dumps(dim).encode()):
            pub.publish(topic, body, qos=1).wait_for_publish(5)
        gw.wait_stats(lambda s: s["commands"]["accepted"] == 1 and s["commands"]["rejected"] == 1
                      and s["commands"]["waiting"] == 1, "the commands")
        a.push(data_frame(keys, 0), 50_000, snr=5.0)
        resp = a.recv(gwmp.PullResp)
        o = open_data_frame(resp.txpk.data, keys[1], keys[2])
        assert o.mic_ok and payload.decode_downlink(o.frame.fport, o.payload)["fields"]["level"] == 25
        a.tx_ack(resp.token)
        s = gw.wait_stats(lambda s: s["commands"]["sent"] == 1, "the command sent")
        assert s["commands"]["waiting"] == 0 and s["forwarder_server"]["downlink-rx1"] == 2
        assert gw.terminate() == 0
    finally:
        pub.disconnect()
        pub.loop_stop()
        a.close()
        b.close()
        if gw.proc.poll() is None:
            gw.kill()


def test_starts_without_a_broker_and_sigint_shuts_down_cleanly(tmp_path):
    from tests.gateway.mosquitto import free_port
    cfg = write_setup(tmp_path, free_port())  # nothing listens there
    gw = Gateway(tmp_path, cfg)
    a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
    try:
        a.pull()
        keys = join(a, b)
        a.push(data_frame(keys, 0, {"dim_level": 5}), 10_000, snr=5.0)
        s = gw.wait_stats(lambda s: s["intake"]["queued"] == 1, "the queued reading")
        assert s["publisher"]["connected"] is False and s["queue"]["records"] == 1
        gw.proc.send_signal(signal.SIGINT)
        assert gw.proc.wait(10) == 0
        gw.log.close()
        assert not gw.ready.exists()
        final = json.loads(gw.stats_path.read_text())
        assert final["queue"]["records"] == 1  # unpublished data stays on disk
        log = (tmp_path / "gateway.log").read_text()
        assert "shutting down" in log and "Traceback" not in log
    finally:
        a.close()
        b.close()
        if gw.proc.poll() is None:
            gw.kill()


def test_service_process_freezes_startup_objects_and_makes_full_gc_rare():
    # in its own interpreter: the settings are process-wide (main() applies them once the stores
    # are loaded); a cycle made afterwards is still collected by a young collection
    code = (
        "import gc, sys\n"
        "from gateway import app\n"
        "loaded = [[i] for i in range(1000)]\n"
        "app._tune_gc()\n"
        "assert gc.get_threshold() == app.GC_THRESHOLDS and app.GC_THRESHOLDS[2] > 10\n"
        "assert gc.get_freeze_count() >= len(loaded)\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.b, b.a = b, a\n"
        "import weakref; ref = weakref.ref(a); del a, b\n"
        "gc.collect(0)\n"
        "assert ref() is None\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

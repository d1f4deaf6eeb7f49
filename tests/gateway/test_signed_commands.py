"""Commands are authorized and accounted for (#12), end to end: a real gateway process, a real
mosquitto, the commands topic and the command-results topic, a device answered through the
GWMP socket. What is refused is refused for its reason and never reaches the device; what is
accepted is reported accepted, sent, and acknowledged by the device, and survives a SIGKILL."""

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from gateway.commands.auth import sign
from protocol import gwmp, payload
from protocol.lorawan.session import open_data_frame
from tests.gateway.mosquitto import MOSQUITTO
from tests.gateway.test_app import broker  # noqa: F401 - the fixture
from tests.gateway.test_app import (COMMAND_KEY, GW_A, GW_B, GW_ID, POLE, SITE, Forwarder,
                                    Gateway, data_frame, join, wait_for, write_setup)

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

COMMANDS = f"streetgrid/{SITE}/{GW_ID}/commands"
RESULTS = f"streetgrid/{SITE}/{GW_ID}/command-results"


class Operator:
    """The application: publishes commands, collects results."""

    def __init__(self, port, persistent=False):
        self.results = []
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-operator",
                             clean_session=not persistent)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(RESULTS, qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = lambda c, u, m: self.results.append(json.loads(m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(5)

    def send(self, obj):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.c.publish(COMMANDS, body, qos=1).wait_for_publish(5)

    def of(self, cid):
        return [(r["status"], r.get("reason")) for r in list(self.results) if r["id"] == cid]

    def wait(self, cid, status, timeout=10):
        return wait_for(lambda: any(s == status for s, _ in self.of(cid)), timeout,
                        f"{cid} {status}")

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def dim(cid, seq, level, **kw):
    return sign({"id": cid, "dev_eui": POLE.hex(), "command": "dim",
                 "fields": {"seq": seq, "level": level}}, COMMAND_KEY, **kw)


class Rig:
    """A gateway process (test_app.write_setup: the command key configured), the operator on
    the broker, forwarder a (and b, for the join) and the pole joined through them."""

    def __init__(self, tmp_path, broker, ttl_s=None):
        cfg = write_setup(tmp_path, broker.port)
        if ttl_s is not None:
            cfg.write_text(cfg.read_text().replace(
                'key_file = "command.key"\n', 'key_file = "command.key"\nttl_s = %d\n' % ttl_s))
        self.tmp_path, self.cfg = tmp_path, cfg
        self.gw = Gateway(tmp_path, cfg)
        self.op = Operator(broker.port)
        self.a, self.b = Forwarder(GW_A, self.gw.port), Forwarder(GW_B, self.gw.port)
        self.a.pull()
        self.keys = join(self.a, self.b)
        self.gw.wait_stats(lambda s: s["commands"]["subscribed"], "the command subscription")

    def restart_after_sigkill(self):
        self.gw.kill()  # no clean shutdown
        for stale_file in (self.gw.ready, self.gw.stats_path):
            stale_file.unlink()
        self.gw = Gateway(self.tmp_path, self.cfg)
        self.a.server = ("127.0.0.1", self.gw.port)
        self.a.pull()

    def uplink(self, fcnt, fields=None, message="report", tmst=50_000):
        self.a.push(data_frame(self.keys, fcnt, fields, message=message), tmst, snr=5.0)

    def close(self):
        self.op.stop()
        self.a.close()
        self.b.close()
        if self.gw.proc.poll() is None:
            self.gw.kill()


@pytest.fixture
def rig(tmp_path, broker):
    r = Rig(tmp_path, broker)
    yield r
    r.close()


def downlink_of(fwd, keys):
    resp = fwd.recv(gwmp.PullResp)
    o = open_data_frame(resp.txpk.data, keys[1], keys[2])
    assert o.mic_ok
    return resp.token, o.frame.fport, payload.decode_downlink(o.frame.fport, o.payload)


def test_only_signed_fresh_commands_reach_the_device_and_each_outcome_is_published(rig):
    import time

    gw, op, a = rig.gw, rig.op, rig.a
    good = dim("op-good", 9, 25)
    forged = dict(dim("op-forged", 9, 100), fields={"seq": 9, "level": 0})
    other_key = sign({"id": "op-otherkey", "dev_eui": POLE.hex(), "command": "dim",
                      "fields": {"seq": 9, "level": 0}}, bytes(32))
    stale = dim("op-stale", 9, 0, now=time.time() - 3600)
    unsigned = {"id": "op-unsigned", "dev_eui": POLE.hex(), "command": "dim",
                "fields": {"seq": 9, "level": 0}}
    relay = {"id": "op-relay", "dev_eui": POLE.hex(), "fport": 70, "data": "010101"}
    for c in (good, forged, other_key, stale, unsigned, relay, b"{not json", good):
        op.send(c)  # the second `good` is a replay
    s = gw.wait_stats(lambda s: s["commands"]["accepted"] == 1
                      and s["commands"]["rejected"] == 7, "every command decided")
    assert s["commands"]["refused"] == {"bad-signature": 2, "stale": 1, "unsigned": 1,
                                        "relay-unsigned": 1, "invalid": 1, "replayed": 1}
    assert s["commands"]["waiting"] == 1
    op.wait("op-good", "accepted")
    for cid, reason in (("op-forged", "bad-signature"), ("op-otherkey", "bad-signature"),
                        ("op-stale", "stale"), ("op-unsigned", "unsigned"),
                        ("op-relay", "relay-unsigned")):
        op.wait(cid, "rejected")
        assert op.of(cid) == [("rejected", reason)], (cid, op.of(cid))
    assert ("rejected", "replayed") in op.of("op-good")

    # the device's next uplink carries the one good command, and only it
    rig.uplink(0)
    token, fport, cmd = downlink_of(a, rig.keys)
    assert (cmd["command"], cmd["fields"]["level"], cmd["fields"]["seq"]) == ("dim", 25, 9)
    a.no_pull_resp()
    a.tx_ack(token)
    op.wait("op-good", "sent")
    # the pole applies it and says so on its ack port, echoing fPort and seq
    rig.uplink(1, {"port": fport, "seq": 9, "result": "ok"}, "ack", 60_000)
    op.wait("op-good", "acknowledged")
    assert [st for st, _ in op.of("op-good")] == ["accepted", "rejected", "sent", "acknowledged"]
    s = gw.wait_stats(lambda s: s["commands"]["acknowledged"] == 1, "the ack counted")
    assert s["commands"]["awaiting_ack"] == 0 and s["commands"]["outbox"] == 0
    from tests.gateway.test_operator_http import get, samples
    m = samples(get(json.loads(gw.ready.read_text())["http_port"], "/metrics")[2])
    assert m[("streetgrid_commands_total", (("result", "acknowledged"),))] == 1
    assert m[("streetgrid_commands_total", (("result", "rejected"),))] == 7
    assert m[("streetgrid_commands_refused_total", (("reason", "bad-signature"),))] == 2
    assert gw.terminate() == 0


def test_a_device_that_refuses_a_command_reports_it_failed(rig):
    rig.op.send(dim("op-1", 3, 40))
    rig.op.wait("op-1", "accepted")
    rig.uplink(0)
    token, fport, _ = downlink_of(rig.a, rig.keys)
    rig.a.tx_ack(token)
    rig.op.wait("op-1", "sent")
    # an ack for another seq closes nothing; the right one with a refusal fails it
    rig.uplink(1, {"port": fport, "seq": 4, "result": "ok"}, "ack", 60_000)
    rig.uplink(2, {"port": fport, "seq": 3, "result": "bad_value"}, "ack", 70_000)
    rig.op.wait("op-1", "failed")
    assert rig.op.of("op-1") == [("accepted", None), ("sent", None), ("failed", "bad_value")]
    assert rig.gw.terminate() == 0


def test_accepted_commands_survive_a_sigkill_and_unsent_ones_expire(tmp_path, broker):
    rig = Rig(tmp_path, broker, ttl_s=6)
    op = rig.op
    try:
        first = dim("op-kept", 5, 60)
        op.send(first)
        op.wait("op-kept", "accepted")
        rig.restart_after_sigkill()
        s = rig.gw.wait_stats(lambda s: s["commands"]["subscribed"], "the restarted gateway")
        assert s["commands"]["waiting"] == 1  # from the ledger
        op.send(first)  # the same signed command again: its nonce is remembered on disk
        wait_for(lambda: ("rejected", "replayed") in op.of("op-kept"), 10, "the replay refused")
        rig.uplink(0)
        token, _, cmd = downlink_of(rig.a, rig.keys)
        assert cmd["fields"]["level"] == 60
        rig.a.tx_ack(token)
        op.wait("op-kept", "sent")

        op.send(dim("op-late", 6, 10))  # the device stays silent: it expires
        op.wait("op-late", "accepted")
        op.wait("op-late", "expired", timeout=15)
        assert op.of("op-late")[-1] == ("expired", "never sent: no uplink from the device")
        op.wait("op-kept", "expired", timeout=15)  # sent, but never acknowledged
        assert op.of("op-kept")[-1] == ("expired", "sent, but the device never acknowledged it")
        rig.gw.wait_stats(lambda s: s["commands"]["expired"] == 2
                          and s["commands"]["waiting"] == 0, "both expired")
        rig.uplink(1, tmst=60_000)
        rig.a.no_pull_resp()  # the expired command is not sent
        assert rig.gw.terminate() == 0
    finally:
        rig.close()


def test_results_wait_on_disk_through_a_broker_outage_and_a_sigkill(tmp_path):
    from tests.gateway.mosquitto import Mosquitto

    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    rig = Rig(tmp_path, broker)
    try:
        rig.op.stop()
        rig.op = Operator(broker.port, persistent=True)  # its subscription outlives the outage
        rig.op.send(dim("op-1", 1, 70))
        rig.op.wait("op-1", "accepted")
        rig.op.stop()
        broker.stop()
        rig.uplink(0)
        token, _, _ = downlink_of(rig.a, rig.keys)
        rig.a.tx_ack(token)  # "sent", with nowhere to publish it
        rig.gw.wait_stats(lambda s: s["commands"]["sent"] == 1 and s["commands"]["outbox"] == 1,
                          "the result held in the outbox")
        rig.restart_after_sigkill()  # the broker is still down
        rig.gw.wait_stats(lambda s: s["commands"]["outbox"] == 1, "the outbox after the restart")
        broker.start()
        wait_for(lambda: (s := rig.gw.stats()) and s["commands"]["outbox"] == 0, 30,
                 "the outbox emptied on PUBACK (after paho's reconnect back-off)")
        rig.op = Operator(broker.port, persistent=True)
        rig.op.wait("op-1", "sent", timeout=10)
        assert rig.gw.terminate() == 0
    finally:
        rig.close()
        broker.stop()

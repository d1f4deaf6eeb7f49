"""ChirpStack v4 as an uplink source (#13), end to end: a real gateway process takes events from
a real mosquitto standing in for ChirpStack's broker (protobuf from chirpstack-api's classes,
and JSON), and publishes our CBOR batches to another real mosquitto.  Duplicates are dropped by
deduplicationId, malformed events are counted by reason, and the gateway keeps running."""

import json
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from protocol import payload
from protocol.payload.senml import LABELS
from tests.gateway.mosquitto import MOSQUITTO, Mosquitto
from tests.gateway.test_app import POLE, Gateway, Subscriber, wait_for, write_setup
from tests.gateway.test_chirpstack_events import APP, documented_up, protobuf_up

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

NAMES = {v: k for k, v in LABELS.items()}
METER = "70b3d57ed0009999"  # not in the registry: its kind comes from its ChirpStack tag


def up_topic(eui, kind="up"):
    return f"application/{APP}/device/{eui}/event/{kind}"


@pytest.fixture
def brokers(tmp_path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "chirpstack").mkdir()
    ours, cs = Mosquitto(tmp_path / "ours").start(), Mosquitto(tmp_path / "chirpstack").start()
    yield ours, cs
    ours.stop()
    cs.stop()


def test_chirpstack_events_become_our_batches(tmp_path, brokers):
    ours, cs = brokers
    cfg = write_setup(tmp_path, ours.port, more=f'''
[chirpstack]
url = "mqtt://127.0.0.1:{cs.port}"
application_id = "{APP}"
''')
    sub = Subscriber(ours.port)
    gw = Gateway(tmp_path, cfg)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chirpstack")
    try:
        gw.wait_stats(lambda s: s["chirpstack"].get("subscribed"), "subscribed to ChirpStack")
        pub.connect("127.0.0.1", cs.port)
        pub.loop_start()
        port, body = payload.encode_uplink("pole", "report", {"dim_level": 40, "temperature": 21.5})
        pole_up = protobuf_up(body, port, eui=POLE.hex(), dedup="dedup-pole")
        mport, mbody = payload.encode_uplink("meter", "report", {})
        meter_up = documented_up(mbody, mport, "meter")
        meter_up["deviceInfo"]["devEui"] = METER
        meter_up["fCnt"] = 5
        for topic, raw in [
                (up_topic(POLE.hex()), pole_up),
                (up_topic(POLE.hex()), pole_up),  # ChirpStack's redelivery: dropped
                (up_topic(METER), json.dumps(meter_up).encode()),
                (up_topic(POLE.hex()), b"\x0a\xff\xff"),  # truncated protobuf
                (up_topic(METER), b'{"fCnt": 1}'),  # no deduplicationId
                (f"application/{APP}/device/nothex/event/up", b"{}"),
                (up_topic(POLE.hex(), "join"), b'{"deduplicationId": "j", "devAddr": "26011f3a"}')]:
            pub.publish(topic, raw, qos=1).wait_for_publish(5)
        s = gw.wait_stats(lambda s: s["chirpstack"]["items"] >= 2
                          and sum(s["chirpstack"]["refused"].values()) >= 2
                          and s["chirpstack"]["events"]["join"] == 1, "events taken")
        raw_up = wait_for(lambda: len(u := sub.uplinks()) >= 2 and u, 10, "two uplinks on MQTT")
        up = {fcnt: [{NAMES.get(k, k): v for k, v in r.items()} for r in recs]
              for fcnt, recs in raw_up.items()}
        pole = {r["n"]: r for r in up[70000]}
        assert pole["dim_level"]["v"] == 40 and pole["temperature"]["v"] == 21.5
        lora = up[70000][0]["lora"]
        assert lora["network"] == "chirpstack" and lora["dedup_id"] == "dedup-pole"
        assert [c["fwd"] for c in lora["copies"]] == ["AA555A0000000000", "AA555A0000000001"]
        assert up[70000][0]["bn"] == f"urn:dev:eui64:{POLE.hex()}:"
        assert up[5][0]["bn"] == f"urn:dev:eui64:{METER}:" and "error" not in up[5][0]["lora"]
        cs_stats = s["chirpstack"]
        assert cs_stats["duplicates"] == 1 and cs_stats["events"]["up"] == 3
        assert cs_stats["refused"] == {"bad-encoding": 1, "bad-field": 1, "bad-topic": 1}
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{json.loads(gw.ready.read_text())['http_port']}/metrics",
            timeout=5).read().decode()
        assert 'streetgrid_chirpstack_events_total{type="up"} 3.0' in metrics
        assert 'streetgrid_chirpstack_events_refused_total{reason="bad-encoding"} 1.0' in metrics
        assert "streetgrid_chirpstack_connected 1.0" in metrics
        assert gw.proc.poll() is None
        assert len(sub.uplinks()) == 2  # the duplicate never reached our broker

        # the gateway is down while ChirpStack publishes: its persistent session keeps the
        # event at ChirpStack's broker until the gateway is back
        assert gw.terminate() == 0
        log = (tmp_path / "gateway.log").read_text()
        assert "ChirpStack event refused" in log and "Traceback" not in log
        later = protobuf_up(body, port, eui=POLE.hex(), dedup="dedup-later", fcnt=71000)
        pub.publish(up_topic(POLE.hex()), later, qos=1).wait_for_publish(5)
        gw = Gateway(tmp_path, cfg)
        wait_for(lambda: 71000 in sub.uplinks(), 10, "the event published while it was down")
    finally:
        pub.loop_stop()
        sub.stop()
        if gw.proc.poll() is None:
            gw.terminate()


def test_a_signed_command_for_a_chirpstack_device_goes_out_on_command_down(tmp_path, brokers):
    """Accepted as for our own devices; handed to ChirpStack once the device was heard through
    it; ChirpStack's txack makes it "sent", the device's ack uplink "acknowledged"."""
    import base64
    import threading

    from tests.gateway.test_signed_commands import Operator, dim

    ours, cs = brokers
    cfg = write_setup(tmp_path, ours.port, more=f'''
[chirpstack]
url = "mqtt://127.0.0.1:{cs.port}"
''')
    gw = Gateway(tmp_path, cfg)
    op = Operator(ours.port)
    downs, ready = [], threading.Event()
    cs_app = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chirpstack")
    cs_app.on_connect = lambda c, u, f, rc, p: c.subscribe("application/+/device/+/command/down", 1)
    cs_app.on_subscribe = lambda *a: ready.set()
    cs_app.on_message = lambda c, u, m: downs.append((m.topic, json.loads(m.payload)))
    cs_app.connect("127.0.0.1", cs.port)
    cs_app.loop_start()
    try:
        assert ready.wait(5)
        gw.wait_stats(lambda s: s["chirpstack"].get("subscribed"), "subscribed to ChirpStack")
        op.send(dim("cs-dim", 7, 30))
        op.wait("cs-dim", "accepted")
        assert downs == []  # the device was not heard through ChirpStack yet: it waits
        port, body = payload.encode_uplink("pole", "report", {})
        cs_app.publish(up_topic(POLE.hex()), protobuf_up(body, port, eui=POLE.hex(), dedup="u1"),
                       qos=1).wait_for_publish(5)
        wait_for(lambda: downs, 10, "the command on command/down")
        (topic, cmd), = downs
        assert topic == f"application/{APP}/device/{POLE.hex()}/command/down"
        assert (cmd["devEui"], cmd["confirmed"]) == (POLE.hex(), False)
        sent = payload.decode_downlink(cmd["fPort"], base64.b64decode(cmd["data"]))
        assert (sent["command"], sent["fields"]["level"], sent["fields"]["seq"]) == ("dim", 30, 7)
        assert op.of("cs-dim") == [("accepted", None)]
        cs_app.publish(up_topic(POLE.hex(), "txack"), json.dumps(
            {"queueItemId": cmd["id"], "downlinkId": 5, "fCntDown": 3,
             "gatewayId": "aa555a0000000001"}).encode(), qos=1).wait_for_publish(5)
        op.wait("cs-dim", "sent")
        aport, abody = payload.encode_uplink("pole", "ack", {"port": cmd["fPort"], "seq": 7,
                                                           "result": "ok"})
        cs_app.publish(up_topic(POLE.hex()), protobuf_up(abody, aport, eui=POLE.hex(), dedup="u2",
                                                         fcnt=70001), qos=1).wait_for_publish(5)
        op.wait("cs-dim", "acknowledged")
        s = gw.wait_stats(lambda s: s["chirpstack"]["tx_acked"] == 1, "the txack counted")
        assert s["chirpstack"]["handed_over"] == 1 and s["commands"]["acknowledged"] == 1
        assert len(downs) == 1  # handed over once
    finally:
        cs_app.loop_stop()
        op.stop()
        gw.terminate()


def test_an_event_the_intake_cannot_take_is_not_acknowledged():
    """A full queue and backlog: no PUBACK, so ChirpStack's broker keeps the event."""
    import asyncio

    from gateway.backhaul.mqtt_link import MqttLink
    from gateway.chirpstack.source import ChirpStackSource
    from gateway.lorawan.registry import Registry

    taken, acks = [], []
    room = [False]

    def store(item):
        if room[0]:
            taken.append(item)
        return room[0]

    src = ChirpStackSource(MqttLink.build("mqtt://127.0.0.1:1"), "t", APP, Registry([]), store,
                           asyncio.new_event_loop())
    src.client.ack = lambda mid, qos: acks.append(mid)
    port, body = payload.encode_uplink("pole", "report", {})
    raw = protobuf_up(body, port, eui=POLE.hex(), dedup="full-1")
    src._handle(up_topic(POLE.hex()), raw, 1, 1)
    assert (acks, taken, src.counters["not_stored"], src.counters["items"]) == ([], [], 1, 0)
    room[0] = True  # redelivered once there is room: stored, acknowledged, not a duplicate
    src._handle(up_topic(POLE.hex()), raw, 2, 1)
    assert (acks, len(taken), src.counters["items"], src.counters["duplicates"]) == ([2], 1, 1, 0)
    src._handle(up_topic(POLE.hex()), b"\xff", 3, 1)  # malformed: acknowledged, nothing stored
    assert acks == [2, 3] and len(taken) == 1 and src.refused["bad-encoding"] == 1
    src.loop.close()

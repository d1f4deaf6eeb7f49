"""The demo's broker choice, and that each broker it may start does what the gateway needs: paho
QoS 1 publish with PUBACK, and a persistent session (clean_session=False) that keeps QoS 1
messages for a subscriber while it is away."""

import socket
import threading

import paho.mqtt.client as mqtt
import pytest

import sim.broker

HAVE_MOSQUITTO = sim.broker.find_mosquitto() is not None
try:
    import amqtt  # noqa: F401
    HAVE_AMQTT = True
except ImportError:
    HAVE_AMQTT = False


def _client(broker, client_id, clean):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                    protocol=mqtt.MQTTv311)
    got, acked, subscribed, connected = [], threading.Event(), threading.Event(), threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: connected.set()
    c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload, msg.qos))
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_publish = lambda *a: acked.set()
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    assert connected.wait(10), "no CONNACK from %s" % broker.kind
    return c, got, acked, subscribed


def _wait_for(pred, timeout=10.0):
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        ev.wait(0.02)
    return pred()


def _check_qos1_and_persistent_session(broker):
    sub, got, _, subscribed = _client(broker, "demo-sub", clean=False)
    sub.subscribe("streetgrid/#", qos=1)
    assert subscribed.wait(10)

    pub, _, acked, _ = _client(broker, "gw-1", clean=False)
    info = pub.publish("streetgrid/block-a/gw-1/readings", b"\xa1\x00\x01", qos=1)
    info.wait_for_publish(10)
    assert info.is_published() and acked.is_set()  # PUBACK came back
    assert _wait_for(lambda: len(got) == 1)
    assert got[0] == ("streetgrid/block-a/gw-1/readings", b"\xa1\x00\x01", 1)

    # The subscriber goes away; a QoS 1 message published meanwhile waits in its session.
    sub.loop_stop()
    sub.disconnect()
    info = pub.publish("streetgrid/block-a/gw-1/readings", b"while-away", qos=1)
    info.wait_for_publish(10)
    assert info.is_published()
    sub2, got2, _, _ = _client(broker, "demo-sub", clean=False)
    assert _wait_for(lambda: (("streetgrid/block-a/gw-1/readings", b"while-away", 1) in got2))
    for c in (sub2, pub):
        c.loop_stop()
        c.disconnect()


def _refuses_connections(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.skipif(not HAVE_AMQTT, reason="amqtt not installed")
def test_embedded_amqtt_serves_qos1_and_persistent_sessions_then_stops():
    broker = sim.broker.Embedded().start()
    try:
        assert broker.url == "mqtt://127.0.0.1:%d" % broker.port
        _check_qos1_and_persistent_session(broker)
    finally:
        broker.stop()
    assert _refuses_connections(broker.port)
    broker.stop()  # a second stop is harmless


@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto not installed")
def test_mosquitto_serves_qos1_and_persistent_sessions_then_stops():
    broker = sim.broker.Mosquitto().start()
    try:
        _check_qos1_and_persistent_session(broker)
    finally:
        broker.stop()
    assert _refuses_connections(broker.port)


def test_a_given_url_is_used_as_is_and_never_started_or_stopped():
    b = sim.broker.choose("mqtt://broker.example:1884")
    assert isinstance(b, sim.broker.External)
    assert (b.host, b.port, b.url) == ("broker.example", 1884, "mqtt://broker.example:1884")
    assert b.start() is b
    b.stop()
    assert sim.broker.choose("mqtt://10.1.2.3").port == 1883


@pytest.mark.parametrize("url", ["http://x:1", "mqtt://", "localhost:1883", "mqtts//x"])
def test_a_bad_url_is_a_clear_error(url):
    with pytest.raises(sim.broker.BrokerError, match="mqtt://HOST:PORT"):
        sim.broker.choose(url)


def test_mosquitto_is_preferred_when_installed_else_amqtt(monkeypatch):
    monkeypatch.setattr(sim.broker, "find_mosquitto", lambda: "/usr/sbin/mosquitto")
    assert isinstance(sim.broker.choose(), sim.broker.Mosquitto)
    monkeypatch.setattr(sim.broker, "find_mosquitto", lambda: None)
    assert isinstance(sim.broker.choose(), sim.broker.Embedded)
    with pytest.raises(sim.broker.BrokerError, match="no MQTT broker"):
        sim.broker.choose(prefer=("mosquitto",))


def test_mosquitto_that_cannot_start_is_a_clear_error(tmp_path):
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(sim.broker.BrokerError, match="did not start"):
        sim.broker.Mosquitto(binary=str(fake)).start(timeout=5)

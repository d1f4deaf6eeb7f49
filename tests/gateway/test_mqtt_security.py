"""The publisher against a real mosquitto with TLS, client certificates, a password file and an
ACL (tests/gateway/secure_broker.py): what is delivered, and what an operator is told when the
CA, the certificate, the password or the ACL is wrong, while every record waits in the queue."""

import os
import subprocess
import sys
import threading
import time

import pytest

from gateway.backhaul import batch
from gateway.backhaul.mqtt_link import LinkError, MqttLink
from gateway.backhaul.publisher import Publisher
from gateway.backhaul.store import RecordQueue
from protocol import cbor
from tests.gateway.mosquitto import MOSQUITTO
from tests.gateway.test_publisher import wait_for
from tests.gateway.secure_broker import USERS, Pki, SecureMosquitto

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

GW, SITE = "gw-1", "block-a"
TOPIC = batch.topic(SITE, GW)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def broker(tmp_path, pki):
    m = SecureMosquitto(tmp_path, pki).start()
    yield m
    m.stop()


def link(broker, pki, *, ca=None, client="gw-1", user="gw-1", password=None, protocol="3.1.1"):
    cert, key = pki.client(client) if client else ("", "")
    return MqttLink.build(broker.url, ca_file=ca or pki.ca, cert_file=cert, key_file=key,
                          username=user, password=USERS[user] if password is None else password,
                          protocol=protocol)


class TlsSubscriber:
    """The application side: user "app", its own client certificate, reads TOPIC."""

    def __init__(self, broker, pki):
        self.messages = []
        self.subscribed = threading.Event()
        self.c = link(broker, pki, client="app", user="app").client("test-app")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.c.connect("127.0.0.1", broker.port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(5)

    def values(self):
        return sorted(r[2] for p in list(self.messages) for r in batch.decode_batch(p)["records"])

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def queue_with(tmp_path, n, name="queue.db"):
    q = RecordQueue(str(tmp_path / name))
    q.put([cbor.dumps({-2: "urn:dev:eui64:0011223344556677:", 0: "lamp/power", 2: float(i),
                       1: "W", 6: 1700000000 + i}) for i in range(n)])
    return q


def publisher(q, lk, site=SITE):
    return Publisher(q, gateway_id=GW, site=site, link=lk, max_batch_age_s=0.02,
                     reconnect_min_s=1, reconnect_max_s=1).start()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_records_reach_the_application_over_mtls_with_credentials(tmp_path, broker, pki,
                                                                    protocol):
    sub = TlsSubscriber(broker, pki)
    q = queue_with(tmp_path, 20)
    pub = publisher(q, link(broker, pki, protocol=protocol))
    try:
        assert wait_for(lambda: q.stats().records == 0, 10)
        assert wait_for(lambda: len(sub.values()) == 20, 5)
    finally:
        pub.stop()
        sub.stop()
    assert sub.values() == [float(i) for i in range(20)]
    assert pub.last_error == "" and pub.counters["connect_failures"] == 0
    q.close()


def _refused_then_fixed(tmp_path, broker, pki, bad, good, expect):
    """A publisher with a bad link never delivers, says why (``expect`` in the reason) and
    keeps every record; a publisher with the good link then delivers all of them."""
    q = queue_with(tmp_path, 5)
    pub = publisher(q, bad)
    try:
        assert wait_for(lambda: pub.counters["connect_failures"] >= 1, 10)
        time.sleep(0.3)
        assert not pub.connected and pub.counters["acked"] == 0
    finally:
        pub.stop()
    assert all(e in pub.last_error for e in expect), pub.last_error
    assert q.stats().records == 5  # the data waits
    sub = TlsSubscriber(broker, pki)
    pub = publisher(q, good)
    try:
        assert wait_for(lambda: q.stats().records == 0, 10)
        assert wait_for(lambda: len(sub.values()) == 5, 5)
    finally:
        pub.stop()
        sub.stop()
    q.close()


def test_a_wrong_ca_is_named_and_the_data_waits(tmp_path, broker, pki):
    _refused_then_fixed(tmp_path, broker, pki, link(broker, pki, ca=pki.rogue_ca),
                        link(broker, pki), ["not trusted", "ca_file", pki.rogue_ca])


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_wrong_password_is_named_and_the_data_waits(tmp_path, broker, pki, protocol):
    _refused_then_fixed(tmp_path, broker, pki, link(broker, pki, password="nope", protocol=protocol),
                        link(broker, pki, protocol=protocol),
                        ["refused the connection", "username (gw-1)", "password_file"])


def test_no_client_certificate_on_an_mtls_broker_is_named(tmp_path, broker, pki):
    _refused_then_fixed(tmp_path, broker, pki, link(broker, pki, client=None),
                        link(broker, pki), ["certificate required", "cert_file"])


def test_under_mqtt5_a_publish_the_acl_denies_stays_queued(tmp_path, broker, pki):
    """MQTT 3.1.1 cannot say no to a QoS 1 publish: mosquitto PUBACKs a denied one and drops
    it. MQTT 5 PUBACKs it with "Not authorized", and the records stay queued (retried after a
    pause, not in a hot loop)."""
    q = queue_with(tmp_path, 3)
    pub = publisher(q, link(broker, pki, protocol="5"), site="block-b")  # ACL: block-a only
    try:
        assert wait_for(lambda: pub.counters["refused"] >= 1, 10)
        time.sleep(1.0)
        assert pub.counters["refused"] <= 2  # REFUSED_PAUSE_S between tries
    finally:
        pub.stop()
    assert pub.connected is False and pub.counters["acked"] == 0
    assert q.stats().records == 3
    q.close()


def test_link_settings_are_checked_before_anything_connects(tmp_path, pki):
    cert, key = pki.client("gw-1")
    (tmp_path / "empty").write_text("")
    (tmp_path / "pw").write_text("s3cret\n")
    cases = [
        (dict(url="mqtt://h", ca_file=pki.ca), "need an mqtts:// url"),
        (dict(url="mqtts://h", cert_file=cert), "cert_file and key_file go together"),
        (dict(url="mqtts://h", ca_file=str(tmp_path / "missing.pem")), "ca_file"),
        (dict(url="mqtts://h", ca_file=str(tmp_path / "empty")), "ca_file"),
        (dict(url="mqtts://h", ca_file=pki.ca, cert_file=cert, key_file=pki.server_key),
         "cert_file"),  # a key that is not the certificate's
        (dict(url="mqtt://h", password="x"), "a password needs a username"),
        (dict(url="mqtt://h", username="u", password="x", password_file=str(tmp_path / "pw")),
         "not both"),
        (dict(url="mqtt://h", username="u", password_file=str(tmp_path / "empty")), "is empty"),
        (dict(url="mqtt://h", protocol="4"), "protocol"),
        (dict(url="ws://h"), "scheme must be 'mqtt' or 'mqtts'"),
        (dict(url="mqtts://u:p@h"), "username and password_file"),
    ]
    for kw, expect in cases:
        with pytest.raises(LinkError) as e:
            MqttLink.build(kw.pop("url"), **kw)
        assert expect in str(e.value), (kw, str(e.value))
    lk = MqttLink.build("mqtts://broker.example", username="u",
                        password_file=str(tmp_path / "pw"), protocol="5")
    assert (lk.tls, lk.host, lk.port, lk.password) == (True, "broker.example", 8883, "s3cret")
    assert "s3cret" not in repr(lk) and "s3cret" not in lk.describe()
    assert MqttLink.build("mqtt://h").port == 1883


def tls_setup(tmp_path, broker, pki, password):
    """The gateway's config (tests/gateway/test_app.write_setup) pointed at the TLS broker, with
    paths relative to the config file as an operator would write them."""
    import shutil

    from tests.gateway.test_app import write_setup

    cfg = write_setup(tmp_path, broker.port)
    cert, key = pki.client("gw-1")
    os.makedirs(tmp_path / "tls", exist_ok=True)
    for src, name in ((pki.ca, "ca.pem"), (cert, "gw.pem"), (key, "gw.key")):
        shutil.copy(src, tmp_path / "tls" / name)
    (tmp_path / "tls" / "mqtt.pass").write_text(password + "\n")
    text = cfg.read_text().replace(
        f'url = "mqtt://127.0.0.1:{broker.port}"\n',
        f'url = "{broker.url}"\nca_file = "tls/ca.pem"\ncert_file = "tls/gw.pem"\n'
        'key_file = "tls/gw.key"\nusername = "gw-1"\npassword_file = "tls/mqtt.pass"\n'
        'protocol = "5"\n')
    cfg.write_text(text)
    return cfg


def test_the_gateway_service_publishes_and_takes_commands_over_mtls(tmp_path, broker, pki):
    from tests.gateway.test_app import ROOT, Gateway

    cfg = tls_setup(tmp_path, broker, pki, USERS["gw-1"])
    check = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg),
                            "--check-config"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    gw = Gateway(tmp_path, cfg)
    try:
        s = gw.wait_stats(lambda s: s["publisher"]["connected"] and s["commands"]["subscribed"],
                          "the gateway connected over mTLS, its command topic subscribed")
        assert s["publisher"]["broker"] == broker.url and s["publisher"]["last_error"] == ""
    finally:
        assert gw.terminate() == 0
    log = (tmp_path / "gateway.log").read_text()
    assert "MQTT 5, CA " in log and "user gw-1" in log and USERS["gw-1"] not in log


def test_the_gateway_with_a_wrong_password_says_so_in_stats_and_status(tmp_path, broker, pki):
    from tests.gateway.test_app import ROOT, Gateway

    cfg = tls_setup(tmp_path, broker, pki, "wrong")
    gw = Gateway(tmp_path, cfg)
    try:
        s = gw.wait_stats(lambda s: s["publisher"]["last_error"], "the refusal in stats.json")
        assert not s["publisher"]["connected"] and "username (gw-1)" in s["publisher"]["last_error"]
        st = subprocess.run([sys.executable, "-m", "gateway", "status", "--stats",
                             str(gw.stats_path)], cwd=ROOT, capture_output=True, text=True)
        line = next(t for t in st.stdout.splitlines() if t.startswith("mqtt "))
        assert line.startswith("mqtt %s: DISCONNECTED" % broker.url), st.stdout
        # records wait in a queue with room: degraded, not unhealthy (exit 0), and said so
        assert st.returncode == 0 and "\nwarning: MQTT is down: the MQTT broker at %s refused the connection: Not authorized" % broker.url in st.stdout
    finally:
        assert gw.terminate() == 0


def test_check_config_names_a_missing_ca_file(tmp_path, broker, pki):
    from tests.gateway.test_app import ROOT

    cfg = tls_setup(tmp_path, broker, pki, USERS["gw-1"])
    os.remove(tmp_path / "tls" / "ca.pem")
    check = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg),
                            "--check-config"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 2 and "[mqtt] ca_file" in check.stderr
    assert str(tmp_path / "tls" / "ca.pem") in check.stderr

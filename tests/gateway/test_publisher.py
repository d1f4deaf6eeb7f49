import threading
import time

import cbor2
import paho.mqtt.client as mqtt
import pytest

from gateway.backhaul import batch
from gateway.backhaul.publisher import Publisher
from gateway.backhaul.store import RecordQueue
from protocol import cbor
from tests.gateway.mosquitto import MOSQUITTO, Mosquitto

GW, SITE = "gw1", "testsite"
TOPIC = batch.topic(SITE, GW)


class Subscriber:
    """Test-side paho subscriber (QoS 1) that resubscribes after every reconnect."""

    def __init__(self, port):
        self.messages = []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub",
                             clean_session=True)
        self.c.reconnect_delay_set(0.05, 0.2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_disconnect = lambda *a: self.subscribed.clear()
        self.c.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(5)

    def batches(self):
        out = []
        for payload in list(self.messages):
            d = batch.decode_batch(payload)
            assert cbor2.loads(payload) == cbor.loads(payload)
            out.append(d)
        return out

    def records(self):
        return [r for b in self.batches() for r in b["records"]]

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def rec(i):
    return cbor.dumps({-2: "urn:dev:eui64:0011223344556677:", 0: "lamp/power", 2: float(i),
                       1: "W", 6: 1700000000 + i})


def wait_for(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def make_pub(q, port, **kw):
    args = dict(gateway_id=GW, site=SITE, port=port, max_batch_age_s=0.05, keepalive=5,
                reconnect_min_s=1, reconnect_max_s=1, max_batch_bytes=1024)
    args.update(kw)
    return Publisher(q, **args)


# -- without a broker: ack only on PUBACK (fake client) ----------------------------------------


class FakeClient:
    def __init__(self, client_id):
        self.published = []
        self.mid = 0

    def reconnect_delay_set(self, a, b): pass
    def max_inflight_messages_set(self, n): pass
    def max_queued_messages_set(self, n): pass
    def connect_async(self, *a, **k): pass
    def loop_start(self): self.on_connect(self, None, None, mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, "Success"), None)
    def loop_stop(self): pass
    def disconnect(self): pass

    def publish(self, topic, payload, qos):
        assert qos == 1
        self.mid += 1
        self.published.append((self.mid, topic, payload))
        return mqtt.MQTTMessageInfo(self.mid)


def test_published_is_not_acked_until_puback(tmp_path):
    q = RecordQueue(tmp_path / "q.db")
    q.put([rec(i) for i in range(5)])
    fake = {}
    pub = Publisher(q, gateway_id=GW, site=SITE, max_batch_age_s=0.01, max_inflight=1,
                    client_factory=lambda cid: fake.setdefault("c", FakeClient(cid))).start()
    try:
        c = fake["c"]
        assert wait_for(lambda: c.published, 2)
        time.sleep(0.2)
        assert len(c.published) == 1  # max_inflight=1: no second batch before the PUBACK
        assert q.stats().records == 5 and pub.counters["acked"] == 0
        mid, topic, payload = c.published[0]
        assert topic == TOPIC and len(batch.decode_batch(payload)["records"]) == 5
        c.on_publish(c, None, mid, mqtt.ReasonCode(mqtt.PacketTypes.PUBACK, "Success"), None)
        assert wait_for(lambda: q.stats().records == 0 and pub.counters["acked"] == 1, 2)
        q.put([b"\x05", rec(9)])  # an item that is not a SenML record is dropped explicitly
        assert wait_for(lambda: len(c.published) == 2, 2)
        assert pub.counters["invalid_dropped"] == 1
    finally:
        pub.stop()
        q.close()


def _one_batch_in_flight(tmp_path, n):
    """A queue of n records and a publisher on a FakeClient with their batch in flight
    (published, no PUBACK yet): (queue, publisher, client)."""
    q = RecordQueue(tmp_path / "q.db")
    q.put([rec(i) for i in range(n)])
    fake = {}
    pub = Publisher(q, gateway_id=GW, site=SITE, max_batch_age_s=0.01, max_inflight=1,
                    client_factory=lambda cid: fake.setdefault("c", FakeClient(cid))).start()
    assert wait_for(lambda: fake["c"].published, 2)
    return q, pub, fake["c"]


def test_a_stop_waits_for_the_puback_in_flight_and_publishes_nothing_new(tmp_path):
    """A clean stop must not leave a batch that the broker already has in the queue: the next
    start would publish it again (a duplicate at every restart under load)."""
    q, pub, c = _one_batch_in_flight(tmp_path, 3)
    q.put([rec(7)])  # queued while the first batch is in flight: must not leave during the stop
    t = threading.Thread(target=pub.stop, kwargs={"drain_s": 5.0})
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # waiting for the PUBACK
    mid = c.published[0][0]
    c.on_publish(c, None, mid, mqtt.ReasonCode(mqtt.PacketTypes.PUBACK, "Success"), None)
    t.join(3)
    assert not t.is_alive()
    assert len(c.published) == 1 and pub.counters["acked"] == 1
    assert q.stats().records == 1  # only the one queued after the batch left
    q.close()


def test_a_stop_gives_up_on_a_missing_puback_after_drain_s_and_keeps_the_records(tmp_path):
    q, pub, _c = _one_batch_in_flight(tmp_path, 3)
    t0 = time.monotonic()
    pub.stop(drain_s=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    assert q.stats().records == 3 and pub.counters["acked"] == 0  # re-sent by the next start
    q.close()


def test_batches_in_flight_are_not_read_again_and_hold_at_most_max_records(tmp_path):
    q = RecordQueue(tmp_path / "q.db")
    q.put([rec(i) for i in range(23)])
    fake = {}
    pub = Publisher(q, gateway_id=GW, site=SITE, max_batch_age_s=0.01, max_inflight=3,
                    max_batch_records=5, max_batch_bytes=4096,
                    client_factory=lambda cid: fake.setdefault("c", FakeClient(cid))).start()
    ok = mqtt.ReasonCode(mqtt.PacketTypes.PUBACK, "Success")
    try:
        c = fake["c"]
        assert wait_for(lambda: len(c.published) == 3, 2)
        time.sleep(0.1)
        assert len(c.published) == 3  # max_inflight
        values = [[r[2] for r in batch.decode_batch(p)["records"]] for _, _, p in c.published]
        assert values == [[0.0, 1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0],
                          [10.0, 11.0, 12.0, 13.0, 14.0]]  # in order, none twice, <= 5 each
        c.on_publish(c, None, 2, ok, None)  # the middle batch's PUBACK first
        assert wait_for(lambda: len(c.published) == 4, 2)
        assert [r[2] for r in batch.decode_batch(c.published[3][2])["records"]] == \
            [15.0, 16.0, 17.0, 18.0, 19.0]
        for mid in (1, 3, 4):
            c.on_publish(c, None, mid, ok, None)
        assert wait_for(lambda: len(c.published) == 5, 2)  # the partial rest, after its age
        assert [r[2] for r in batch.decode_batch(c.published[4][2])["records"]] == \
            [20.0, 21.0, 22.0]
        c.on_publish(c, None, 5, ok, None)
        assert wait_for(lambda: q.stats().records == 0 and pub.counters["acked_records"] == 23, 2)
    finally:
        pub.stop()
        q.close()


class _RecordingQueue(RecordQueue):
    """A real queue that notes which thread ran each ack and how many ids it deleted."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.acks: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def ack(self, ids):
        ids = list(ids)
        self.entered.set()
        self.gate.wait(5)
        self.acks.append((threading.current_thread().name, len(ids)))
        return super().ack(ids)


def test_pubacks_are_deleted_by_the_worker_in_one_transaction_not_on_pahos_thread(tmp_path):
    # paho's network thread must not run the DELETE (it would stop reading PUBACKs while the
    # commit waits for the GIL and the fsync); PUBACKs that arrive while an ack is running are
    # deleted together in the next one; ids are never read again before they are deleted
    q = _RecordingQueue(tmp_path / "q.db")
    q.put([rec(i) for i in range(20)])
    fake = {}
    pub = Publisher(q, gateway_id=GW, site=SITE, max_batch_age_s=0.01, max_inflight=4,
                    max_batch_records=5, max_batch_bytes=4096,
                    client_factory=lambda cid: fake.setdefault("c", FakeClient(cid))).start()
    ok = mqtt.ReasonCode(mqtt.PacketTypes.PUBACK, "Success")
    try:
        c = fake["c"]
        assert wait_for(lambda: len(c.published) == 4, 2)
        q.gate.clear()  # the first ack blocks (a slow commit)
        c.on_publish(c, None, 1, ok, None)
        assert q.entered.wait(2) and pub.inflight == 3 and not q.acks
        for mid in (2, 3, 4):  # arrive while the first ack is still running
            c.on_publish(c, None, mid, ok, None)
        time.sleep(0.1)
        assert q.stats().records == 20 and len(c.published) == 4  # nothing deleted or re-read
        q.gate.set()
        assert wait_for(lambda: pub.counters["acked_records"] == 20, 2)
        assert q.stats().records == 0 and pub.counters["acked"] == 4
        assert [n for _, n in q.acks] == [5, 15]  # batches 2-4 in one transaction
        assert all(name == "mqtt-publisher" for name, _ in q.acks)
        assert len(c.published) == 4  # every record published exactly once
    finally:
        q.gate.set()
        pub.stop()
        q.close()


# -- with a real mosquitto ---------------------------------------------------------------------

needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


@needs_broker
def test_exactly_once_without_faults_and_seq_survives_restart(tmp_path, broker):
    sub = Subscriber(broker.port)
    path = tmp_path / "q.db"
    q = RecordQueue(path)
    try:
        q.put([rec(i) for i in range(200)])
        with make_pub(q, broker.port) as pub:
            assert pub.flush(10)
            assert pub.counters["acked"] == pub.counters["published"] >= 2
        assert wait_for(lambda: len(sub.records()) == 200, 5)
        assert q.stats().records == 0
        first = sub.batches()
        assert sorted(r[2] for r in sub.records()) == [float(i) for i in range(200)]
        seqs = [b["seq"] for b in first]
        assert seqs == sorted(set(seqs))
        assert all(b["gateway_id"] == GW and len(m) <= 1024 for b, m in zip(first, sub.messages))
        q.close()
        q = RecordQueue(path)  # a new process on the same queue file
        q.put([rec(i) for i in range(200, 210)])
        with make_pub(q, broker.port) as pub:
            assert pub.flush(10)
        assert wait_for(lambda: len(sub.records()) == 210, 5)
        later = [b["seq"] for b in sub.batches()[len(first):]]
        assert later and min(later) > max(seqs)
    finally:
        sub.stop()
        q.close()


@needs_broker
def test_outage_keeps_records_and_recovers(tmp_path, broker):
    sub = Subscriber(broker.port)
    q = RecordQueue(tmp_path / "q.db")
    try:
        with make_pub(q, broker.port, max_inflight=2) as pub:
            q.put([rec(i) for i in range(20)])
            assert pub.flush(10)
            assert wait_for(lambda: len(sub.records()) == 20, 5)
            acked_before = pub.counters["acked"]
            broker.stop()
            assert wait_for(lambda: not pub.connected, 5)
            q.put([rec(i) for i in range(20, 300)])
            pub.notify()
            time.sleep(1.0)
            assert pub.counters["acked"] == acked_before  # nothing acked without a broker
            assert q.stats().records == 280  # all still queued
            assert pub.inflight <= 2  # bounded memory during the outage
            broker.start()
            assert sub.subscribed.wait(5)  # subscriber reconnects first (fast backoff)
            assert pub.flush(10)
            assert pub.counters["reconnects"] >= 1
        assert q.stats().records == 0
        assert wait_for(lambda: {r[2] for r in sub.records()} >= {float(i) for i in range(300)}, 5)
    finally:
        sub.stop()
        q.close()

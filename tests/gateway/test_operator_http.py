"""/metrics, /healthz and /readyz (issue #12), from a real gateway process with a real HTTP
client (urllib) and prometheus-client's own parser: the numbers follow what the gateway did."""

import json
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gateway.operations.health import readiness
from tests.gateway.mosquitto import Mosquitto, free_port
from tests.gateway.test_app import (GW_A, GW_B, Forwarder, Gateway, data_frame, join, wait_for,
                                    write_setup)


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_and_health_follow_the_gateway(tmp_path):
    mqtt_port = free_port()
    gw = Gateway(tmp_path, write_setup(tmp_path, mqtt_port))  # no broker yet
    http = json.loads(gw.ready.read_text())["http_port"]
    a, b = Forwarder(GW_A, gw.port), Forwarder(GW_B, gw.port)
    try:
        status, ctype, text = get(http, "/metrics")
        assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
        before = samples(text)
        assert before[("streetgrid_uplinks_accepted_total", ())] == 0
        assert ("process_cpu_seconds_total", ()) in before  # process metrics too
        a.pull()
        b.pull()
        keys = join(a, b)
        a.push(data_frame(keys, 0, {"dim_level": 5}), 10_000, snr=5.0)
        b.push(data_frame(keys, 0, {"dim_level": 5}), 10_000, snr=1.0)  # a copy
        forged = (keys[0], bytes(16), keys[2])  # the wrong NwkSKey: a bad MIC
        a.push(data_frame(forged, 1, {"dim_level": 5}), 20_000, snr=5.0)
        m = wait_for(lambda: (lambda m: m if m[("streetgrid_uplinks_accepted_total", ())] == 1
                              and m.get(("streetgrid_uplinks_rejected_total",
                                         (("reason", "bad-mic"),))) == 1 else None)(
            samples(get(http, "/metrics")[2])), 10, "the uplink and the forgery counted")
        assert m[("streetgrid_dedup_copies_total", ())] >= 1  # b's copy merged into a's
        assert m[("streetgrid_downlinks_total", (("result", "sent"), ("window", "rx1")))] == 1
        assert m[("streetgrid_joins_total", (("result", "accepted"),))] == 1
        assert m[("streetgrid_uplinks_received_total", ())] >= 5  # 2 joins, 3 data copies
        assert m[("streetgrid_mqtt_connected", ())] == 0
        assert m[("streetgrid_queue_records", ())] >= 1  # waiting for the broker
        assert ("streetgrid_forwarder_last_seen_seconds", (("forwarder", GW_A.hex().upper()),)) \
            in m
        ea, eb = GW_A.hex().upper(), GW_B.hex().upper()
        # a: one join-request, the uplink, the forgery; b: the join-request, the copy. The
        # join-accept went out through a (the better SNR).
        assert [m[("streetgrid_forwarder_rx_packets_total", (("forwarder", e),))]
                for e in (ea, eb)] == [3, 2]
        assert [m[("streetgrid_forwarder_tx_packets_total", (("forwarder", e),))]
                for e in (ea, eb)] == [1, 0]
        assert m[("streetgrid_queue_oldest_record_age_seconds", ())] > 0
        assert m[("streetgrid_mqtt_connect_failures_total", ())] >= 1
        assert m[("streetgrid_mqtt_publish_latency_seconds_count", ())] == 0
        broker = Mosquitto(tmp_path, port=mqtt_port).start()  # the broker comes up
        try:
            m = wait_for(lambda: (lambda m: m if m[("streetgrid_queue_records", ())] == 0
                                  else None)(samples(get(http, "/metrics")[2])), 15,
                         "the queue drained to the broker")
        finally:
            broker.stop()
        assert m[("streetgrid_mqtt_connected", ())] == 1
        assert m[("streetgrid_queue_oldest_record_age_seconds", ())] == 0
        n = m[("streetgrid_mqtt_publish_latency_seconds_count", ())]
        assert n >= 1 and m[("streetgrid_mqtt_publish_latency_seconds_bucket",
                             (("le", "+Inf"),))] == n
        assert 0 < m[("streetgrid_mqtt_publish_latency_seconds_sum", ())] < 10 * n
        info = [k for k in m if k[0] == "streetgrid_gateway_info"]
        assert info and ("gateway_id", "gw-1") in info[0][1]
        status, ctype, body = get(http, "/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True, "problems": []})
        status, _, body = get(http, "/readyz")  # broker down, but the queue has room
        assert (status, json.loads(body)["ok"]) == (200, True)
        assert get(http, "/nothing")[0] == 404
        assert gw.terminate() == 0
    finally:
        a.close()
        b.close()
        if gw.proc.poll() is None:
            gw.kill()


def test_a_metrics_port_in_use_is_logged_and_the_gateway_runs_on(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = write_setup(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:0"',
                                           'listen = "127.0.0.1:%d"' % port))
    gw = Gateway(tmp_path, cfg)
    try:
        assert json.loads(gw.ready.read_text())["http_port"] is None
        s = gw.wait_stats(lambda s: True, "stats")
        assert s["http"]["bind_errors"] == 1
        assert gw.terminate() == 0
        log = (tmp_path / "gateway.log").read_text()
        assert "cannot serve the status page, /metrics" in log and "Traceback" not in log
    finally:
        taken.close()
        if gw.proc.poll() is None:
            gw.kill()


def test_readiness():
    up = {"udp": {"port": 1700}, "queue": {"used_bytes": 95, "max_bytes": 100},
          "publisher": {"connected": True}}
    assert readiness(up) == []
    assert readiness(dict(up, publisher={"connected": False})) == [
        "MQTT is down and the queue is 95 % full"]
    assert readiness(dict(up, publisher={}, queue={"used_bytes": 1, "max_bytes": 100})) == []
    assert readiness(dict(up, udp={"port": None}))[0] == "the GWMP socket is not bound"
    assert readiness(dict(up, queue={"error": "disk full"})) == [
        "the durable queue fails: disk full"]

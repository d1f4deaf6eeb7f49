"""`python -m gateway run` with a [[modbus.bus]]: meter polls from a real pymodbus TCP server
reach a real mosquitto in the same CBOR batches as the poles, and show in stats.json."""

from __future__ import annotations

import asyncio
import threading

from tests.gateway.modbus_servers import MapDevice, tcp_server
from tests.gateway.test_app import Gateway, Subscriber, broker, wait_for, write_setup  # noqa: F401

VALUES = {"voltage_l1": 229.5, "power": 1234.5, "energy_import_wh": (1 << 33) + 7}


class ServerThread:
    """The pymodbus TCP server on its own event loop in a thread (the gateway is a process)."""

    def __init__(self, devices):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.port = asyncio.run_coroutine_threadsafe(
            tcp_server(devices), self.loop).result(10)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_meter_polls_reach_mqtt_in_the_gateway_batches(tmp_path, broker):
    srv = ServerThread({4: MapDevice(VALUES)})
    more = f'''
[[modbus.bus]]
name = "tcp-1"
kind = "tcp"
tcp_port = {srv.port}
poll_interval_s = 0.1
timeout_s = 0.2
  [[modbus.bus.meter]]
  address = 4
  points = ["voltage_l1", "power", "energy_import_wh"]
  [[modbus.bus.meter]]
  address = 9
  points = ["voltage_l1"]
'''
    sub = Subscriber(broker.port)
    gw = Gateway(tmp_path, write_setup(tmp_path, broker.port, more=more))
    try:
        from gateway.backhaul import batch

        def meter_records():
            out = []
            for m in list(sub.messages):
                out += [r for r in batch.decode_batch(m)["records"]]
            return [r for r in out if r.get(-2) == "urn:dev:modbus:tcp-1.4:"] and out

        recs = wait_for(meter_records, 10, "meter records on MQTT")
        first = next(i for i, r in enumerate(recs) if r.get(-2) == "urn:dev:modbus:tcp-1.4:")
        assert [(r[0], r[1], r[2]) for r in recs[first:first + 3]] == [
            ("voltage/l1", "V", 229.5), ("power", "W", 1234.5),
            ("energy/import", "Wh", (1 << 33) + 7)]
        assert recs[first]["modbus"]["address"] == 4
        s = gw.wait_stats(lambda s: s.get("modbus", {}).get("tcp-1", {}).get("meters", {})
                          .get("9", {}).get("timeouts", 0) >= 1, "a dead meter counted")
        assert s["modbus"]["tcp-1"]["meters"]["4"]["polls"] >= 1
        assert gw.terminate() == 0
    finally:
        if gw.proc.poll() is None:
            gw.kill()
        sub.stop()
        srv.stop()


def test_relay_command_over_mqtt_is_armed_then_written_on_the_bus(tmp_path, broker):
    """An operator's relay command reaches the meter as the two writes it demands, in order,
    through the bus's poller; bad Modbus commands are refused with a reason and write nothing."""
    import json

    import paho.mqtt.client as mqtt

    from gateway.commands.auth import sign
    from protocol.modbus import registers as regmap
    from tests.gateway.test_app import COMMAND_KEY, GW_ID, SITE

    dev = MapDevice(VALUES)
    srv = ServerThread({4: dev})
    more = f'''
[[modbus.bus]]
name = "tcp-1"
kind = "tcp"
tcp_port = {srv.port}
poll_interval_s = 0.2
  [[modbus.bus.meter]]
  address = 4
  points = ["voltage_l1"]
'''
    gw = Gateway(tmp_path, write_setup(tmp_path, broker.port, more=more))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-modbus-ops")
    try:
        gw.wait_stats(lambda s: s["commands"]["subscribed"], "the command subscription")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        topic = f"streetgrid/{SITE}/{GW_ID}/commands"
        bad = [{"modbus": {"bus": "nope", "address": 4}, "command": "relay",
                "fields": {"action": "open"}},
               {"modbus": {"bus": "tcp-1", "address": 5}, "command": "relay",
                "fields": {"action": "open"}},
               {"modbus": {"bus": "tcp-1", "address": 4}, "command": "relay",
                "fields": {"action": "sideways"}},
               {"modbus": {"bus": "tcp-1", "address": 4}, "command": "format"}]
        good = {"modbus": {"bus": "tcp-1", "address": 4}, "command": "relay",
                "fields": {"action": "open"}}
        unsigned = dict(good, id="op-unsigned")  # a relay command always needs a signature
        for i, body in enumerate(bad + [good]):
            body = sign(dict(body, id="op-%d" % i), COMMAND_KEY)
            pub.publish(topic, json.dumps(body).encode(), qos=1).wait_for_publish(5)
        pub.publish(topic, json.dumps(unsigned).encode(), qos=1).wait_for_publish(5)
        s = gw.wait_stats(lambda s: s["commands"]["modbus_done"] == 1
                          and s["commands"]["rejected"] == len(bad) + 1, "the relay command")
        assert s["commands"]["modbus_failed"] == 0
        assert s["commands"]["refused"] == {"invalid": len(bad), "relay-unsigned": 1}
        assert dev.writes == [(regmap.entry("relay_arm").address, [regmap.RELAY_ARM_MAGIC]),
                              (regmap.entry("relay").address, [0])]
        assert dev.values["relay"] == 0
        assert gw.terminate() == 0
    finally:
        pub.disconnect()
        pub.loop_stop()
        if gw.proc.poll() is None:
            gw.kill()
        srv.stop()


def test_sighup_starts_a_bus_added_to_the_config_and_stops_a_removed_one(tmp_path):
    """The Modbus bus table reloaded without a restart (issue #12); a table with an error
    changes nothing."""
    import signal

    from tests.gateway.mosquitto import free_port

    srv = ServerThread({4: MapDevice(VALUES)})
    bus = f'''
[[modbus.bus]]
name = "tcp-1"
kind = "tcp"
tcp_port = {srv.port}
poll_interval_s = 0.1
timeout_s = 0.2
  [[modbus.bus.meter]]
  address = 4
  points = ["voltage_l1"]
'''
    cfg = write_setup(tmp_path, free_port())  # no broker: the polls wait in the queue
    without = cfg.read_text()
    gw = Gateway(tmp_path, cfg)
    try:
        assert gw.wait_stats(lambda s: True, "stats")["modbus"] == {}
        cfg.write_text(without + bus.replace('kind = "tcp"', 'kind = "udp"'))  # an error
        gw.proc.send_signal(signal.SIGHUP)
        s = gw.wait_stats(lambda s: s["reloads"]["refused"] == 1, "the bad bus table refused")
        assert s["modbus"] == {}
        assert "kind" in (tmp_path / "gateway.log").read_text()
        cfg.write_text(without + bus)
        gw.proc.send_signal(signal.SIGHUP)
        s = gw.wait_stats(lambda s: s["modbus"].get("tcp-1", {}).get("meters", {}).get("4", {})
                          .get("polls", 0) >= 1, "the new bus polled")
        cfg.write_text(without)
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_stats(lambda s: s["modbus"] == {}, "the removed bus stopped")
        log = (tmp_path / "gateway.log").read_text()
        assert "reload: Modbus bus tcp-1 started" in log and "tcp-1 stopped" in log, log
        assert gw.terminate() == 0
    finally:
        if gw.proc.poll() is None:
            gw.kill()
        srv.stop()

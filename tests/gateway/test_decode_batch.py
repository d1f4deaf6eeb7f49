"""`python -m gateway decode-batch` as a subprocess: from a file, from stdin, from a live MQTT
subscription on a real mosquitto; bad input gives one line on stderr and exit status 2."""

import json
import os
import subprocess
import sys

import paho.mqtt.client as mqtt

from gateway.backhaul import batch
from protocol import cbor
from tests.gateway.mosquitto import Mosquitto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, stdin=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "gateway", "decode-batch", *args], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=timeout)


def item(fcnt, v):
    return cbor.dumps([{-1: 26, -2: "urn:dev:eui64:70b3d57ed0001234:", -3: 1795845600.25,
                        0: "dim_level", 1: "/100", 2: v,
                        "lora": {"fcnt": fcnt, "copies": [{"fwd": "AA555A0000000001", "rssi": -97,
                                                          "snr": 8.5, "tmst": 2000000}]}},
                       {0: "status/lamp_on", 4: True}, {0: "raw", 8: b"\x01\xff"}])


B1 = batch.encode_batch("gw-1", 7, 1795845601, [item(0, 40)])
B2 = batch.encode_batch("gw-1", 8, 1795845602, [item(1, 41), item(2, float("nan"))])


def test_file_with_two_batches_and_stdin(tmp_path):
    f = tmp_path / "batches.cbor"
    f.write_bytes(B1 + B2)
    p = cli(str(f))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [x["seq"] for x in lines] == [7, 8] and lines[0]["gateway_id"] == "gw-1"
    r = lines[0]["records"]
    assert r[0] == {"bver": 26, "bn": "urn:dev:eui64:70b3d57ed0001234:", "bt": 1795845600.25,
                    "n": "dim_level", "u": "/100", "v": 40,
                    "lora": {"fcnt": 0, "copies": [{"fwd": "AA555A0000000001", "rssi": -97,
                                                    "snr": 8.5, "tmst": 2000000}]}}
    assert r[1] == {"n": "status/lamp_on", "vb": True} and r[2] == {"n": "raw", "vd": "01ff"}
    assert len(lines[1]["records"]) == 6 and lines[1]["records"][3]["v"] == "NaN"
    p2 = cli("-", stdin=B1)
    assert p2.returncode == 0 and p2.stdout.decode().splitlines()[0] == p.stdout.decode().splitlines()[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for data, needle in ((b"", "empty input"), (b"\xff\x00", "not valid CBOR"),
                         (cbor.dumps({1: "gw"}), "batch lacks key 2"), (B1 + b"\xa4\x01", "at byte")):
        f = tmp_path / "bad.cbor"
        f.write_bytes(data)
        p = cli(str(f))
        err = p.stderr.decode()
        assert p.returncode == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    p = cli(str(tmp_path / "missing.cbor"))
    assert p.returncode == 2 and "cannot read" in p.stderr.decode()
    p = cli("--mqtt", "http://x:1", "--count", "1")
    assert p.returncode == 2 and "scheme must be 'mqtt'" in p.stderr.decode()
    p = cli("--count", "x")
    assert p.returncode == 2  # argparse usage error


def test_live_subscription(tmp_path):
    m = Mosquitto(tmp_path).start()
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-decode-pub")
        pub.connect("127.0.0.1", m.port)
        pub.loop_start()
        # retained, on two gateways' topics: the CLI gets both whenever it subscribes
        for t, payload in ((batch.topic("s", "gw-1"), B1), (batch.topic("s", "gw-2"), B2),
                           ("streetgrid/s/gw-3/readings", b"not cbor")):
            pub.publish(t, payload, qos=1, retain=True).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
        p = cli("--mqtt", f"mqtt://127.0.0.1:{m.port}", "--count", "2", "--timeout", "10")
        assert p.returncode == 0, p.stderr
        lines = sorted((json.loads(x) for x in p.stdout.decode().splitlines()), key=lambda x: x["seq"])
        assert [(x["topic"], x["seq"]) for x in lines] == [("streetgrid/s/gw-1/readings", 7),
                                                           ("streetgrid/s/gw-2/readings", 8)]
        # a bad message is reported and skipped; --count not reached before --timeout: exit 1
        p = cli("--mqtt", f"mqtt://127.0.0.1:{m.port}", "--topic", "streetgrid/s/gw-3/readings",
                "--count", "1", "--timeout", "0.5")
        err = p.stderr.decode()
        assert p.returncode == 1 and p.stdout == b""
        assert "streetgrid/s/gw-3/readings: batch is not valid CBOR" in err and "got 0 of 1" in err
    finally:
        m.stop()

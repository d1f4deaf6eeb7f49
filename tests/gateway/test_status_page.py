"""The live status page (gateway/operations/status_page.py): its view of a snapshot, and the page itself
in headless Debian chromium (playwright-core) against a running demo: real numbers appear,
change, match the gateway's own /status.json, and a screenshot is taken."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from gateway.operations.status_page import MAX_DEVICES, page_view

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLAYWRIGHT = os.path.join(ROOT, "node_modules", "playwright-core")


def snapshot(devices):
    return {"gateway_id": "gw-1", "site": "block-a", "time": 1000.0, "uptime_s": 5,
            "udp": {"port": 1700}, "uplink": {"accepted": 7, "bad-mic": 2, "join": 1},
            "forwarder_server": {"joins-accepted": 3, "crc-bad": 1},
            "publisher": {"connected": False, "last_error": "refused", "broker": "mqtt://b"},
            "queue": {"records": 4, "used_bytes": 10, "max_bytes": 100, "oldest_age_s": 2.5},
            "forwarders": {"AA": {"addr": "1.2.3.4:5", "last_pull_s": 1.0, "rx": 9, "tx": 2}},
            "devices": devices, "modbus": {"rs485-1": {"meters": {"10": {"polls": 3},
                                                                  "2": {"timeouts": 1}}}},
            "rejections": [{"t": 1.0, "what": "uplink", "reason": "bad-mic", "detail": "a"},
                           {"t": 2.0, "what": "uplink", "reason": "replay", "detail": "b"}]}


def test_the_view_puts_alarms_first_then_the_freshest_and_stays_bounded():
    devices = {"%016X" % i: {"last_uplink": 1000.0 - i, "fcnt": i, "alarms": []}
               for i in range(MAX_DEVICES + 30)}
    devices["%016X" % 70]["alarms"] = ["tilt"]
    devices["FFFF000000000000"] = {"last_join": 999.0}  # joined, no uplink yet
    v = page_view(snapshot(devices))
    shown = v["devices"]["shown"]
    assert len(shown) == MAX_DEVICES and v["devices"]["count"] == MAX_DEVICES + 31
    assert shown[0]["eui"] == "%016X" % 70 and shown[0]["alarms"] == ["tilt"]
    assert [d["last_s"] for d in shown[1:4]] == [0.0, 1.0, 1.0]
    assert v["devices"]["with_alarms"] == 1
    assert v["totals"]["uplinks_rejected"] == 3
    assert v["totals"]["rejected_by_reason"] == {"bad-mic": 2, "crc-bad": 1}
    assert [m["address"] for m in v["modbus"][0]["meters"]] == [2, 10]
    assert [r["reason"] for r in v["rejections"]] == ["replay", "bad-mic"]  # newest first
    assert v["ready"] == [] and v["mqtt"]["last_error"] == "refused"
    json.dumps(v)  # JSON types only


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


@pytest.mark.skipif(CHROMIUM is None or not os.path.isdir(PLAYWRIGHT),
                    reason="needs Debian chromium and npm's playwright-core")
def test_the_page_shows_the_running_demo_live_in_chromium(tmp_path):
    demo = subprocess.Popen([sys.executable, "-u", "-m", "sim", "demo", "--workdir",
                             str(tmp_path / "demo")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "the demo ended before its status page was up:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("status page: "):
                url = line.split()[2]
        assert url, "".join(lines)
        status, headers, body = get(url)
        assert status == 200 and b"streetgrid gateway" in body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        shot = tmp_path / "status-page.png"
        p = subprocess.run(["node", os.path.join(ROOT, "tests", "browser", "status_page.mjs"),
                            url, str(shot), "40"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, CHROMIUM=CHROMIUM))
        assert p.returncode == 0, p.stdout + p.stderr
        seen = json.loads(p.stdout.strip().splitlines()[-1])
        truth = json.loads(get(url + "status.json")[2])  # the gateway's own numbers, after
    finally:
        demo.terminate()
        out = demo.communicate(timeout=60)[0]
    first, later, alarmed = seen["first"], seen["later"], seen["alarmed"]
    assert seen["errors"] == [], seen["errors"]
    assert first["gateway"] == truth["gateway_id"] == "gw-1"
    assert first["state"] == "ready" and first["mqtt"] == "connected"
    # numbers from the demo, moving: uplinks accepted grows, the sparkline fills
    assert 0 < first["accepted"] < later["accepted"] <= truth["uplink"]["accepted"]
    assert later["spark"] >= 3 and later["sparkQueue"] >= 3
    assert sorted(r[0] for r in later["forwarders"]) == sorted(truth["forwarders"])
    assert all(int(r[3]) > 0 for r in later["forwarders"])  # rx: packets from each forwarder
    assert {r[0] for r in later["devices"]} <= set(truth["devices"])
    for row in later["devices"]:
        d = truth["devices"][row[0]]
        assert int(row[3]) <= d["fcnt"], (row, d)  # the page's FCnt, at most the latest
    assert {r[0] for r in later["modbus"]} == {"rs485-1"}
    alarms = [r for r in alarmed["devices"] if r[7]]
    assert alarms and all(truth["devices"][r[0]]["alarms"] for r in alarms), alarms
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print("status page screenshot:", shot)
    assert "Traceback" not in out, out

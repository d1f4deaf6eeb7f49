"""The gateway as a service (issue #12): `run --check-config`, the JSON log format, the hardened
systemd unit in deploy/systemd/ (checked by systemd's own systemd-analyze, its ExecStartPre run
for real), SIGHUP reloading the registry, and `status` for a person and a health check."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.gateway.mosquitto import free_port
from tests.gateway.test_app import Gateway, write_setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "deploy", "systemd", "streetgrid-gateway.service")


def gateway(*args):
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_config_says_what_would_run_and_starts_nothing(tmp_path):
    cfg = write_setup(tmp_path, free_port())
    p = gateway("run", "--config", str(cfg), "--check-config")
    assert p.returncode == 0, p.stderr
    assert re.search(r"config .*gateway\.toml OK: gateway \S+ \(site \S+, EU868\), 1 devices in "
                     r".*devices\.toml, 0 Modbus buses", p.stdout), p.stdout
    assert not (tmp_path / "var").exists()  # no data dir, no queue, no socket: nothing started


def test_check_config_lists_every_error_of_the_config_and_of_the_registry(tmp_path):
    cfg = write_setup(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace('level = "INFO"', 'level = "INFO"\nformat = "xml"')
                   .replace('port = 0', 'port = 70000'))
    p = gateway("run", "--config", str(cfg), "--check-config")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "2 errors" in p.stderr and "[log] format = 'xml'" in p.stderr and "[udp] port" in p.stderr
    cfg = write_setup(tmp_path, free_port())
    reg = tmp_path / "devices.toml"
    reg.write_text(reg.read_text() * 2)  # the same DevEUI twice
    p = gateway("run", "--config", str(cfg), "--check-config")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "devices.toml" in p.stderr and "duplicate" in p.stderr.lower(), p.stderr


def test_the_json_log_is_one_object_per_line(tmp_path):
    cfg = write_setup(tmp_path, free_port())
    text = cfg.read_text().replace('level = "INFO"', 'level = "INFO"\nformat = "json"')
    cfg.write_text(text)
    gw = Gateway(tmp_path, cfg)
    gw.wait_stats(lambda s: True, "a stats snapshot")
    assert gw.terminate() == 0
    lines = (tmp_path / "gateway.log").read_text().splitlines()
    assert lines
    entries = [json.loads(x) for x in lines]  # every line, or this raises
    for e in entries:
        assert set(e) >= {"ts", "level", "logger", "msg"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]), e
    msgs = " ".join(e["msg"] for e in entries)
    assert "serving GWMP" in msgs and "shutting down" in msgs


def test_json_formatter_keeps_the_traceback_in_one_line():
    import logging

    from gateway.log_format import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("gateway.x", logging.ERROR, __file__, 1, "failed %s", ("it",),
                                sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    e = json.loads(line)
    assert (e["level"], e["logger"], e["msg"]) == ("ERROR", "gateway.x", "failed it")
    assert "ValueError: boom" in e["exc"]


def unit_for_here(tmp_path, cfg):
    """The unit with this machine's python and a test config instead of /opt and /etc."""
    text = open(UNIT).read()
    text = text.replace("/opt/streetgrid/venv/bin/python", sys.executable)
    text = text.replace("/etc/streetgrid/gateway.toml", str(cfg))
    path = tmp_path / "streetgrid-gateway.service"
    path.write_text(text)
    return path, text


def exec_lines(text, key):
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_analyze
def test_the_systemd_unit_is_valid_and_hardened(tmp_path):
    path, _ = unit_for_here(tmp_path, tmp_path / "gateway.toml")
    p = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                       timeout=60)
    # verify warns about unknown keys and bad values but exits 0: any output is a finding
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 2.0, p.stdout  # systemd's scale: 0 safest .. 10 "UNSAFE"


def test_the_units_commands_run_the_gateway_and_refuse_a_bad_config(tmp_path):
    unit = open(UNIT).read()
    for key in ("User", "StateDirectory", "Restart", "NoNewPrivileges", "ProtectSystem"):
        assert exec_lines(unit, key), key
    assert exec_lines(unit, "Restart") == ["on-failure"]
    assert exec_lines(unit, "RestartPreventExitStatus") == ["2"]  # a bad config: no loop
    cfg = write_setup(tmp_path, free_port())
    _, text = unit_for_here(tmp_path, cfg)
    pre, = exec_lines(text, "ExecStartPre")
    start, = exec_lines(text, "ExecStart")
    assert start.split()[-2:] == ["--config", str(cfg)]
    p = subprocess.run(pre.split(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and " OK: " in p.stdout, p.stdout + p.stderr
    cfg.write_text(cfg.read_text().replace('region = "EU868"', 'region = "EU433"'))
    p = subprocess.run(pre.split(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "region" in p.stderr, p.stdout + p.stderr


def test_sighup_reloads_the_registry_and_a_bad_one_keeps_the_old(tmp_path):
    """A device added to the registry joins after a SIGHUP, without a restart; a registry with
    an error in between changes nothing and its error is logged."""
    import signal

    from gateway.lorawan.registry import load_registry
    from protocol import gwmp
    from protocol.lorawan.join import build_join_request, open_join_accept
    from tests.gateway.test_app import GW_A, JOIN_EUI, KEY, POLE, Forwarder, wait_for

    new = bytes.fromhex("70B3D57ED0005678")
    cfg = write_setup(tmp_path, free_port())
    reg = tmp_path / "devices.toml"
    one = reg.read_text()
    two = one + one.replace(POLE.hex(), new.hex()).replace('"pole-1"', '"pole-2"')
    load_registry(str(reg))  # (the test's own files are valid)
    gw = Gateway(tmp_path, cfg)
    a = Forwarder(GW_A, gw.port)
    try:
        a.pull()
        a.push(build_join_request(JOIN_EUI, new, 1, KEY), 1000, snr=9.0)
        gw.wait_stats(lambda s: s["forwarder_server"].get("join-unknown-device") == 1,
                      "the unknown device's join refused")
        reg.write_text(two + two)  # every device twice: refused as a whole
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_stats(lambda s: s["reloads"]["refused"] == 1, "the bad registry refused")
        log = (tmp_path / "gateway.log").read_text()
        assert "reload:" in log and "duplicate" in log.lower() and "stays" in log, log
        a.push(build_join_request(JOIN_EUI, new, 2, KEY), 2000, snr=9.0)
        gw.wait_stats(lambda s: s["forwarder_server"].get("join-unknown-device") == 2,
                      "the old registry still in use")
        reg.write_text(two)
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_stats(lambda s: s["reloads"]["ok"] == 1, "the new registry loaded")
        a.push(build_join_request(JOIN_EUI, new, 3, KEY), 3000, snr=9.0)
        resp = a.recv(gwmp.PullResp)
        assert open_join_accept(resp.txpk.data, KEY).mic_ok  # the new device joined
        a.tx_ack(resp.token)
        assert "reload: registry" in (tmp_path / "gateway.log").read_text()
        assert gw.proc.poll() is None  # one process all along
        wait_for(lambda: gw.stats()["forwarder_server"].get("join-unknown-device") == 2, 5,
                 "no more refusals")
    finally:
        a.close()
        if gw.proc.poll() is None:
            assert gw.terminate() == 0


def test_status_reads_a_running_gateway_and_says_when_it_stopped(tmp_path):
    from tests.gateway.test_app import GW_A, Forwarder

    mqtt_port = free_port()  # nobody listens: the broker is down
    cfg = write_setup(tmp_path, mqtt_port)
    gw = Gateway(tmp_path, cfg)
    a = Forwarder(GW_A, gw.port)
    try:
        a.pull()
        gw.wait_stats(lambda s: s["forwarders"] and s["publisher"]["last_error"],
                      "the forwarder seen, the broker missed")
        p = gateway("status", "--stats", str(gw.stats_path))
        assert p.returncode == 0, p.stdout + p.stderr
        out = p.stdout
        assert "gateway gw-1 (site block-a)" in out and "forwarders: 1" in out, out
        assert "AA555A0000000001" in out, out
        assert "mqtt mqtt://127.0.0.1:%d: DISCONNECTED" % mqtt_port in out, out
        assert ("warning: MQTT is down: cannot reach the MQTT broker at mqtt://127.0.0.1:%d: "
                "connection refused" % mqtt_port) in out, out
        assert out.splitlines()[-1] == "healthy"
        url = "http://127.0.0.1:%d" % json.loads(gw.ready.read_text())["http_port"]
        live = gateway("status", "--url", url)  # the same state, from the running process
        assert live.returncode == 0, live.stdout + live.stderr
        steady = [ln for ln in out.splitlines()[1:] if "last seen" not in ln]  # no ages
        assert [ln for ln in live.stdout.splitlines()[1:] if "last seen" not in ln] == steady
        assert "AA555A0000000001" in live.stdout
        assert gw.terminate() == 0
        gone = gateway("status", "--url", url)
        assert gone.returncode == 1 and "UNHEALTHY: no answer from the gateway" in gone.stdout
        time.sleep(1.2)
        p = gateway("status", "--stats", str(gw.stats_path), "--max-age", "1")
        assert p.returncode == 1 and "UNHEALTHY: stats.json is" in p.stdout, p.stdout
    finally:
        a.close()
        if gw.proc.poll() is None:
            gw.kill()
    p = gateway("status", "--stats", str(tmp_path / "none.json"))
    assert p.returncode == 2 and "cannot read" in p.stderr and "Traceback" not in p.stderr


def test_status_verdicts():
    from gateway.operations.status_cli import verdict

    ok = {"queue": {"used_bytes": 95, "max_bytes": 100}, "publisher": {"connected": True},
          "intake": {"dropped": 0}}
    assert verdict(ok, 1, 60) == []  # a full queue with the broker up: it is draining
    down = dict(ok, publisher={"connected": False})
    assert verdict(down, 1, 60) == ["MQTT is down and the queue is 95 % full"]
    room = dict(down, queue={"used_bytes": 10, "max_bytes": 100})
    assert verdict(room, 1, 60) == []  # the queue holds the outage
    lost = dict(ok, intake={"dropped": 3})
    assert verdict(lost, 1, 60) == ["3 records refused for lack of room (intake.dropped)"]
    assert verdict({"queue": {"error": "disk I/O error"}}, 1, 60) == [
        "the durable queue fails: disk I/O error"]
    assert verdict(ok, 61, 60)[0].startswith("stats.json is 61 s old")

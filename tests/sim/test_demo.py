"""`python -m sim demo`: what it prints per uplink, its command line, and the whole thing end to
end in a subprocess (broker, real gateway process, City, MQTT), including Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

import sim.broker
import sim.mpvm
from gateway.backhaul.batch import encode_batch
from protocol.payload.senml import LABELS
from protocol import cbor
from sim import demo_view

ROOT = sim.mpvm.ROOT
POLE_EUI = "70B3D57ED0000001"


def _item(eui, fcnt, records, copies=None, t=1774069200):
    recs = []
    for i, r in enumerate(records):
        r = dict(r)
        if i == 0:
            r.update({"bver": 26, "bn": "urn:dev:eui64:%s:" % eui.lower(), "bt": t})
        out = {LABELS[k]: v for k, v in r.items()}
        if i == 0:
            out["lora"] = {"fcnt": fcnt, "fport": 10, "copies": copies or []}
        recs.append(out)
    return cbor.dumps(recs)


REPORT = [{"n": "status", "v": 5}, {"n": "status/lamp_on", "vb": True},
          {"n": "status/dark", "vb": True}, {"n": "status/door_open", "vb": False},
          {"n": "dim_level", "v": 60, "u": "/100"}, {"n": "lamp_power", "v": 41.3, "u": "W"},
          {"n": "temperature", "v": -7.0, "u": "Cel"}, {"n": "humidity", "v": 81.5, "u": "%RH"}]
COPIES = [{"fwd": "AA555A0000000001", "rssi": -109, "snr": 7.5, "tmst": 1},
          {"fwd": "AA555A0000000002", "rssi": -101, "snr": 9.25, "tmst": 2}]
NAMES = {POLE_EUI: "pole-0001*", "AA555A0000000001": "fwd-1", "AA555A0000000002": "fwd-2"}


def test_one_line_per_uplink_with_units_radio_and_forwarders():
    batch = encode_batch("gw-1", 7, 1, [_item(POLE_EUI, 17, REPORT, COPIES),
                                         _item("70B3D57ED0000002", 3, REPORT[4:6])])
    ups = demo_view.uplinks(batch)
    assert [u["eui"] for u in ups] == [POLE_EUI, "70B3D57ED0000002"]
    assert ups[0]["bits"] == {"status": ["lamp_on", "dark"]}
    assert ups[0]["fields"][0] == ("dim_level", 60, "/100")
    line = demo_view.format_uplink(ups[0], NAMES)
    assert line.startswith("2026-03-21 05:00:00  pole-0001*")
    for part in ("dim 60%", "lamp 41.3 W", "temp -7°C", "rh 81.5 %RH", "[lamp_on dark]",
                 "fcnt 17", "rssi -101 dBm", "snr 9.2 dB", "via fwd-1,fwd-2"):
        assert part in line, (part, line)
    other = demo_view.format_uplink(ups[1], NAMES)
    assert "70B3D57ED0000002" in other and "fcnt 3" in other and "rssi" not in other


def test_alarm_bits_are_named_and_a_cleared_alarm_says_so():
    raised = [{"n": "alarms", "v": 128}, {"n": "alarms/door_open", "vb": True},
              {"n": "alarms/tilted", "vb": False}, {"n": "tilt_angle", "v": 0.21, "u": "rad"}]
    cleared = [{"n": "alarms", "v": 0}, {"n": "alarms/door_open", "vb": False}]
    ups = demo_view.uplinks(encode_batch("gw-1", 1, 1, [_item(POLE_EUI, 4, raised),
                                                         _item(POLE_EUI, 5, cleared)]))
    first, second = (demo_view.format_uplink(u, NAMES) for u in ups)
    assert "ALARM door_open" in first and "tilt 12°" in first
    assert "ALARM cleared" in second


def test_a_modbus_poll_is_one_line_with_its_bus_and_address():
    from gateway.modbus.readings import meter_item

    item = meter_item("urn:dev:modbus:rs485-1.3:", "rs485-1", 3, 1795845600,
                      {"voltage_l1": 231.5, "power": 1530.0, "energy_import_wh": 1234})
    ups = demo_view.uplinks(encode_batch("gw-1", 1, 1, [item]))
    assert [(u["eui"], u["modbus"]["address"], u["lora"]) for u in ups] == [("RS485-1.3", 3, {})]
    line = demo_view.format_uplink(ups[0], {"RS485-1.3": "rs485-1.3"})
    assert line.startswith("2026-11-28 06:00:00  rs485-1.3 ")
    for part in ("V1 231.5 V", "power 1530 W", "import 1234 Wh", "| modbus rs485-1 address 3"):
        assert part in line, (part, line)
    assert "fcnt" not in line


def test_a_message_that_is_not_a_batch_is_a_value_error():
    with pytest.raises(ValueError):
        demo_view.uplinks(b"\xa1\x01")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 0xFFFFFF), st.integers(0, 2**32 - 1),
                          st.floats(-40, 80, allow_nan=False)), min_size=1, max_size=20))
def test_every_uplink_of_a_batch_becomes_one_line(ups):
    items = [_item("70B3D57ED0%06X" % n, fcnt, [{"n": "temperature", "v": t, "u": "Cel"}])
             for n, fcnt, t in ups]
    got = demo_view.uplinks(encode_batch("gw-1", 1, 1, items))
    assert [(u["eui"], u["lora"]["fcnt"]) for u in got] == [("70B3D57ED0%06X" % n, f)
                                                            for n, f, _ in ups]
    for u in got:
        line = demo_view.format_uplink(u)
        assert line.count("\n") == 0 and "temp " in line and "fcnt %d" % u["lora"]["fcnt"] in line


@pytest.mark.parametrize("argv, message", [
    (["demo", "--poles", "0"], "must be > 0"),
    (["demo", "--poles", "2", "--vm-poles", "3"], "more than --poles"),
    (["demo", "--duration", "soon"], "not a number"),
    (["demo", "--broker", "localhost:1883"], "mqtt://HOST:PORT"),
])
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    from sim.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


# ---- end to end, in a subprocess, with the real gateway ------------------------------------

needs_broker = pytest.mark.skipif(
    sim.broker.find_mosquitto() is None and sim.broker.BaseAuthPlugin is None,
    reason="neither mosquitto nor amqtt installed")


def _demo(*args, cwd=ROOT, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cwd == ROOT:
        env["PYTHONPATH"] = ROOT
    else:  # as a user runs it: installed (pip install -e .), from any directory
        env.pop("PYTHONPATH", None)
    return subprocess.Popen([sys.executable, "-m", "sim", "demo", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _installed_from_here(elsewhere):
    """True when `import sim` outside the repository finds this tree (pip install -e .)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    code = "import sim, os; print(os.path.dirname(sim.__file__))"
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                       text=True)
    return r.returncode == 0 and os.path.samefile(r.stdout.strip(), os.path.join(ROOT, "sim"))


def _number(out, label):
    m = re.search(r"%s\s+(\d+)" % re.escape(label), out)
    assert m, "no %r in the output:\n%s" % (label, out)
    return int(m.group(1))


def _distinct_delivered(out):
    """Data frames the forwarders pushed, a retransmission (same FCnt) counted once."""
    repeats = int(re.search(r"(\d+) of them retransmissions", out).group(1))
    return _number(out, "data frames delivered") - repeats


def _check_complete_run(out, err, code, vm_poles):
    assert code == 0, out + err
    assert "Traceback" not in out + err
    reading = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (pole|meter)-")
    lines = [ln for ln in out.splitlines() if reading.match(ln)]
    assert lines, out
    assert all("fcnt" in ln and "rssi" in ln and "via fwd-" in ln for ln in lines)
    assert any(ln.split()[2] == "meter-0001" and " Wh" in ln for ln in lines), out
    # the Modbus bus: 3 meters, each polled at least once, every poll at MQTT once; address 4
    # has no meter and only costs timeouts
    polls = [ln for ln in out.splitlines()
             if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  rs485-1\.\d ", ln)]
    assert {ln.split()[2] for ln in polls} == {"rs485-1.1", "rs485-1.2", "rs485-1.3"}, out
    assert all("V1 231.5 V" in ln and "import " in ln and "modbus rs485-1 address" in ln
               for ln in polls)
    assert _number(out, "modbus polls at MQTT") == len(polls)
    m = re.search(r"of (\d+) the gateway stored.*\((\d+) records still queued.*address 4 "
                  r"\(no meter\): (\d+) timeouts, 0 polls", out)
    assert m and int(m.group(1)) >= len(polls) and int(m.group(3)) >= 1, out
    if vm_poles:
        assert any(ln.split()[2] == "pole-0001*" for ln in lines)  # the VM pole reported
        assert "pole-0001 on the MicroPython VM: heap" in out and "0 crashes" in out
    distinct = _distinct_delivered(out)
    assert distinct > 0
    # every distinct frame the air delivered reached MQTT, once
    assert _number(out, "received at MQTT") == distinct == len(lines)
    assert _number(out, "joins accepted") >= 3 and "exit status 0" in out


@needs_broker
def test_demo_end_to_end_prints_every_delivered_reading_and_exits_0(tmp_path):
    vm = 1 if sim.mpvm.available() else 0
    cwd = str(tmp_path) if _installed_from_here(str(tmp_path)) else ROOT
    p = _demo("--poles", "3", "--duration", "1500", "--speed", "500", "--vm-poles", str(vm),
              cwd=cwd)
    out, err = p.communicate(timeout=180)
    _check_complete_run(out, err, p.returncode, vm)


@pytest.mark.skipif(sim.broker.BaseAuthPlugin is None, reason="amqtt not installed")
def test_demo_against_an_embedded_amqtt_broker_given_by_url():
    broker = sim.broker.Embedded().start()
    try:
        p = _demo("--poles", "3", "--duration", "1500", "--speed", "500", "--vm-poles", "0",
                  "--broker", broker.url)
        out, err = p.communicate(timeout=180)
    finally:
        broker.stop()
    assert "(external)" in out
    _check_complete_run(out, err, p.returncode, 0)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_broker
def test_ctrl_c_stops_the_demo_cleanly():
    p = _demo("--poles", "2", "--duration", "36000", "--speed", "300", "--vm-poles",
              "1" if sim.mpvm.available() else "0")
    out = []
    gateway_pid = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line)
        m = re.match(r"gateway: pid (\d+)", line)
        if m:
            gateway_pid = int(m.group(1))
        if re.match(r"\d{4}-\d\d-\d\d .* pole-", line):
            break  # readings are flowing
    assert gateway_pid and _alive(gateway_pid), "".join(out)
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=60)
    text = "".join(out) + rest
    assert p.returncode == 0, text + err
    assert "Traceback" not in text + err and "KeyboardInterrupt" not in text + err
    assert "(stopped early)" in text and "received at MQTT" in text
    assert not _alive(gateway_pid)  # the gateway was stopped (SIGTERM) and reaped


def test_a_city_that_cannot_be_built_is_a_one_line_error_without_leftovers(capsys):
    from sim.__main__ import main
    vm = "1" if sim.mpvm.available() else "0"
    assert main(["demo", "--poles", "40", "--forwarders", "1", "--vm-poles", vm]) == 1
    out = capsys.readouterr().out
    assert out.startswith("demo: pole-") and "out of range" in out


def test_a_broker_that_does_not_answer_is_a_one_line_error(capsys):
    from sim.__main__ import main
    port = sim.broker.free_port()  # nobody listens there
    assert main(["demo", "--vm-poles", "0", "--broker", "mqtt://127.0.0.1:%d" % port]) == 1
    out = capsys.readouterr().out
    assert "demo: cannot connect to the MQTT broker at mqtt://127.0.0.1:%d" % port in out


@pytest.mark.skipif(sim.broker.BaseAuthPlugin is None, reason="amqtt not installed")
def test_without_mosquitto_the_demo_runs_its_own_amqtt_broker(monkeypatch):
    import io
    from sim.demo import Demo
    monkeypatch.setattr(sim.broker, "find_mosquitto", lambda: None)
    out = io.StringIO()
    assert Demo(poles=3, duration=1200, speed=600, vm_poles=0, out=out).run() == 0
    text = out.getvalue()
    assert "(amqtt)" in text
    distinct = _distinct_delivered(text)
    assert distinct > 0 and _number(text, "received at MQTT") == distinct


def test_gateway_start_ignores_a_ready_file_left_by_a_killed_process(tmp_path):
    from sim.city import City
    from sim.demo import Gateway

    registry = tmp_path / "devices.toml"
    City(1, 1, ("127.0.0.1", 9), board_factory=lambda *a: _Inert(*a)).write_registry(str(registry))
    gw = Gateway(str(tmp_path), str(registry), "mqtt://127.0.0.1:9")
    with open(gw.ready, "w") as f:  # what a SIGKILLed gateway leaves behind
        json.dump({"udp_host": "127.0.0.1", "udp_port": 9, "pid": 1}, f)
    try:
        gw.start()
        with open(gw.ready) as f:
            info = json.load(f)
        assert info["pid"] == gw.proc.pid
        assert gw.addr == ("127.0.0.1", info["udp_port"]) and gw.addr[1] != 9
    finally:
        assert gw.stop() == 0


def test_gateway_config_takes_the_udp_port_and_batch_age(tmp_path):
    from gateway.config import load_config
    from sim.city import City
    from sim.demo import Gateway

    registry = tmp_path / "devices.toml"
    City(1, 1, ("127.0.0.1", 9), board_factory=lambda *a: _Inert(*a)).write_registry(str(registry))
    cfg = load_config(Gateway(str(tmp_path), str(registry), "mqtt://127.0.0.1:9", udp_port=17001,
                              max_batch_age_s=5).config)
    assert (cfg.udp_port, cfg.max_batch_age_s) == (17001, 5.0)
    cfg = load_config(Gateway(str(tmp_path), str(registry), "mqtt://127.0.0.1:9").config)
    assert (cfg.udp_port, cfg.max_batch_age_s) == (0, 0.5)


class _Inert:
    """A board that never transmits: enough to lay out a city and write its registry."""

    def __init__(self, name, dev_eui, cfg, x, y):
        from sim.sim_radio import SimRadio
        self.name, self.dev_eui, self.cfg, self.x, self.y = name, dev_eui, cfg, x, y
        self.radio = SimRadio(name)

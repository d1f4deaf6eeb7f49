"""The pole firmware (MAC + PoleApp + drivers) on the real MicroPython VM, with the fake machine
and the chip models mounted beside it; CPython plays the network server and checks every byte.

The join-accept does not depend on the DevNonce, and a fresh flash makes the first DevNonce 0,
so CPython can prepare the join-accept and a dim command for the session the VM will derive;
the VM's radio plays them into RX1 and prints every frame the device transmitted.
"""

import datetime
import json

import pytest

import sim.mpvm
from protocol import payload
from protocol.lorawan import frame, mac, network_side, session
from protocol.lorawan import join as lw_join
from tests.firmware.scripted_network import APP_KEY, CFG, DEV_EUI

pytestmark = pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")

MOUNTS = ("protocol", "firmware", (sim.mpvm.ROOT + "/sim/fakes", "/lib/sim/fakes"),
          (sim.mpvm.ROOT + "/sim/devices", "/lib/sim/devices"),
          (sim.mpvm.ROOT + "/tests/firmware/vmlib", "/lib/vmlib"))

# the board's clock, a radio that plays the join-accept and one downlink into RX1, and a loop
# that polls the app (and the radio's events) until a time; the script after it sets `app` and
# advance(ms), which moves the chip models on
VM_NETWORK = """
import binascii, gc, json
from sim.fakes import machine, esp32
from protocol.lorawan import airtime
from firmware import main

ACCEPT = binascii.unhexlify(%(accept)r)
DOWN = binascii.unhexlify(%(down)r)
T = [0]
machine.set_clock(lambda: T[0])

class Radio:
    def __init__(self):
        self.sent = []
        self.ends = []
        self.ev = None
        self.air = []
        self.script = [(ACCEPT, 5000), (DOWN, 1000)]
    def rssi(self, f):
        return -120
    def transmit(self, f, sf, bw, p, data):
        end = T[0] + (airtime.time_on_air_us(len(data), sf, bw) + 999) // 1000
        self.sent.append(binascii.hexlify(bytes(data)).decode())
        self.ends.append(end)
        self.ev = (end, ("tx_done",))
        if self.script:
            phy, delay = self.script.pop(0)
            self.air.append((end + delay, f, sf, phy))
    def receive(self, f, sf, bw, timeout):
        for a in self.air:
            if a[1] == f and a[2] == sf and T[0] <= a[0] <= T[0] + timeout:
                self.air.remove(a)
                toa = airtime.time_on_air_us(len(a[3]), sf, bw, crc=False)
                self.ev = (a[0] + (toa + 999) // 1000, ("rx", a[3], -60, 7))
                return
        self.ev = (T[0] + timeout, ("rx_timeout",))
    def poll(self):
        if self.ev is not None and T[0] >= self.ev[0]:
            e = self.ev[1]
            self.ev = None
            return e
        return None
    def standby(self):
        self.ev = None

radio = Radio()
cfg = json.loads(%(cfg)r)
def sleep_ms(ms):  # the drivers' measurement waits take board time, as on the device
    T[0] += ms

def step(until):
    polls = 0
    while T[0] < until:
        wake = app.poll(T[0])
        polls += 1
        nxt = wake
        if radio.ev is not None and radio.ev[0] < nxt:
            nxt = radio.ev[0]
        if nxt <= T[0]:
            nxt = T[0] + 1
        advance(nxt - T[0])
        T[0] = nxt
    return polls
"""

SCRIPT = VM_NETWORK + """
from sim.devices.veml7700 import VEML7700
from sim.devices.sht3x import SHT3x
from sim.devices.lis3dh import LIS3DH
from sim.devices.bl0942 import BL0942

machine.bus(0).attach(0x10, VEML7700(lux=5.0))
machine.bus(0).attach(0x44, SHT3x(temperature=12.5, humidity=70.0))
machine.bus(0).attach(0x18, LIS3DH(tilt_deg=0.5))
meter = machine.uart(2).attach(BL0942(voltage=230.0, current=0.27, power=60.0))
machine.drive(27, 0)

app = main.create(machine, esp32, cfg, radio, sleep_ms, rng=lambda n: 0)
boot_level = machine.pwm_duty(25)

def advance(ms):
    k = (machine.pwm_duty(25) or 0) / 65535  # the lamp draws what its level asks
    meter.power, meter.current = 60.0 * k, 0.27 * k
    meter.advance(ms / 1000)

polls = step(40000)
rtc_after_answer = machine.RTC().datetime()
t_after_answer = T[0]
# heap per poll on the VM, once joined and idle between samples (10 s apart)
gc.collect()
a0 = gc.mem_alloc()
n = 0
t = T[0]
while n < 50:
    app.poll(t)
    t += 1
    n += 1
idle = (gc.mem_alloc() - a0) // n
gc.collect()
a0 = gc.mem_alloc()
T[0] += 10000
app.poll(T[0])
sample = gc.mem_alloc() - a0
gc.collect()
print(json.dumps({"sent": radio.sent, "boot_duty": boot_level, "duty": machine.pwm_duty(25),
                  "state": app.mac.state, "polls": polls, "idle_poll_bytes": idle,
                  "sample_poll_bytes": sample, "heap_used": gc.mem_alloc(), "ends": radio.ends,
                  "rtc": rtc_after_answer, "t_rtc": t_after_answer}))
"""


def test_pole_joins_reports_and_obeys_a_command_on_micropython():
    join_nonce, net_id, dev_addr = 0x0A1B2C, 0x000013, 0x2601ABCD
    accept = network_side.build_join_accept(APP_KEY, join_nonce, net_id, dev_addr, 0, 0, 1,
                                            backend="cryptography")
    nwk, app = lw_join.derive_session_keys(APP_KEY, join_nonce, net_id, 0, backend="cryptography")
    dport, ddata = payload.encode_downlink("pole", "dim", {"seq": 5, "level": 40})
    # the report asks the time (the VM's RTC reads 2000): the network's answer is the UTC at
    # the end of that uplink
    utc_at_report_end = 1795845600000  # 2026-11-28T06:00:00.000Z
    ans = mac.encode_commands([network_side.device_time_ans(utc_at_report_end)], False)
    down = session.build_data_frame(frame.UNCONFIRMED_DOWN, dev_addr, 0, dport, ddata, nwk, app,
                                    fopts=ans, backend="cryptography")
    cfg = dict(CFG, report_interval_s=300, sample_interval_s=10)
    lines = sim.mpvm.run(SCRIPT % {"accept": accept.hex(), "down": down.hex(),
                                   "cfg": json.dumps(cfg)}, mounts=MOUNTS).strip().split("\n")
    out = json.loads(lines[-1])  # after the firmware's own prints
    assert any(line.startswith("pole: wall clock set from the network") for line in lines)
    assert out["boot_duty"] == 65535  # the lamp was on before the first poll
    sent = [bytes.fromhex(h) for h in out["sent"]]
    assert len(sent) == 3, out
    jr = network_side.open_join_request(sent[0], APP_KEY, backend="cryptography")
    assert jr.mic_ok and jr.dev_nonce == 0 and jr.dev_eui == DEV_EUI
    report = session.open_data_frame(sent[1], nwk, app, None, backend="cryptography")
    assert report.mic_ok and report.fcnt == 0 and report.frame.fport == 10
    assert mac.decode_commands(report.frame.fopts, True) == [{"cid": 13, "name": "DeviceTimeReq"}]
    # the VM set its RTC from the answer, plus the time since the report's end
    y, mo, d, _, h, mi, sec, us = out["rtc"]
    rtc_ms = round(datetime.datetime(y, mo, d, h, mi, sec, us, tzinfo=datetime.timezone.utc)
                   .timestamp() * 1000)
    assert abs(rtc_ms - (utc_at_report_end + out["t_rtc"] - out["ends"][1])) <= 10
    f = payload.decode_uplink(10, report.payload)["fields"]
    assert f["status/lamp_on"] and f["status/dark"] and f["dim_level"] == 100
    assert f["temperature"] == 12.5 and f["humidity"] == 70.0
    assert abs(f["ambient_light"] - 5.0) <= 0.1 and abs(f["lamp_power"] - 60.0) <= 0.1
    ack = session.open_data_frame(sent[2], nwk, app, 0, backend="cryptography")
    assert ack.mic_ok and ack.fcnt == 1 and ack.frame.fport == 12
    a = payload.decode_uplink(12, ack.payload)["fields"]
    assert (a["port"], a["seq"], a["result"]) == (50, 5, "ok")
    assert out["duty"] == round(40 * 65535 / 100) and out["state"] == "idle"
    print("VM: %d polls to join and report; heap per idle poll %d B, per sample poll %d B, "
          "in use %d B" % (out["polls"], out["idle_poll_bytes"], out["sample_poll_bytes"],
                           out["heap_used"]))


METER_SCRIPT = VM_NETWORK + """
from sim.devices.atm90e32 import ATM90E32 as Chip

from vmlib.uart_line import Line

model = machine.spi(2).attach(5, Chip(voltage=(230.0, 230.0, 230.0), current=(10.0, 0.0, 0.0)))
line = machine.uart(1).attach(Line())
app = main.create(machine, esp32, cfg, radio, sleep_ms, rng=lambda n: 0)

def advance(ms):
    model.current[0] = 10.0 if machine.level(26) else 0.0  # the relay feeds the household
    model.advance(ms / 1000)

polls = step(60000)
line.inbox = binascii.unhexlify(%(modbus)r)
t = 0
for i in range(400):
    t += 500
    app.slave.poll(t)
gc.collect()
a0 = gc.mem_alloc()
n = 0
while n < 50:
    app.poll(T[0])
    n += 1
idle = (gc.mem_alloc() - a0) // n
gc.collect()
a0 = gc.mem_alloc()
T[0] += 1000
model.advance(1.0)
app.poll(T[0])
step_bytes = gc.mem_alloc() - a0
print(json.dumps({"sent": radio.sent, "relay": machine.level(26), "polls": polls,
                  "modbus": binascii.hexlify(line.out).decode(), "faults": app.hw.faults,
                  "served": app.hw.register.import_wh(), "live": app.hw.register.live()[0],
                  "idle_poll_bytes": idle, "step_poll_bytes": step_bytes,
                  "heap_used": gc.mem_alloc()}))
"""


def test_meter_joins_reports_obeys_a_relay_command_and_serves_modbus_on_micropython():
    from protocol.modbus import pdu as P
    from protocol.modbus import master as MA
    from protocol.modbus import registers as M
    from protocol.modbus import rtu as R

    join_nonce, net_id, dev_addr = 0x0A1B2D, 0x000013, 0x2601ABCE
    accept = network_side.build_join_accept(APP_KEY, join_nonce, net_id, dev_addr, 0, 0, 1,
                                            backend="cryptography")
    nwk, app = lw_join.derive_session_keys(APP_KEY, join_nonce, net_id, 0, backend="cryptography")
    dport, ddata = payload.encode_downlink("meter", "relay", {"seq": 5, "action": "open"})
    down = session.build_data_frame(frame.UNCONFIRMED_DOWN, dev_addr, 0, dport, ddata, nwk, app,
                                    backend="cryptography")
    cfg = dict(CFG, kind="meter", report_interval_s=300, energy_step_wh=2)
    modbus = R.encode_frame(1, MA.encode_request(P.ReadRequest(4, 0x1000, 4)))
    lines = sim.mpvm.run(METER_SCRIPT % {"accept": accept.hex(), "down": down.hex(),
                                         "cfg": json.dumps(cfg), "modbus": modbus.hex()},
                         mounts=MOUNTS).strip().split("\n")
    out = json.loads(lines[-1])
    assert out["faults"] == []
    sent = [bytes.fromhex(h) for h in out["sent"]]
    assert network_side.open_join_request(sent[0], APP_KEY, backend="cryptography").mic_ok
    frames = [session.open_data_frame(p, nwk, app, None, backend="cryptography") for p in sent[1:]]
    assert all(f.mic_ok for f in frames)
    by_port = {}
    for f in frames:
        by_port.setdefault(f.frame.fport, []).append(payload.decode_uplink(f.frame.fport,
                                                                           f.payload)["fields"])
    report = by_port[20][0]
    assert report["voltage"] == 230.0 and abs(report["active_power"] - 2300) <= 23
    assert report["status/relay_closed"] and report["import_energy"] <= out["served"]
    ack = by_port[22][0]
    assert (ack["port"], ack["seq"], ack["result"]) == (70, 5, "ok")
    assert out["relay"] == 0 and not by_port[21][0]["status/relay_closed"]  # opened, told at once
    # Modbus serves the committed Wh, a step (2 Wh) behind what the chip counted at most; the
    # household drew 2.3 kW until the relay opened, ~6 s after the join
    address, pdu = R.decode_frame(bytes.fromhex(out["modbus"]))
    served = M.decode_u64(MA.decode_response(pdu).registers)
    assert address == 1 and served == out["served"] > 0
    assert 0 <= out["live"] // 1000 - served < 2
    print("VM meter: %d polls in 60 s; heap per idle poll %d B, per metering-step poll %d B, "
          "in use %d B" % (out["polls"], out["idle_poll_bytes"], out["step_poll_bytes"],
                           out["heap_used"]))


RUN_METER_SCRIPT = """
import binascii, time
from sim.fakes import machine, esp32
from sim.devices.atm90e32 import ATM90E32 as Chip
from firmware import main, meter_loop

from vmlib.uart_line import Line

class Reset(Exception):
    pass

def reset():
    raise Reset()

machine.spi(2).attach(5, Chip(current=(10.0, 0.0, 0.0)))
line = machine.uart(1).attach(Line())
app = main.create(machine, esp32, {"kind": "meter", "interfaces": "modbus"}, None, time.sleep_ms,
                  ticks_ms=time.ticks_ms)
good = app.poll
calls = [0]

def poll(now):  # a bug that strikes after a few good polls
    calls[0] += 1
    if calls[0] > 2:
        raise ValueError("bug %%d" %% calls[0])
    return good(now)

app.poll = poll
t0 = time.ticks_ms()
asked = []

def sleep_us(us):  # the master asks while the app is failing, 1.5 s in
    time.sleep_us(us)
    if not asked and time.ticks_diff(time.ticks_ms(), t0) >= 1500:
        asked.append(1)
        line.inbox = binascii.unhexlify(%r)

try:
    meter_loop.run_meter(app, time.ticks_ms, time.ticks_us, sleep_us, reset)
except Reset:
    print("reset after", calls[0], "polls;", binascii.hexlify(line.out).decode())
"""


def test_run_meter_keeps_modbus_serving_while_the_app_fails_then_resets_on_micropython():
    from protocol.modbus import pdu as P
    from protocol.modbus import master as MA
    from protocol.modbus import registers as M
    from protocol.modbus import rtu as R

    req = R.encode_frame(1, MA.encode_request(P.ReadRequest(4, 0x2000, 7)))
    out = sim.mpvm.run(RUN_METER_SCRIPT % req.hex(), mounts=MOUNTS)
    assert out.count("main: meter poll") == 3  # each failure logged
    last = out.strip().split("\n")[-1].split()
    assert last[:4] == ["reset", "after", "5", "polls;"]  # 2 good, then 3 failures
    address, pdu = R.decode_frame(bytes.fromhex(last[4]))
    assert address == 1 and M.decode_block(0x2000, MA.decode_response(pdu).registers)["serial"] == 0

"""The MicroPython truth: a device on the real MicroPython VM and a gateway on CPython speak the
same bytes. The VM (pure-Python AES, MicroPython's ints and struct) joins, sends a pole and a
meter report, and opens a downlink; CPython (the `cryptography` backend) plays the network
server and checks every byte in both directions.
"""

import json

import pytest

import sim.mpvm
from protocol import payload
from protocol.lorawan import frame, network_side, session
from protocol.lorawan import join as lw_join

pytestmark = pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
DEV_EUI = bytes.fromhex("0004a30b001c0530")

POLE = {"dim_level": 60, "lamp_power": 41.3, "lamp_energy": 16777215 + 5, "ambient_light": 3,
        "temperature": -7, "humidity": 81.5}
METER = {"import_energy": 4294967295 + 12, "export_energy": 77, "active_power": -1530,
         "voltage": 231.4, "power_factor": -0.93, "frequency": 49.98}

DEVICE = """
import binascii, json
from protocol import payload
from protocol.lorawan import frame, security, session
from protocol.lorawan import join as lw_join
h = binascii.hexlify
app_key = binascii.unhexlify(%(app_key)r)
join_eui = binascii.unhexlify(%(join_eui)r); dev_eui = binascii.unhexlify(%(dev_eui)r)
out = {}
out["join_request"] = h(lw_join.build_join_request(join_eui, dev_eui, 4242, app_key, backend="pure"))
acc = lw_join.open_join_accept(binascii.unhexlify(%(join_accept)r), app_key, backend="pure")
out["accept"] = [acc.mic_ok, acc.join_nonce, acc.net_id, acc.dev_addr]
nwk, app = lw_join.derive_session_keys(app_key, acc.join_nonce, acc.net_id, 4242, backend="pure")
out["keys"] = [h(nwk), h(app)]
fport, data = payload.encode_uplink("pole", "report", json.loads(%(pole)r))
out["pole"] = h(session.build_data_frame(frame.UNCONFIRMED_UP, acc.dev_addr, 65537, fport, data, nwk, app, backend="pure"))
fport, data = payload.encode_uplink("meter", "report", json.loads(%(meter)r))
out["meter"] = h(session.build_data_frame(frame.CONFIRMED_UP, acc.dev_addr, 65538, fport, data, nwk, app, backend="pure"))
dn = session.open_data_frame(binascii.unhexlify(%(downlink)r), nwk, app, last_fcnt=None, backend="pure")
out["downlink"] = [dn.mic_ok, dn.frame.fport, dn.frame.ack, payload.decode_downlink(dn.frame.fport, dn.payload)]
for k in out:
    if isinstance(out[k], bytes):
        out[k] = out[k].decode()
out["keys"] = [k.decode() for k in out["keys"]]
print(json.dumps(out))
"""


def test_device_on_micropython_and_gateway_on_cpython_agree():
    join_nonce, net_id, dev_addr = 0x0A1B2C, 0x000013, 0x2601ABCD
    accept = network_side.build_join_accept(APP_KEY, join_nonce, net_id, dev_addr, 0, 3, 1, backend="cryptography")
    nwk, app = lw_join.derive_session_keys(APP_KEY, join_nonce, net_id, 4242, backend="cryptography")
    dport, ddata = payload.encode_downlink("pole", "dim", {"seq": 9, "level": 35, "fade": 12})
    downlink = session.build_data_frame(frame.UNCONFIRMED_DOWN, dev_addr, 3, dport, ddata, nwk, app, ack=True)

    script = DEVICE % {
        "app_key": APP_KEY.hex(), "join_eui": JOIN_EUI.hex(), "dev_eui": DEV_EUI.hex(),
        "join_accept": accept.hex(), "pole": json.dumps(POLE), "meter": json.dumps(METER),
        "downlink": downlink.hex(),
    }
    vm = json.loads(sim.mpvm.run(script))

    # Join: the VM's join-request is byte-identical to CPython's and verifies on the gateway side.
    expected_jr = lw_join.build_join_request(JOIN_EUI, DEV_EUI, 4242, APP_KEY, backend="cryptography")
    assert vm["join_request"] == expected_jr.hex()
    jr = network_side.open_join_request(bytes.fromhex(vm["join_request"]), APP_KEY, backend="cryptography")
    assert jr.mic_ok and jr.dev_nonce == 4242 and jr.dev_eui == DEV_EUI
    assert vm["accept"] == [True, join_nonce, net_id, dev_addr]
    assert vm["keys"] == [nwk.hex(), app.hex()]

    # Uplinks built on the VM open on the gateway, counters past 65535 rebuilt, fields intact.
    pole = session.open_data_frame(bytes.fromhex(vm["pole"]), nwk, app, last_fcnt=65530)
    assert pole.mic_ok and pole.fcnt == 65537 and pole.fcnt_status == "ok"
    cp_fport, cp_data = payload.encode_uplink("pole", "report", POLE)
    assert pole.frame.fport == cp_fport and pole.payload == cp_data
    fields = payload.decode_uplink(pole.frame.fport, pole.payload)["fields"]
    assert fields["dim_level"] == 60
    assert fields["lamp_energy"] == (16777215 + 5) % (1 << 24)  # cumulative, modulo the wire width

    meter = session.open_data_frame(bytes.fromhex(vm["meter"]), nwk, app, last_fcnt=65537)
    assert meter.mic_ok and meter.fcnt == 65538 and meter.frame.confirmed
    assert meter.payload == payload.encode_uplink("meter", "report", METER)[1]
    mf = payload.decode_uplink(meter.frame.fport, meter.payload)["fields"]
    assert mf["active_power"] == -1530 and mf["export_energy"] == 77

    # Downlink built by the gateway opens on the VM.
    mic_ok, fport, ack, decoded = vm["downlink"]
    assert mic_ok is True and fport == dport and ack is True
    assert decoded == json.loads(json.dumps(payload.decode_downlink(dport, ddata)))
    assert decoded["fields"]["level"] == 35 and decoded["fields"]["seq"] == 9

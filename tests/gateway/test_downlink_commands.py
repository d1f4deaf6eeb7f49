"""Operator commands: JSON parsing and checks, the per-device queue, and the class-A delivery
after the device's next uplink over real UDP (ForwarderServer in this process)."""

import asyncio
import json

import pytest
from hypothesis import given, strategies as st

from gateway.commands.subscriber import CommandError, parse_command
from gateway.lorawan.device_queue import AppDownlink, DeviceQueue, DeviceQueueFull
from gateway.lorawan.forwarders import ForwarderServer
from protocol import gwmp, payload
from protocol.lorawan import frame
from protocol.lorawan.region import EU868
from protocol.lorawan.session import build_data_frame, open_data_frame
from tests.gateway.test_downlink import joined
from tests.gateway.test_forwarders import GW_A, NET_ID, POLE, FakeForwarder, env, rxpk, run

__all__ = ["env"]


def cmd(**kw):
    return json.dumps(kw).encode()


def test_parse_named_and_raw_commands(env):
    reg, _ = env
    eui, d = parse_command(cmd(dev_eui=POLE.hex(), command="dim", fields={"seq": 7, "level": 50}),
                           reg, EU868)
    assert eui == POLE and d.label == "dim"
    assert (d.fport, d.payload) == payload.encode_downlink("pole", "dim", {"seq": 7, "level": 50})
    eui, d = parse_command(cmd(dev_eui="70:b3:d5:7e:d0:00:12:34", fport=99, data="01ff"), reg, EU868)
    assert (eui, d.fport, d.payload, d.label) == (POLE, 99, b"\x01\xff", "fport 99")


@pytest.mark.parametrize("body,needle", [
    (b"{", "not JSON"),
    (b"[1]", "not a JSON object"),
    (cmd(dev_eui="0000000000000000", command="dim"), "not in the registry"),
    (cmd(dev_eui=POLE.hex(), command="relay", fields={}), "relay"),  # a meter command
    (cmd(dev_eui=POLE.hex(), command="dim", fields={"level": 101}), "dim"),
    (cmd(dev_eui=POLE.hex(), command="dim", fields=[1]), "expected"),
    (cmd(dev_eui=POLE.hex(), fport=0, data="00"), "fport must be 1..223"),
    (cmd(dev_eui=POLE.hex(), fport=50, data="zz"), "not hex"),
    (cmd(dev_eui=POLE.hex(), fport=50, data="00" * 52), "do not fit the RX2 data rate (51 bytes)"),
    (cmd(dev_eui=POLE.hex()), 'needs "command"'),
])
def test_bad_commands_are_refused_with_a_reason(env, body, needle):
    with pytest.raises(CommandError, match=None) as ei:
        parse_command(body, env[0], EU868)
    assert needle in str(ei.value)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_refused(body):
    from gateway.lorawan.registry import Registry
    try:
        parse_command(body, Registry([]), EU868)
    except CommandError:
        pass
    else:
        raise AssertionError("an empty registry accepts nothing")


def test_device_queue_order_bound_and_requeue():
    q = DeviceQueue(max_per_device=2)
    a, b, c = (AppDownlink(50, bytes([i])) for i in range(3))
    assert q.push(POLE, a) == 1 and q.push(POLE, b) == 2
    with pytest.raises(DeviceQueueFull):
        q.push(POLE, c)
    with pytest.raises(ValueError):
        q.push(POLE, AppDownlink(0, b""))
    assert q.pop(POLE) is a and q.pending(POLE) == 1
    q.push_front(POLE, a)
    assert [q.pop(POLE), q.pop(POLE), q.pop(POLE)] == [a, b, None] and len(q) == 0
    assert q.counters == {"queued": 2, "sent": 0, "requeued": 1, "refused": 1}


def test_commands_go_out_after_the_next_uplink_and_survive_a_refusal(env):
    reg, store = env

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, lambda r: None, dedup_window_s=0.1)
        srv.app_downlinks = q = DeviceQueue()
        port = await srv.start()
        a = FakeForwarder(GW_A, port)
        try:
            keys = await joined(srv, a)
            dim = payload.encode_downlink("pole", "dim", {"seq": 1, "level": 30})
            cfg = payload.encode_downlink("pole", "config", {"seq": 2, "report_interval": 600})
            q.push(POLE, AppDownlink(*dim, "dim"))
            q.push(POLE, AppDownlink(*cfg, "config"))

            def up(fcnt, mtype=frame.UNCONFIRMED_UP):
                port_, body = payload.encode_uplink("pole", "report", {})
                return build_data_frame(mtype, keys[0], fcnt, port_, body, keys[1], keys[2])

            # 1st uplink: dim in RX1 with FPending; refused in RX1 and RX2 -> back in the queue
            await a.push([rxpk(up(0), 10_000, 5.0)])
            r1 = await a.recv()
            o = open_data_frame(r1.txpk.data, keys[1], keys[2])
            assert o.mic_ok and (o.frame.fport, o.payload) == dim and o.frame.fpending
            assert not o.frame.ack and r1.txpk.tmst == 1_010_000
            a.send(gwmp.TxAck(r1.token, GW_A, "TOO_EARLY").encode())
            r2 = await a.recv()
            assert r2.txpk.freq_hz == 869_525_000 and r2.txpk.data == r1.txpk.data
            a.send(gwmp.TxAck(r2.token, GW_A, "COLLISION_PACKET").encode())
            await asyncio.sleep(0.05)
            assert q.pending(POLE) == 2 and q.counters["requeued"] == 1
            # 2nd uplink (confirmed): dim again, with ACK, a new FCntDown
            await a.push([rxpk(up(1, frame.CONFIRMED_UP), 20_000, 5.0)])
            r3 = await a.recv()
            o = open_data_frame(r3.txpk.data, keys[1], keys[2])
            assert (o.frame.fport, o.payload, o.frame.ack, o.frame.fpending, o.fcnt) == (*dim, True, True, 1)
            a.send(gwmp.TxAck(r3.token, GW_A).encode())
            # 3rd uplink: config, nothing more pending
            await a.push([rxpk(up(2), 30_000, 5.0)])
            r4 = await a.recv()
            o = open_data_frame(r4.txpk.data, keys[1], keys[2])
            assert (o.frame.fport, o.payload, o.frame.fpending) == (*cfg, False)
            assert payload.decode_downlink(o.frame.fport, o.payload)["fields"]["report_interval"] == 600
            a.send(gwmp.TxAck(r4.token, GW_A).encode())
            # 4th uplink: nothing to say
            await a.push([rxpk(up(3), 40_000, 5.0)])
            await a.nothing(0.2)
            assert q.counters["sent"] == 2 and len(q) == 0
            assert srv.counters["downlink-rx1"] == 3 and srv.counters["downlink-failed"] == 1
        finally:
            await srv.stop()
            a.close()

    run(main())


def test_operator_guide_command_examples_parse_to_the_same_downlink(env):
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "operator-guide.md")) as f:
        section = f.read().split("## Commands to devices")[1].split("##")[0]
    import json

    from gateway.commands.subscriber import ENVELOPE
    examples = [json.loads(line) for line in section.splitlines()
                if line.strip().startswith('{"id"') and '"dev_eui"' in line]
    assert len(examples) == 2
    (e1, named), (e2, raw) = (parse_command({k: v for k, v in x.items() if k not in ENVELOPE},
                                            env[0], EU868) for x in examples)
    assert e1 == e2 == POLE and (named.fport, named.payload) == (raw.fport, raw.payload)

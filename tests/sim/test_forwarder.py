"""The emulated packet forwarder against a real UDP socket playing the server (protocol.gwmp):
PUSH_DATA content, PULL_DATA keep-alives and stat, PULL_RESP -> TX_ACK and the downlink on the
air at tmst into the board's RX1 window, TOO_LATE / TOO_EARLY, CRC-bad frames, unacked pushes."""

import asyncio
import pytest

from protocol import gwmp
from protocol.lorawan import airtime
from sim.air import Air
from sim.board import LocalBoard
from sim.clock import VirtualClock
from sim.forwarder import Forwarder
from sim.radio import Medium, noise_floor_dbm, path_loss_db
from tests.sim.standin import StandInApp

FWD_EUI = "AA555A0000000001"


class Server(asyncio.DatagramProtocol):
    """Plays the network server: acks, records, and answers uplinks with `respond(rxpk)`."""

    def __init__(self, ack_push=True, respond=None):
        self.ack_push = ack_push
        self.respond = respond
        self.msgs = []  # (msg, addr)
        self.pull_addr = None
        self.token = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        msg = gwmp.decode(data)
        self.msgs.append((msg, addr))
        if isinstance(msg, gwmp.PullData):
            self.pull_addr = addr
            self.transport.sendto(msg.ack().encode(), addr)
        elif isinstance(msg, gwmp.PushData):
            if self.ack_push:
                self.transport.sendto(msg.ack().encode(), addr)
            for rx in msg.rxpk:
                if self.respond and rx.crc_ok and self.pull_addr:
                    txpk = self.respond(rx)
                    if txpk is not None:
                        self.token += 1
                        self.transport.sendto(gwmp.PullResp(self.token, txpk).encode(),
                                              self.pull_addr)

    def of(self, kind):
        return [m for m, _ in self.msgs if isinstance(m, kind)]

    def rxpk(self):
        return [r for m in self.of(gwmp.PushData) for r in m.rxpk]


async def setup(server, boards=(("b1", 0.0, 0.0, {}),), grace_s=10.0, **fwd_kw):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server,
                                                       local_addr=("127.0.0.1", 0))
    addr = transport.get_extra_info("sockname")
    clock = VirtualClock(speed=None, grace_s=grace_s)
    air = Air(Medium(seed=1), clock)
    for i, (name, x, y, cfg) in enumerate(boards):
        air.add_board(LocalBoard(name, "70B3D57ED00000%02X" % (i + 1), cfg, x=x, y=y,
                                 app_factory=StandInApp, strict=True))
    fwd = Forwarder(FWD_EUI, 100.0, 0.0, clock, addr, **fwd_kw)
    air.add_forwarder(fwd)
    await fwd.start()
    for _ in range(100):  # the PULL_DATA opened the downlink path
        if server.pull_addr:
            break
        await asyncio.sleep(0.01)
    air.boot_all(0)
    return clock, air, fwd, transport


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_push_data_carries_the_frame_with_virtual_tmst_and_time():
    async def main():
        server = Server()
        clock, air, fwd, tr = await setup(server)
        await air.run_until(500_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return clock, air, fwd, server

    clock, air, fwd, server = run(main())
    (up,) = air.uplinks
    (rx,) = server.rxpk()
    assert rx.data == up["phy"] and len(rx.data) == 15
    assert rx.tmst == up["end_us"] % 2**32
    assert up["t_us"] == 7000  # booted at 0: the radio driver's boot (reset pulse, 6 ms to SPI)
    assert up["end_us"] == up["t_us"] + airtime.time_on_air_us(15, 7, 125000)
    assert rx.time == clock.utc_iso(up["end_us"])
    assert rx.freq_hz == 868100000 and rx.datr == "SF7BW125" and rx.codr == "4/5"
    assert rx.stat == 1
    rssi = 14 - path_loss_db(100.0)  # LoRaSim path loss: -122 dBm at 100 m
    assert rx.rssi == round(rssi)
    assert rx.lsnr == round(rssi - noise_floor_dbm(125000), 1) == -4.7
    assert up["received"] == {FWD_EUI: (round(rssi, 1), -4.7)}
    push = server.of(gwmp.PushData)[0]
    assert push.gateway_eui == bytes.fromhex(FWD_EUI)
    assert fwd.counters["push_sent"] >= 1
    assert fwd.counters["push_acked"] == fwd.counters["push_sent"]


def test_pull_resp_is_acked_and_the_downlink_lands_in_rx1():
    down = bytes.fromhex("60" + "11" * 15)

    def respond(rx):
        return gwmp.Txpk.for_class_a((rx.tmst + 1_000_000) & 0xFFFFFFFF, rx.freq_hz, rx.datr,
                                     "4/5", 14, down)

    async def main():
        server = Server(respond=respond)
        clock, air, fwd, tr = await setup(server)
        await air.run_until(3_000_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return clock, air, fwd, server

    clock, air, fwd, server = run(main())
    (ack,) = server.of(gwmp.TxAck)
    assert ack.ok and ack.gateway_eui == bytes.fromhex(FWD_EUI)
    # TX_ACK goes out of the downstream socket, the one PULL_DATA came from
    assert [a for m, a in server.msgs if isinstance(m, gwmp.TxAck)][0] == server.pull_addr
    board = air.boards["b1"]
    rx = [(t, e) for t, e in board.app.events if e[0] == "rx"]
    assert len(rx) == 1
    t, ev = rx[0]
    assert ev[1] == down
    end_up = air.uplinks[0]["end_us"]
    assert t == -(-(end_up + 1_000_000 + airtime.time_on_air_us(16, 7, 125000, crc=False))
                  // 1000)
    assert fwd.counters["tx_ok"] == 1 and fwd.counters["tx_sent"] == 1
    assert clock.counters["released"] == 1 and clock.counters["expired"] == 0
    assert air.counters["downlinks_delivered"] == 1


@pytest.mark.parametrize("offset_us, error", [(-1000, "TOO_LATE"), (600_000_000, "TOO_EARLY")])
def test_pull_resp_outside_the_schedulable_range_is_refused(offset_us, error):
    def respond(rx):
        return gwmp.Txpk.for_class_a((rx.tmst + offset_us) & 0xFFFFFFFF, rx.freq_hz, rx.datr,
                                     "4/5", 14, b"\x60" + bytes(15))

    async def main():
        server = Server(respond=respond)
        clock, air, fwd, tr = await setup(server, grace_s=0.3)  # refused: nothing releases it
        await air.run_until(3_000_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return air, fwd, server

    air, fwd, server = run(main())
    (ack,) = server.of(gwmp.TxAck)
    assert ack.error == error
    assert fwd.counters["tx_" + error] == 1 and "tx_sent" not in fwd.counters
    events = [e[0] for _, e in air.boards["b1"].app.events]
    assert events == ["tx_done", "rx_timeout"]


def test_pull_resp_after_the_grace_is_too_late():
    # the server answers 0.3 s (real) after the push; the barrier only holds 0.05 s
    def respond(rx):
        return gwmp.Txpk.for_class_a((rx.tmst + 1_000_000) & 0xFFFFFFFF, rx.freq_hz, rx.datr,
                                     "4/5", 14, b"\x60" + bytes(15))

    class Slow(Server):
        def datagram_received(self, data, addr):
            msg = gwmp.decode(data)
            if isinstance(msg, gwmp.PushData) and msg.rxpk:
                asyncio.get_running_loop().call_later(0.3, super().datagram_received, data, addr)
            else:
                super().datagram_received(data, addr)

    async def main():
        server = Slow(respond=respond)
        clock, air, fwd, tr = await setup(server, grace_s=0.05)
        await air.run_until(3_000_000)
        await asyncio.sleep(0.4)
        await fwd.stop()
        tr.close()
        return clock, fwd, server

    clock, fwd, server = run(main())
    assert [a.error for a in server.of(gwmp.TxAck)] == ["TOO_LATE"]
    assert clock.counters["expired"] == 1


def test_collided_frames_are_pushed_as_crc_errors():
    boards = (("b1", 0.0, 0.0, {}), ("b2", 200.0, 0.0, {}))  # same instant, SF, channel

    async def main():
        server = Server()
        clock, air, fwd, tr = await setup(server, boards)
        await air.run_until(500_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return air, fwd, server

    air, fwd, server = run(main())
    rx = server.rxpk()
    assert sorted(r.stat for r in rx) == [-1, -1]
    assert {r.data for r in rx}.isdisjoint({u["phy"] for u in air.uplinks})
    assert [u["lost"] for u in air.uplinks] == [{FWD_EUI: "collision"}] * 2
    assert fwd.counters["rx_bad"] == 2


def test_keepalives_stats_and_unacked_pushes_are_counted():
    async def main():
        server = Server(ack_push=False)
        clock, air, fwd, tr = await setup(server, keepalive_s=0.02, stat_s=0.03,
                                          push_timeout_s=0.01)
        await air.run_until(100_000)
        await asyncio.sleep(0.2)
        await fwd.stop()
        tr.close()
        return fwd, server

    fwd, server = run(main())
    pulls = [(m, a) for m, a in server.msgs if isinstance(m, gwmp.PullData)]
    pushes = [(m, a) for m, a in server.msgs if isinstance(m, gwmp.PushData)]
    assert len(pulls) >= 3 and all(m.gateway_eui == bytes.fromhex(FWD_EUI) for m, _ in pulls)
    stats = [m.stat for m, _ in pushes if m.stat]
    assert stats and {"time", "rxnb", "rxok", "rxfw", "ackr", "dwnb", "txnb"} <= set(stats[0])
    assert stats[0]["time"].endswith(" GMT")
    assert pushes[0][1] != pulls[0][1]  # two sockets, as lora_pkt_fwd has
    assert fwd.counters["push_unacked"] == fwd.counters["push_sent"] > 0
    assert "push_acked" not in fwd.counters


def test_downlink_without_inverted_iq_is_sent_but_not_received():
    def respond(rx):
        t = gwmp.Txpk.for_class_a((rx.tmst + 1_000_000) & 0xFFFFFFFF, rx.freq_hz, rx.datr,
                                  "4/5", 14, b"\x60" + bytes(15))
        t.ipol = None  # lora_pkt_fwd default: IQ not inverted
        return t

    async def main():
        server = Server(respond=respond)
        clock, air, fwd, tr = await setup(server)
        await air.run_until(3_000_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return air, fwd, server

    air, fwd, server = run(main())
    assert [a.ok for a in server.of(gwmp.TxAck)] == [True]
    assert fwd.counters["tx_sent"] == 1
    assert [e[0] for _, e in air.boards["b1"].app.events] == ["tx_done", "rx_timeout"]


def test_forwarder_is_deaf_while_it_transmits():
    # b1's uplink gets an RX1 downlink at end + 1 s; b2 (another channel, so no collision)
    # transmits right then: the forwarder, busy sending, never hears it
    down = b"\x60" + bytes(15)

    def respond(rx):
        if rx.freq_hz != 868100000:
            return None
        return gwmp.Txpk.for_class_a((rx.tmst + 1_000_000) & 0xFFFFFFFF, rx.freq_hz, rx.datr,
                                     "4/5", 14, down)

    boards = (("b1", 0.0, 0.0, {}),
              ("b2", 10.0, 0.0, {"freq_hz": 868300000, "first_tx_ms": 1050}))

    async def main():
        server = Server(respond=respond)
        clock, air, fwd, tr = await setup(server, boards)
        await air.run_until(3_000_000)
        await asyncio.sleep(0.05)
        await fwd.stop()
        tr.close()
        return air, fwd, server

    air, fwd, server = run(main())
    u1, u2 = sorted(air.uplinks, key=lambda u: u["t_us"])[:2]
    # 1050 ms after b2's first poll, which comes after its radio driver's 7 ms boot
    assert u2["board"] == "b2" and u2["t_us"] == 1_057_000
    assert u2["lost"] == {FWD_EUI: "half_duplex"} and not u2["received"]
    assert fwd.counters["rx_half_duplex"] == 1 and fwd.counters["tx_sent"] == 1
    assert [r.freq_hz for r in server.rxpk()] == [868100000]
    assert ("rx", down) in [e[:2] for _, e in air.boards["b1"].app.events]


def test_on_push_gets_every_push_data_as_sent_with_its_rxpk():
    got = []

    async def main():
        server = Server()
        clock, air, fwd, tr = await setup(server, grace_s=0.05, stat_s=0.05)
        fwd.on_push = lambda datagram, rxpks: got.append((datagram, rxpks))
        await air.run_until(2_500_000)
        await asyncio.sleep(0.2)
        await fwd.stop()
        tr.close()
        return air, server

    air, server = run(main())
    sent = [m for m in server.of(gwmp.PushData)]
    assert len(got) == len(sent) >= 2
    assert [gwmp.decode(d).encode() for d, _ in got] == [m.encode() for m in sent]
    frames = [r.data for _, rxpks in got for r in rxpks]
    assert frames == [u["phy"] for u in air.uplinks] and frames
    assert all(r == list(gwmp.decode(d).rxpk) or (not r and not gwmp.decode(d).rxpk)
               for d, r in got)
    assert any(not r for _, r in got)  # stat-only pushes come with an empty list

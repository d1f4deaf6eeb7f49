"""ForwarderServer over real UDP sockets on 127.0.0.1 (fake packet forwarders in the test)."""

import asyncio
import json
import socket

import pytest

from gateway.lorawan.forwarders import ForwarderServer
from gateway.lorawan.registry import load_registry
from gateway.lorawan.sessions import SessionStore
from protocol import gwmp, payload
from protocol.lorawan import frame
from protocol.lorawan.region import EU868
from protocol.lorawan.session import build_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys, open_join_accept

NET_ID = 0x000013
KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
POLE = bytes.fromhex("70B3D57ED0001234")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")
GW_A = bytes.fromhex("AA555A0000000001")
GW_B = bytes.fromhex("AA555A0000000002")
FREQ = 868300000


@pytest.fixture
def env(tmp_path):
    (tmp_path / "devices.toml").write_text(f'''
[[device]]
name = "pole-1"
site = "harbour"
kind = "pole"
dev_eui = "{POLE.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY.hex()}"
''')
    reg = load_registry(tmp_path / "devices.toml")
    store = SessionStore.for_net_id(tmp_path / "sessions.db", NET_ID)
    yield reg, store
    store.close()


class FakeForwarder:
    def __init__(self, eui, port):
        self.eui = eui
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.token = 100

    def send(self, data):
        self.sock.sendto(data, self.server)

    async def recv(self, timeout=2.0):
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65535), timeout)
        return gwmp.decode(data)

    async def nothing(self, wait=0.3):
        with pytest.raises(asyncio.TimeoutError):
            await self.recv(wait)

    async def pull(self):
        self.token += 1
        self.send(gwmp.PullData(self.token, self.eui).encode())
        ack = await self.recv()
        assert isinstance(ack, gwmp.PullAck) and ack.token == self.token

    async def push(self, rxpks, version=2):
        self.token += 1
        self.send(gwmp.PushData(self.token, self.eui, rxpks, version=version).encode())
        ack = await self.recv()
        assert isinstance(ack, gwmp.PushAck) and (ack.token, ack.version) == (self.token, version)

    def close(self):
        self.sock.close()


def rxpk(phy, tmst, snr, rssi=-90, stat=1):
    return gwmp.Rxpk(tmst, FREQ, "SF9BW125", phy, rssi, stat=stat, lsnr=snr, codr="4/5")


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 10))


def test_join_then_deduplicated_data(env):
    reg, store = env
    records = []

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, records.append, dedup_window_s=0.1)
        port = await srv.start()
        a, b = FakeForwarder(GW_A, port), FakeForwarder(GW_B, port)
        try:
            await a.pull()  # only A has a downstream path
            assert set(srv.forwarders) == {GW_A.hex().upper()}
            assert srv.forwarders[GW_A.hex().upper()].addr == a.sock.getsockname()

            join = build_join_request(JOIN_EUI, POLE, 1, KEY)
            await b.push([rxpk(join, 50, snr=9.0)])  # best copy, but B never pulled
            await a.push([rxpk(join, 0xFFFFFFFF - 1000, snr=2.0)])
            resp = await a.recv()
            assert isinstance(resp, gwmp.PullResp)
            tx = resp.txpk
            assert tx.tmst == (0xFFFFFFFF - 1000 + 5_000_000) & 0xFFFFFFFF
            assert (tx.freq_hz, tx.datr, tx.codr, tx.powe, tx.ipol) == (FREQ, "SF9BW125", "4/5", 14, True)
            ja = open_join_accept(tx.data, KEY)
            assert ja.mic_ok and ja.net_id == NET_ID
            await b.nothing()
            assert srv.counters["downlinks"] == 1 and srv.counters["joins-accepted"] == 1

            # a pole report heard by both forwarders -> one record set with two copies
            nwk, app = derive_session_keys(KEY, ja.join_nonce, ja.net_id, 1)
            fport, body = payload.encode_uplink("pole", "report", {"dim_level": 40})
            up = build_data_frame(frame.UNCONFIRMED_UP, ja.dev_addr, 0, fport, body, nwk, app)
            await a.push([rxpk(up, 1000, snr=5.0)])
            await b.push([rxpk(up, 2000, snr=7.0)])
            await asyncio.sleep(0.4)
            assert len(records) == 1
            r = records[0]
            assert r.accepted and r.kind == "data" and r.dev_eui == POLE
            assert sorted(c["forwarder"] for c in r.copies) == [GW_A.hex().upper(), GW_B.hex().upper()]
            assert r.uplink.best().forwarder == GW_B.hex().upper()
            assert srv.counters["rxpk"] == 4 and srv.counters["uplinks"] == 2
            await a.nothing(0.1)  # no downlink for an unconfirmed data frame
        finally:
            await srv.stop()
            a.close()
            b.close()

    run(main())


def test_garbage_crc_txack_and_no_path(env, caplog):
    reg, store = env
    records = []

    async def main():
        srv = ForwarderServer(reg, store, EU868, NET_ID, records.append, dedup_window_s=0.05)
        port = await srv.start()
        a = FakeForwarder(GW_A, port)
        try:
            for junk in (b"", b"\x02", b"garbage datagram", b"\x02\x00\x01\x00" + GW_A + b"{not json",
                         b"\x09\x00\x01\x02" + GW_A, gwmp.PullAck(5).encode()):
                a.send(junk)
            await a.pull()  # still serving
            assert srv.counters["malformed"] == 6
            assert "127.0.0.1" in caplog.text and "JSON body does not parse" in caplog.text

            # one bad rxpk entry (size mismatch), one CRC-bad frame, version 1 echoed
            a.token += 1
            good = rxpk(b"\x00" * 23, 10, 1.0, stat=-1)
            body = {"rxpk": [dict(good.to_json(), size=99), good.to_json()]}
            a.send(b"\x01" + a.token.to_bytes(2, "big") + b"\x00" + GW_A + json.dumps(body).encode())
            ack = await a.recv()
            assert isinstance(ack, gwmp.PushAck) and (ack.token, ack.version) == (a.token, 1)
            assert srv.counters["rxpk-errors"] == 1 and srv.counters["crc-bad"] == 1

            # TX_ACK counting
            a.send(gwmp.TxAck(1, GW_A).encode())
            a.send(gwmp.TxAck(2, GW_A, "TOO_LATE").encode())
            # join heard only by a forwarder that never pulled -> no downlink path
            b = FakeForwarder(GW_B, port)
            try:
                await b.push([rxpk(build_join_request(JOIN_EUI, POLE, 1, KEY), 7, 3.0)])
                await b.nothing()
            finally:
                b.close()
            await a.nothing(0.05)
            assert srv.counters["no-downlink-path"] == 1 and srv.counters["joins-accepted"] == 1
            assert srv.counters["tx-ack-ok"] == 1 and srv.counters["tx-ack-TOO_LATE"] == 1
            # a bogus (MIC-bad) data frame is counted, not passed on
            await a.push([rxpk(b"\x40" + bytes(range(20)), 8, 1.0)])
            await asyncio.sleep(0.2)
            assert records == [] and srv.counters["uplinks"] == 2
            assert sum(v for k, v in srv.counters.items() if k.startswith("uplink-")) == 1
        finally:
            await srv.stop()
            a.close()

    run(main())

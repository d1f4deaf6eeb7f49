"""An emulated LoRa packet forwarder (Semtech lora_pkt_fwd behaviour) speaking GWMP v2 over UDP.

Like the real one it has two UDP sockets towards the server: upstream (PUSH_DATA with rxpk and
stat, answered by PUSH_ACK) and downstream (PULL_DATA keep-alives every ``keepalive_s`` real
seconds, answered by PULL_ACK; the server sends PULL_RESP to this socket's address, and the
forwarder answers TX_ACK on it).

Uplinks come from the air (sim/air.py) as medium deliveries. An intact frame becomes an rxpk
with ``stat`` 1; a frame the medium lost to a collision or interference is pushed with
``stat`` -1 and a corrupted payload (a concentrator reports CRC errors when
``forward_crc_error`` is on, as lora_pkt_fwd's ``forward_crc_error`` option does); frames that
never got a demodulator (``no_path``) are not pushed. ``tmst`` is the virtual microsecond of
"RX finished" mod 2**32 and ``time`` the virtual UTC of it, both from the VirtualClock.

Downlinks (PULL_RESP): the txpk's ``tmst`` is unwrapped to the nearest virtual instant and
checked like lora_pkt_fwd's just-in-time queue does: TOO_LATE when it is less than
``min_lead_us`` ahead of virtual now, TOO_EARLY when more than ``max_advance_us`` ahead
(jitqueue.c: (3 beacons + 1) x 128 s), COLLISION_PACKET when it overlaps a downlink already
scheduled here, TX_FREQ outside the region's band; ``imme`` sends at once. Accepted ones are
handed to the air for transmission at that instant and the clock barrier for that RX1 instant
is released. TX_ACK carries the result (no JSON body for NONE). As in lora_pkt_fwd, a txpk
without ``"ipol": true`` goes out with normal IQ, which no device's RX window demodulates.

Like lora_pkt_fwd, unacknowledged PUSH_DATA are not retransmitted; they are counted
(``push_unacked``) after ``push_timeout_s`` real seconds.

``on_push``: None or a callable ``fn(datagram, rxpks)`` called with the bytes of every
PUSH_DATA this forwarder sends and its rxpk list (empty for a stat-only one), e.g. for a test
that must know when a frame reached the gateway or wants to resend it byte for byte.

Counters (``counters``): rx_ok, rx_bad (CRC-bad pushed), rx_dropped (not pushed), push_sent,
push_acked, push_unacked, pull_sent, pull_acked, pull_resp, tx_ok, tx_<ERROR>, tx_sent,
malformed, socket_errors, stat_sent, rx_half_duplex (frames lost because this forwarder was
transmitting: a concentrator is half-duplex).
"""

import asyncio
import random

from protocol import gwmp

MAX_ADVANCE_US = 512 * 1000000
TX_START_DELAY_US = 1500  # lora_pkt_fwd: the concentrator needs the packet this early
DEFAULT_BAND = (863000000, 870000000)
# the concentrator's eight multi-SF channels (the common EU868 plan: the three default channels
# and 867.1-867.9 MHz); a frame more than a quarter of its bandwidth off all of them is not
# demodulated (LoRa tolerates about +-25 % of BW of carrier offset)
EU868_CHANNELS = (868100000, 868300000, 868500000, 867100000, 867300000, 867500000, 867700000,
                  867900000)


def parse_datr(datr):
    """"SF7BW125" -> (7, 125000)."""
    if type(datr) is not str or not datr.startswith("SF") or "BW" not in datr:
        raise ValueError("not a LoRa datr: %r" % (datr,))
    sf, bw = datr[2:].split("BW")
    return int(sf), int(bw) * 1000


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, fwd, name):
        self.fwd = fwd
        self.name = name

    def datagram_received(self, data, addr):
        self.fwd._datagram(self.name, data)

    def error_received(self, exc):
        self.fwd._inc("socket_errors")


class Forwarder:
    def __init__(self, eui_hex, x, y, clock, gateway_addr, band=DEFAULT_BAND, keepalive_s=2.0,
                 stat_s=10.0, push_timeout_s=2.0, forward_crc_error=True,
                 min_lead_us=TX_START_DELAY_US, max_advance_us=MAX_ADVANCE_US, seed=0,
                 lat=None, lon=None, channels=None):
        self.eui_hex = eui_hex.upper()
        self.eui = bytes.fromhex(self.eui_hex)
        self.x, self.y = float(x), float(y)
        self.clock = clock
        self.gateway_addr = tuple(gateway_addr)
        self.band = band
        # None: the EU868 plan in the default band, anything in band elsewhere
        self.channels = EU868_CHANNELS if channels is None and band == DEFAULT_BAND else channels
        self.keepalive_s = keepalive_s
        self.stat_s = stat_s
        self.push_timeout_s = push_timeout_s
        self.forward_crc_error = forward_crc_error
        self.min_lead_us = min_lead_us
        self.max_advance_us = max_advance_us
        self.lat, self.lon = lat, lon
        self.air = None
        self._rng = random.Random("%s/%s" % (seed, self.eui_hex))
        self._up = None
        self._down = None
        self._tasks = []
        self._queue = []  # rxpk waiting for flush()
        self._pending_push = {}  # token -> real send time
        self._scheduled = []  # (start_us, end_us) of accepted downlinks
        self._sent_on_air = []  # (start_us, end_us) of downlinks actually sent (half duplex)
        self.counters = {}
        self.stat_window = {"rxnb": 0, "rxok": 0, "rxfw": 0, "dwnb": 0, "txnb": 0,
                            "push": 0, "ack": 0}
        self.sent_rxpk = []  # every rxpk pushed (for tests)
        self.tx_acks = []  # (token, error or "NONE", txpk)
        self.on_push = None  # fn(datagram bytes, [rxpk]) for every PUSH_DATA sent

    def hears(self, freq_hz, bw_hz):
        """True when one of the concentrator's channels demodulates a frame at freq_hz."""
        if not self.band[0] <= freq_hz <= self.band[1]:
            return False
        if self.channels is None:
            return True
        tol = bw_hz // 4
        for c in self.channels:
            if abs(freq_hz - c) <= tol:
                return True
        return False

    def channel_of(self, freq_hz, bw_hz):
        """The frequency the concentrator reports for a frame heard at freq_hz: the centre of
        its channel that demodulated it, not the device's synthesizer (an SX127x is off by up
        to half its 61 Hz step). Without a channel list: freq_hz on the 100 Hz grid every
        regional channel plan sits on."""
        if self.channels is not None:
            tol = bw_hz // 4
            for c in self.channels:
                if abs(freq_hz - c) <= tol:
                    return c
        return (freq_hz + 50) // 100 * 100

    def _inc(self, key, n=1):
        self.counters[key] = self.counters.get(key, 0) + n

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self):
        loop = asyncio.get_running_loop()
        self._up, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self, "up"), remote_addr=self.gateway_addr)
        self._down, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self, "down"), remote_addr=self.gateway_addr)
        self._pull()
        self._tasks = [asyncio.create_task(self._keepalive()), asyncio.create_task(self._stats())]

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._expire_pushes(float("inf"))
        for tr in (self._up, self._down):
            if tr is not None:
                tr.close()
        self._up = self._down = None

    def _token(self):
        return self._rng.randrange(0x10000)

    # ---- upstream ------------------------------------------------------------------------

    def receive(self, d):
        """A medium Delivery ended at this forwarder's antenna."""
        self.stat_window["rxnb"] += 1
        if d.ok:
            data, stat = d.phy, 1
            self._inc("rx_ok")
            self.stat_window["rxok"] += 1
        elif d.reason in ("collision", "interference") and self.forward_crc_error:
            data = bytes(d.phy[:-1]) + bytes([d.phy[-1] ^ 0xA5])
            stat = -1
            self._inc("rx_bad")
        else:
            self._inc("rx_dropped")
            return
        rssi = int(round(d.rssi))
        lsnr = round(max(-20.0, min(13.5, d.snr)), 1)
        self._queue.append(gwmp.Rxpk(
            tmst=self.clock.tmst(d.end_us), freq_hz=self.channel_of(d.freq_hz, d.bw_hz),
            datr="SF%dBW%d" % (d.sf, d.bw_hz // 1000), data=data, rssi=rssi, stat=stat,
            lsnr=lsnr, codr="4/%d" % (4 + d.cr), chan=0, rfch=0,
            time=self.clock.utc_iso(d.end_us)))

    def flush(self):
        """Push what was received (called by the air at the end of each step)."""
        if not self._queue:
            return
        rxpk, self._queue = self._queue, []
        self._push(gwmp.PushData(self._token(), self.eui, rxpk))
        self.stat_window["rxfw"] += len(rxpk)
        self.sent_rxpk.extend(rxpk)

    def _push(self, msg):
        if self._up is None:
            self._inc("push_unsent")
            return
        self._pending_push[msg.token] = self.clock.real()
        datagram = msg.encode()
        self._up.sendto(datagram)
        if self.on_push is not None:
            self.on_push(datagram, list(msg.rxpk or ()))
        self._inc("push_sent")
        self.stat_window["push"] += 1

    def _expire_pushes(self, now_real):
        for tok, t in list(self._pending_push.items()):
            if now_real - t >= self.push_timeout_s:
                del self._pending_push[tok]
                self._inc("push_unacked")

    def _stat(self):
        w = self.stat_window
        stat = {"time": self.clock.utc().strftime("%Y-%m-%d %H:%M:%S GMT"),
                "rxnb": w["rxnb"], "rxok": w["rxok"], "rxfw": w["rxfw"],
                "ackr": round(100.0 * w["ack"] / w["push"], 1) if w["push"] else 0.0,
                "dwnb": w["dwnb"], "txnb": w["txnb"]}
        if self.lat is not None:
            stat.update({"lati": self.lat, "long": self.lon, "alti": 0})
        for k in w:
            w[k] = 0
        return stat

    async def _stats(self):
        while True:
            await asyncio.sleep(self.stat_s)
            self._expire_pushes(self.clock.real())
            self._push(gwmp.PushData(self._token(), self.eui, stat=self._stat()))
            self._inc("stat_sent")

    # ---- downstream ----------------------------------------------------------------------

    def _pull(self):
        if self._down is not None:
            self._down.sendto(gwmp.PullData(self._token(), self.eui).encode())
            self._inc("pull_sent")

    async def _keepalive(self):
        while True:
            await asyncio.sleep(self.keepalive_s)
            self._pull()
            self._expire_pushes(self.clock.real())

    def _datagram(self, sock, data):
        try:
            msg = gwmp.decode(data)
        except gwmp.GwmpError:
            self._inc("malformed")
            return
        if isinstance(msg, gwmp.PushAck):
            if self._pending_push.pop(msg.token, None) is not None:
                self._inc("push_acked")
                self.stat_window["ack"] += 1
            else:
                self._inc("push_ack_unknown")
        elif isinstance(msg, gwmp.PullAck):
            self._inc("pull_acked")
        elif isinstance(msg, gwmp.PullResp):
            self._inc("pull_resp")
            self.stat_window["dwnb"] += 1
            self._pull_resp(msg)
        else:
            self._inc("malformed")

    def _pull_resp(self, msg):
        txpk = msg.txpk
        error, start = self._check(txpk)
        if error is None:
            sf, bw = parse_datr(txpk.datr)
            toa = self.air.schedule_downlink(self, start, txpk.freq_hz, sf, bw,
                                             txpk.powe if txpk.powe is not None else 14,
                                             txpk.data, ipol=txpk.ipol is True)
            self._scheduled.append((start, start + toa))
            self.clock.release_at(start - self.air.barrier_lead_us)
            self._inc("tx_ok")
        else:
            self._inc("tx_" + error)
        self.tx_acks.append((msg.token, error or "NONE", txpk))
        if self._down is not None:
            self._down.sendto(gwmp.TxAck(msg.token, self.eui, error).encode())

    def _check(self, txpk):
        now = self.clock.now_us
        if txpk.modu != "LORA":
            return "TX_FREQ", None  # no FSK modem in this emulation
        if not self.band[0] <= txpk.freq_hz <= self.band[1]:
            return "TX_FREQ", None
        try:
            sf, bw = parse_datr(txpk.datr)
        except ValueError:
            return "TX_FREQ", None
        if txpk.imme:
            start = now + self.min_lead_us
        elif txpk.tmst is not None:
            start = self.clock.unwrap_tmst(txpk.tmst)
            if start < now + self.min_lead_us:
                return "TOO_LATE", None
            if start - now > self.max_advance_us:
                return "TOO_EARLY", None
        else:
            return "GPS_UNLOCKED", None  # tmms/time need GPS time, which this forwarder lacks
        from protocol.lorawan import airtime
        end = start + airtime.time_on_air_us(len(txpk.data), sf, bw, crc=False)
        self._scheduled = [s for s in self._scheduled if s[1] > now]
        for s, e in self._scheduled:
            if start < e and s < end:
                return "COLLISION_PACKET", None
        return None, start

    def on_air(self, start_us, airtime_us):
        """The air started one of our downlinks."""
        self._inc("tx_sent")
        self.stat_window["txnb"] += 1
        self._sent_on_air.append((start_us, start_us + airtime_us))
        cutoff = start_us - 60000000
        self._sent_on_air = [s for s in self._sent_on_air if s[1] > cutoff]

    def transmitting_during(self, start_us, end_us):
        """True when one of our downlinks overlapped [start_us, end_us): the concentrator is
        half-duplex, it cannot receive while it transmits."""
        return any(s < end_us and start_us < e for s, e in self._sent_on_air)

    def deaf(self, d):
        """A frame arrived while we were transmitting: never received (counted)."""
        self._inc("rx_half_duplex")

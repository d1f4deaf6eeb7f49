"""A scripted radio and a network server played by CPython, for testing the device MAC alone.

ScriptedRadio implements firmware/drivers/radio.py's interface over a test-driven clock
(`now`). Each transmission is handed to `on_uplink(tx)`, which may return downlinks as
(delay_ms after the end of the uplink, freq_hz, dr, phy); a receive() window catches a
downlink whose preamble starts inside it, at the right frequency and spreading factor, and
reports it once its airtime is over - as a real SX127x does.

NetworkServer answers with protocol.lorawan.session on the `cryptography` backend, so every
byte the device sends is checked by an independent AES implementation.
"""

import math

from protocol.lorawan import frame, mac, network_side, region as _region, session
from protocol.lorawan import join as lw_join

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
DEV_EUI = bytes.fromhex("0004a30b001c0530")

CFG = {"dev_eui": DEV_EUI.hex(), "join_eui": JOIN_EUI.hex(), "app_key": APP_KEY.hex(),
       "join_jitter_s": 0}


class Tx:
    def __init__(self, t, freq, sf, bw, power, phy, airtime_ms):
        self.t, self.freq, self.sf, self.bw, self.power, self.phy = t, freq, sf, bw, power, phy
        self.airtime_ms = airtime_ms
        self.end = t + airtime_ms


class ScriptedRadio:
    def __init__(self, region="EU868", on_uplink=None, rssi=None):
        self.region = _region.region(region)
        self.now = 0
        self.on_uplink = on_uplink
        self.rssi_fn = rssi or (lambda freq, t: -120)
        self.sent = []  # Tx
        self.windows = []  # (open, freq, sf, bw, timeout)
        self.sensed = []  # (t, freq)
        self._air = []  # (start, freq, sf, phy, end) downlinks in the air
        self._event = None  # (at, event)
        self._busy_until = None

    def _sf_of(self, dr):
        return self.region.data_rate(dr).sf

    def rssi(self, freq):
        self.sensed.append((self.now, freq))
        return self.rssi_fn(freq, self.now)

    def transmit(self, freq, sf, bw, power, data):
        assert self._event is None or self._event[1][0] != "tx_done", "transmit while transmitting"
        dr = [d.index for d in map(self.region.data_rate, range(self.region.n_data_rates))
              if d.sf == sf and d.bw_hz == bw][0]
        toa_us = self.region.time_on_air_us(dr, len(data))
        tx = Tx(self.now, freq, sf, bw, power, bytes(data), toa_us / 1000)
        self.sent.append(tx)
        self._event = (self.now + -(-toa_us // 1000), ("tx_done",))
        if self.on_uplink:
            for delay, dfreq, ddr, phy in self.on_uplink(tx) or ():
                start = tx.end + delay
                end = start + self.region.time_on_air_us(ddr, len(phy), uplink=False) / 1000
                self._air.append((start, dfreq, self._sf_of(ddr), phy, end))

    def receive(self, freq, sf, bw, timeout_ms):
        self.windows.append((self.now, freq, sf, bw, timeout_ms))
        for start, dfreq, dsf, phy, end in self._air:
            if dfreq == freq and dsf == sf and self.now <= start <= self.now + timeout_ms:
                self._event = (int(math.ceil(end)), ("rx", phy, -60, 7.5))
                return
        self._event = (self.now + timeout_ms, ("rx_timeout",))

    def poll(self):
        if self._event is not None and self.now >= self._event[0]:
            ev, self._event = self._event[1], None
            return ev
        return None

    def standby(self):
        self._event = None

    def next_event(self):
        return None if self._event is None else self._event[0]


class NetworkServer:
    """Joins devices and opens their uplinks; `reply(kind, frame_info)` decides the downlinks."""

    def __init__(self, region="EU868", dev_addr=0x26011BDA, net_id=0x13, rx_delay=1):
        self.region = _region.region(region)
        self.dev_addr = dev_addr
        self.net_id = net_id
        self.rx_delay = rx_delay
        self.join_nonce = 0x100
        self.nonces = []
        self.keys = None
        self.sessions = []  # [keys, last FCnt up, last phy]: a device may still use an old one
        self.fcnt_up = None
        self.fcnt_down = 0
        self.uplinks = []  # OpenedFrame
        self.join_window = 1  # 1, 2 or None (no answer)
        self.data_window = 1
        self.ack_confirmed = True
        self.downlink = None  # (fport, payload, confirmed) to send in the next window
        self.fopts = b""
        self.utc_ms = None  # utc_ms(test ms) -> UNIX ms: answer DeviceTimeReq (None: never)
        self.time_requests = []  # test ms at which an uplink asking the time ended

    def dr_of(self, tx):
        return [d.index for d in map(self.region.data_rate, range(self.region.n_data_rates))
                if d.sf == tx.sf and d.bw_hz == tx.bw][0]

    def _window(self, which, tx, rx1_delay_ms, rx1_dr_offset=0):
        if which == 1:
            return rx1_delay_ms, tx.freq, self.region.rx1(tx.freq, self.dr_of(tx), rx1_dr_offset)[1]
        f, dr = self.region.rx2_frequency, self.region.rx2_dr
        return rx1_delay_ms + 1000, f, dr

    def on_uplink(self, tx):
        f = network_side.decode(tx.phy)
        if isinstance(f, lw_join.JoinRequest):
            j = network_side.open_join_request(tx.phy, APP_KEY, backend="cryptography")
            assert j.mic_ok, "join-request MIC"
            self.nonces.append(j.dev_nonce)
            if self.join_window is None:
                return []
            self.join_nonce += 1
            acc = network_side.build_join_accept(APP_KEY, self.join_nonce, self.net_id, self.dev_addr,
                                                 0, 0, self.rx_delay, backend="cryptography")
            self.keys = lw_join.derive_session_keys(APP_KEY, self.join_nonce, self.net_id,
                                                     j.dev_nonce, backend="cryptography")
            self.sessions.append([self.keys, None, None])
            self.fcnt_up = None
            self.fcnt_down = 0
            delay, freq, dr = self._window(self.join_window, tx, 5000)
            return [(delay, freq, dr, acc)]
        for sess in reversed(self.sessions):  # the newest session whose keys sign the frame
            o = session.open_data_frame(tx.phy, sess[0][0], sess[0][1], sess[1],
                                        backend="cryptography")
            if o.mic_ok:
                break
        assert o.mic_ok, "uplink MIC"
        o.airtime_t = tx.t
        o.session = sess
        self.uplinks.append(o)
        # a repeated counter is only allowed for the retransmission of the very same frame
        retransmission = o.fcnt_status == "replay" and o.fcnt == sess[1] and tx.phy == sess[2]
        assert o.fcnt_status == "ok" or retransmission, "FCnt %d after %s: %s" % (o.fcnt, sess[1], o.fcnt_status)
        sess[1], sess[2] = o.fcnt, tx.phy
        self.keys = sess[0]
        self.fcnt_up = o.fcnt
        ack = o.frame.confirmed and self.ack_confirmed
        if any(c["name"] == "DeviceTimeReq" for c in o.mac_commands or ()):
            self.time_requests.append(tx.end)
            if self.utc_ms is not None:  # the time at the end of the uplink (LoRaWAN 1.0.3)
                ans = network_side.device_time_ans(self.utc_ms(tx.end))
                self.fopts = self.fopts + mac.encode_commands([ans], False)
        if self.data_window is None or not (ack or self.downlink or self.fopts):
            return []
        fport, payload, confirmed = self.downlink or (None, b"", False)
        self.downlink = None
        mtype = frame.CONFIRMED_DOWN if confirmed else frame.UNCONFIRMED_DOWN
        phy = session.build_data_frame(mtype, self.dev_addr, self.fcnt_down, fport, payload,
                                       self.keys[0], self.keys[1], fopts=self.fopts, ack=ack,
                                       backend="cryptography")
        self.fopts = b""
        self.fcnt_down += 1
        delay, freq, dr = self._window(self.data_window, tx, self.rx_delay * 1000)
        return [(delay, freq, dr, phy)]


def run(dev, radio, until_ms, start_ms=0, offset=0, polls=None, advance=None, clock=None,
        cap=False):
    """Poll dev from start_ms to until_ms (test milliseconds) at the times it asks for and
    whenever the radio has an event. offset shifts the ticks the device sees (wrap tests);
    advance(t) is called before each poll (to move chip models' time); clock() is the test
    time after a poll, when the device's sleep_ms moved it (the next poll is not earlier); cap:
the last poll is at until_ms at the latest (else it is wherever the device asked)."""
    t = start_ms
    mask = (1 << 30) - 1
    n = 0
    while t < until_ms:
        radio.now = t
        if advance is not None:
            advance(t)
        wake = dev.poll((t + offset) & mask)
        n += 1
        d = ((wake - ((t + offset) & mask) + (1 << 29)) & mask) - (1 << 29)
        assert d > 0, "wake must be in the future"
        nxt = t + d
        if clock is not None and clock() > nxt:
            nxt = clock()
        ev = radio.next_event()
        if ev is not None and t < ev < nxt:
            nxt = ev
        if cap and nxt > until_ms:
            nxt = until_ms
        t = nxt
    if polls is not None:
        polls.append(n)
    return t

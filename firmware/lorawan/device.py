"""LoRaWAN 1.0.x class-A end device, poll-driven: `poll(now_ms) -> next_wake_ms`.

Built on protocol.lorawan (session for frames and crypto, join for the join, imported for it
and unloaded once joined, region for channels, data rates and RX windows, txgate for the EU868
duty cycle and KR920 listen-before-talk, mac for MAC commands, with the answers to them in
firmware.lorawan.mac_answers, both imported for a downlink that carries some); it adds the timing, the persistence and the retry policy. It never blocks and never
reads a clock: the caller passes ticks (firmware.ticks semantics) and sleeps until the
returned tick, or until the radio has an event.

Join: OTAA after a random jitter (a city-wide power cut must not make every pole join at once),
then randomised exponential back-off (0.5..1.5 x min(join_backoff_min_s * 2^n, max)). DevNonce
comes from a ReservedCounter in NVS, so it increases across power cuts and is never reused.

First uplink: after a join, or at boot when the session was resumed, the first uplink waits a
random 0..first_uplink_jitter_s, so poles that joined or booted together (a city-wide power
cut) do not send their first reports in one burst.

Session: kept in NVS (keep_session) so a reboot resumes without a join storm; FCnt up is a
ReservedCounter (one flash write per fcnt_step frames, jumps ahead after a cold boot, reset to
0 only after a new session has been committed); FCnt down is written on each accepted
downlink (rare in class A) so a replayed downlink is refused even after a reboot.

Uplinks: send() queues (bounded; confirmed ones go first). A confirmed uplink is sent up to
confirmed_retries times with the same FCnt, 1..3 s apart (ACK_TIMEOUT) plus whatever the duty
cycle demands, until a downlink carries ACK; on_result(tag, acked) reports the outcome. After
rejoin_after_failures failed confirmed uplinks in a row the device joins again.

Downlinks: RX1 at the uplink frequency with the DR offset, RX2 on the session's RX2 channel,
1 s / 2 s after the uplink (RxDelay from the join-accept or RXTimingSetupReq; 5 s / 6 s for a
join-accept). A frame must match DevAddr, pass its MIC and carry a fresh FCnt; then its ACK
bit settles the confirmed uplink, its MAC commands are answered in the next uplink's FOpts
(LinkADRReq, DutyCycleReq, RXParamSetupReq, DevStatusReq, NewChannelReq, RXTimingSetupReq,
DlChannelReq; LinkCheckAns and DeviceTimeAns are recorded), and FRMPayload on FPort > 0 goes
to on_downlink(fport, payload). A confirmed downlink is acknowledged by the next uplink (an
empty one if nothing else is queued).

Network time (LoRaWAN 1.0.3 DeviceTimeReq/Ans): the request rides in the FOpts of the next
uplink (never an uplink of its own) after each join, while the wall clock is unknown
(time_known() False, e.g. an RTC without battery after a power cut; an unanswered request is
repeated at most every 10 min) and once a day (if unanswered while the clock is known: again
a day later). The answer is the GPS time at the end of that uplink; the device adds the time
since its own transmission ended and calls on_time(unix_ms) with the UTC of now (the
application sets machine.RTC from it). An answer to a frame that did not ask is only recorded.

Every transmission asks the TxGate first, so no sequence of polls can exceed a sub-band's duty
cycle; DutyCycleReq adds an aggregated limit on top. Channels are picked at random among the
enabled ones that are free earliest.
"""

import struct as _struct

from protocol import cipher
from protocol.lorawan import frame as _frame
from protocol.lorawan import region as _region
from protocol.lorawan import session
from protocol.lorawan.txgate import TxGate
from firmware.nvs_store import NvsStore
from firmware.reserved_counter import ReservedCounter
from firmware.ticks import Monotonic

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_S_JOIN_WAIT = const(0)
_S_IDLE = const(1)
_S_SEND = const(2)
_S_TX = const(3)
_S_RX1_WAIT = const(4)
_S_RX1 = const(5)
_S_RX2_WAIT = const(6)
_S_RX2 = const(7)
_S_DEAD = const(8)  # DevNonce space exhausted: nothing more may be sent

# for diagnostics only: one string constant (in flash) rather than nine qstrs and a tuple
_STATE_NAMES = const("join_wait idle send tx rx1_wait rx1 rx2_wait rx2 dead")

_RX_MARGIN = const(5)  # ms: windows open this early and stay open this much longer
_TX_GUARD = const(1000)  # ms after the computed end of a frame to wait for tx_done
_IDLE_WAKE = const(3600000)
_TIME_EVERY = const(86400000)  # ms: network time asked once a day ...
_TIME_RETRY = const(600000)  # ... and an unanswered request not again within 10 min
_SESSION_VERSION = const(1)


class XorShift:
    """rng(n) -> 0..n-1 for back-off jitter (xorshift32). Seeded per device: the DevEUI, mixed
    with hardware entropy on MicroPython (`random`, seeded from the ESP32's hardware RNG), so poles that boot together
    after a power cut do not pick the same delays; on CPython the DevEUI alone, so simulations
    are reproducible."""

    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def __call__(self, n):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x % n if n > 0 else 0


def device_rng(dev_eui):
    import sys

    seed = int(dev_eui[8:], 16) ^ int(dev_eui[:8], 16)
    if sys.implementation.name == "micropython":
        try:
            # `random` is seeded from the ESP32's hardware RNG at boot; a C module everywhere,
            # where `os` is Python on some ports and costs heap
            import random

            seed ^= random.getrandbits(30)
        except (ImportError, AttributeError):
            pass
    return XorShift(seed)


class EndDevice:
    def __init__(self, radio, cfg, nvs, rng=None, on_downlink=None, on_result=None,
                 on_time=None, time_known=None):
        self.radio = radio
        self.on_time = on_time  # on_time(unix_ms): UTC now, from a DeviceTimeAns
        self.time_known = time_known  # () -> bool: the wall clock is set (None: answered yet?)
        self.region = _region.region(cfg["region"])
        self.cfg = cfg
        self.on_downlink = on_downlink
        self.on_result = on_result
        self._rng = rng or device_rng(cfg["dev_eui"])
        self._store = NvsStore(nvs)  # and its .nvs for the session blob
        self._nonce = ReservedCounter(self._store, "devnonce", cfg["devnonce_step"], 0xFFFF)
        self._fcnt = ReservedCounter(self._store, "fcnt_up", cfg["fcnt_step"])
        self._gate = TxGate(self.region)
        self._conf = []  # (fport, data, tag)
        self._unconf = []
        self.dr = cfg["data_rate"]
        self.tx_power_dbm = cfg["tx_power_dbm"]
        self.nb_trans = 1
        self._max_dc = 1  # DutyCycleReq aggregate divisor
        self._dc_free = 0
        self._join_channels = list(cfg["channels"] or self.region.join_channels)
        self._reset_channels()
        self._clear_session()
        # counters, for reports and tests
        self.join_attempts = 0
        self.joins = 0
        self.uplinks = 0
        self.transmissions = 0
        self.retransmissions = 0
        self.downlinks = 0
        self.bad_frames = 0
        self.replays = 0
        self.acked = 0
        self.failed = 0
        self.dropped = 0
        self.lbt_busy = 0
        self.radio_errors = 0
        self.callback_errors = 0
        self.link_check = None  # (margin dB, gateway count) from the last LinkCheckAns
        self.device_time = None  # (GPS seconds, 1/256 s) from the last DeviceTimeAns
        self.last_rssi = None
        self.last_snr = None
        self._fails_in_row = 0
        self._join_failures = 0
        self._mono = None
        self._state = _S_JOIN_WAIT
        self._at = 0
        self._phy = b""
        self._is_join = False
        self._confirmed = False
        self._acked = False
        self._got = False
        self._tag = None
        self._tx_left = 0
        self._not_before = 0
        self._dev_nonce = None
        self._hold = 0  # mono ms: no uplink before (first_uplink_jitter_s after a session began)
        self._time_due = _TIME_EVERY  # mono ms: ask the network's time from then on
        self._time_asked = None  # mono ms of the last DeviceTimeReq not answered yet
        self._time_req = False  # the frame in flight carries a DeviceTimeReq
        self.time_set_at = None  # mono ms of the last DeviceTimeAns applied
        if cfg["keep_session"]:
            self._load_session()

    # -- public --------------------------------------------------------------------------

    @property
    def state(self):
        return _STATE_NAMES.split()[self._state]

    def send(self, fport, data, confirmed=False, tag=None):
        """Queue an uplink. False (and counted in `dropped`) when that queue is full. Raises
        ValueError for an FPort outside 1..223 or a payload too long for the data rate."""
        if not 1 <= fport <= 223:
            raise ValueError("FPort must be 1..223, got %r" % (fport,))
        if len(data) > self.region.max_payload(self.dr):
            raise ValueError("payload of %d bytes exceeds %d at DR%d"
                             % (len(data), self.region.max_payload(self.dr), self.dr))
        q = self._conf if confirmed else self._unconf
        if len(q) >= self.cfg["uplink_queue"]:
            self.dropped += 1
            return False
        q.append((fport, bytes(data), tag))
        return True

    def queued(self):
        return len(self._conf) + len(self._unconf)

    def busy(self):
        """True while a frame is in flight or waiting for the gate."""
        return self._state not in (_S_IDLE, _S_JOIN_WAIT, _S_DEAD)

    def peek_fcnt_up(self):
        return self._fcnt.peek()

    def rejoin(self):
        """Forget the session and join again (queued uplinks wait for the new session)."""
        self.joined = False
        self._state = _S_JOIN_WAIT
        self._join_failures = 0
        self._at = self._mono.ms if self._mono is not None else 0

    def poll(self, now_ms):
        if self._mono is None:
            self._mono = Monotonic(now_ms)
            if self._state == _S_JOIN_WAIT:
                self._at = self._rng(self.cfg["join_jitter_s"] * 1000 + 1)
            elif self.joined:  # the session resumed at boot
                self._hold = self._rng(self.cfg["first_uplink_jitter_s"] * 1000 + 1)
        mono = self._mono.update(now_ms)
        wake = None
        for _ in range(10):
            wake = self._step(mono)
            if wake is not None:
                break
        if wake is None or wake <= mono:
            wake = mono + 1
        return self._mono.to_ticks(wake, now_ms)

    # -- session -------------------------------------------------------------------------

    def _reset_channels(self):
        chans = list(self.cfg["channels"] or self.region.default_channels)
        self._channels = chans + [None] * (self.region.max_channels - len(chans))
        self._enabled = [f is not None for f in self._channels]
        self._dl_freq = {}

    def _clear_session(self):
        self.joined = False
        self.dev_addr = None
        self._nwk = None
        self._app = None
        self._fcnt_down = None
        self._rx1_dr_offset = 0
        self._rx2_dr = self.region.rx2_dr
        self._rx2_freq = self.region.rx2_frequency
        self._rx1_delay = 1000
        self._ack_down = False
        self._fpending = False
        self._fopts_once = b""
        self._fopts_sticky = b""

    def _save_session(self):
        # written in place into one buffer of the final size (the layout _load_session reads):
        # no temporary bytes per field
        b = bytearray(60 + 4 * len(self._channels))
        b[0] = _SESSION_VERSION
        b[1:9] = bytes.fromhex(self.cfg["dev_eui"])
        b[9:17] = bytes.fromhex(self.cfg["join_eui"])
        _struct.pack_into("<I", b, 17, self.dev_addr)
        b[21:37] = self._nwk
        b[37:53] = self._app
        b[53] = self._rx1_dr_offset
        b[54] = self._rx2_dr
        b[55] = self._rx1_delay // 1000
        _struct.pack_into("<I", b, 56, self._rx2_freq)
        for i, f in enumerate(self._channels):
            _struct.pack_into("<I", b, 60 + 4 * i, f or 0)
        self._store.nvs.set_blob("session", b)
        self._store.nvs.commit()

    def _load_session(self):
        buf = bytearray(60 + 4 * self.region.max_channels)
        try:
            n = self._store.nvs.get_blob("session", buf)
        except OSError:
            return
        b = bytes(buf[:n])
        if n != 60 + 4 * self.region.max_channels or b[0] != _SESSION_VERSION:
            return
        if b[1:9] != bytes.fromhex(self.cfg["dev_eui"]) or \
                b[9:17] != bytes.fromhex(self.cfg["join_eui"]):
            return  # provisioned with another identity: join
        for i in range(self.region.max_channels):
            f = int.from_bytes(b[60 + 4 * i:64 + 4 * i], "little")
            if f and not self.region.channel_ok(f):
                return  # stored under another region's plan: join again
        self.dev_addr = int.from_bytes(b[17:21], "little")
        self._nwk = b[21:37]
        self._app = b[37:53]
        self._rx1_dr_offset = b[53]
        self._rx2_dr = b[54]
        self._rx1_delay = b[55] * 1000
        self._rx2_freq = int.from_bytes(b[56:60], "little")
        for i in range(self.region.max_channels):
            f = int.from_bytes(b[60 + 4 * i:64 + 4 * i], "little")
            self._channels[i] = f or None
            self._enabled[i] = f != 0
        down = self._store.load("fcnt_dn")
        self._fcnt_down = None if not down else down - 1
        self.joined = True
        self._state = _S_IDLE
        print("lorawan: session restored, DevAddr %08X" % self.dev_addr)

    def _accept_join(self, acc):
        from protocol.lorawan import join as lw_join

        app_key = bytes.fromhex(self.cfg["app_key"])
        nwk, app = lw_join.derive_session_keys(app_key, acc.join_nonce, acc.net_id,
                                               self._dev_nonce)
        for key in (app_key, self._nwk, self._app):  # not used again by this session
            if key is not None:
                cipher.forget(key)
        self._clear_session()
        self._reset_channels()
        self.dev_addr = acc.dev_addr
        self._nwk = nwk
        self._app = app
        self._rx1_dr_offset = acc.rx1_dr_offset
        self._rx2_dr = acc.rx2_dr
        self._rx1_delay = acc.rx1_delay_s * 1000
        if acc.cflist is not None and acc.cflist[15] == lw_join.CFLIST_FREQUENCIES:
            for i, f in enumerate(lw_join.decode_cflist(acc.cflist)["frequencies"]):
                if f and self.region.channel_ok(f):
                    self._channels[3 + i] = f
                    self._enabled[3 + i] = True
        # Order matters for power cuts: the new session is durable before FCnt restarts at 0,
        # so the old session's keys can never be used with a reset counter.
        if self.cfg["keep_session"]:
            self._save_session()
        self._store.save("fcnt_dn", 0)
        self._store.save("fcnt_up", 0)
        self._fcnt = ReservedCounter(self._store, "fcnt_up", self.cfg["fcnt_step"])
        self.joined = True
        self.joins += 1
        print("lorawan: joined, DevAddr %08X" % acc.dev_addr)
        self._join_failures = 0
        self._fails_in_row = 0
        from firmware.main import unload

        unload(("protocol.lorawan.join",))  # imported again by a rejoin (see _step)

    # -- the state machine -----------------------------------------------------------------

    def _step(self, mono):
        s = self._state
        if s == _S_IDLE:
            if not self.joined:
                self._state = _S_JOIN_WAIT
                return None
            if mono < self._hold:
                return self._hold
            if self._next_uplink(mono):
                return None
            return mono + _IDLE_WAKE
        if s == _S_SEND:
            return self._try_transmit(mono)
        if s == _S_TX:
            ev = self.radio.poll()
            if ev is None and mono < self._tx_end + _TX_GUARD:
                return self._tx_end if mono < self._tx_end else self._tx_end + _TX_GUARD
            if ev is None:
                self.radio_errors += 1
                self.radio.standby()
            elif ev[0] != "tx_done":
                return None  # a stale event: look again
            d1 = 5000 if self._is_join else self._rx1_delay
            self._rx1_at = self._tx_end + d1  # RX2 opens 1 s after RX1 in every region
            self._got = False
            self._state = _S_RX1_WAIT
            return None
        if s == _S_RX1_WAIT:
            if mono < self._rx1_at - _RX_MARGIN:
                return self._rx1_at - _RX_MARGIN
            freq = self._dl_freq.get(self._tx_freq, self._tx_freq)
            off = 0 if self._is_join else self._rx1_dr_offset
            return self._open(mono, _S_RX1, freq, self.region.rx1(self._tx_freq, self._tx_dr, off)[1])
        if s == _S_RX2_WAIT:
            rx2 = self._rx1_at + 1000
            if mono < rx2 - _RX_MARGIN:
                return rx2 - _RX_MARGIN
            if mono > rx2 + _RX_MARGIN:
                return self._end_exchange(mono)  # RX1 reception ran past RX2
            if self._is_join:
                return self._open(mono, _S_RX2, self.region.rx2_frequency, self.region.rx2_dr)
            return self._open(mono, _S_RX2, self._rx2_freq, self._rx2_dr)
        if s == _S_RX1 or s == _S_RX2:
            ev = self.radio.poll()
            if ev is None:
                if mono < self._win_check:
                    return self._win_check
                if mono < self._win_hard:
                    return self._win_hard  # a preamble was seen: the frame is still arriving
                self.radio_errors += 1
                self.radio.standby()
            elif ev[0] == "rx":
                if self._on_rx(ev[1], ev[2], ev[3], mono):
                    self._got = True
                    return self._end_exchange(mono)
            elif ev[0] != "rx_timeout":
                return None
            if s == _S_RX1:
                self._state = _S_RX2_WAIT
                return None
            return self._end_exchange(mono)
        if s == _S_JOIN_WAIT:
            if mono < self._at:
                return self._at
            try:
                self._dev_nonce = self._nonce.take()
            except OverflowError:
                self._state = _S_DEAD
                return None
            cfg = self.cfg  # the identity is read where it is used: no copies held in RAM
            # the join's frames and crypto: imported for the join, unloaded once joined
            # (_accept_join), about 1.5 KB of heap a joined device does not hold
            from protocol.lorawan import join as lw_join

            self._phy = lw_join.build_join_request(
                bytes.fromhex(cfg["join_eui"]), bytes.fromhex(cfg["dev_eui"]), self._dev_nonce,
                bytes.fromhex(cfg["app_key"]))
            self._is_join = True
            self._confirmed = False
            self._tx_left = 1
            self._not_before = mono
            self.join_attempts += 1
            print("lorawan: join-request %d, DevNonce %d" % (self.join_attempts, self._dev_nonce))
            self._state = _S_SEND
            return None
        return mono + _IDLE_WAKE  # _S_DEAD

    def _open(self, mono, state, freq, dr):
        d = self.region.data_rate(dr)
        sym_ms = ((1 << d.sf) * 1000 + d.bw_hz - 1) // d.bw_hz
        timeout = 8 * sym_ms + 2 * _RX_MARGIN + 1
        self.radio.receive(freq, d.sf, d.bw_hz, timeout)
        self._win_check = mono + timeout + 1
        self._win_hard = self._win_check + self.region.time_on_air_us(dr, 255, False) // 1000 + 50
        self._state = state
        return self._win_check

    def _pick(self, channels, mono):
        """(freq, start_ms): among channels, the earliest free; ties broken at random."""
        n = len(channels)
        k = self._rng(n) if n > 1 else 0
        best_f = None
        best_t = 0
        now_us = mono * 1000
        for i in range(n):
            f = channels[(i + k) % n]
            if f is None:
                continue
            t = self._gate.earliest(f, now_us)
            if best_f is None or t < best_t:
                best_f, best_t = f, t
        return best_f, (best_t + 999) // 1000

    def _try_transmit(self, mono):
        if mono < self._not_before:
            return self._not_before
        if self._is_join:
            chans = self._join_channels
        else:
            chans = [f if self._enabled[i] else None for i, f in enumerate(self._channels)]
        freq, start = self._pick(chans, mono)
        if freq is None:
            self._fail_frame()
            return None
        if self._dc_free > start:
            start = self._dc_free
        if start > mono:
            return start
        if self.region.lbt and not self._gate.clear_channel(self.radio.rssi(freq)):
            # KR920 listen-before-talk: busy, back off at random and sense again
            self.lbt_busy += 1
            self._not_before = mono + self.region.lbt_sense_time_us // 1000 + 10 + self._rng(100)
            return self._not_before
        dr = self.dr
        toa = self.region.time_on_air_us(dr, len(self._phy))
        self._gate.sent(freq, mono * 1000, toa)
        if self._max_dc > 1:
            self._dc_free = mono + (toa * self._max_dc + 999) // 1000
        d = self.region.data_rate(dr)
        power = self.tx_power_dbm
        cap = self.region.max_eirp(freq)
        if power > cap:
            power = cap
        self.radio.transmit(freq, d.sf, d.bw_hz, power, self._phy)
        self.transmissions += 1
        self._tx_freq = freq
        self._tx_dr = dr
        self._tx_end = mono + (toa + 999) // 1000
        self._state = _S_TX
        return self._tx_end

    def _fail_frame(self):
        # no enabled channel (a bad LinkADRReq cannot cause this: it is refused) - give up
        self._tx_left = 0
        self._end_exchange(0)

    def _want_time(self, mono):
        if self._time_asked is not None and mono - self._time_asked < _TIME_RETRY:
            return False
        if mono >= self._time_due:
            return True
        if self.time_known is not None:
            try:
                return not self.time_known()
            except Exception:
                self.callback_errors += 1
                return True
        return self.time_set_at is None

    def _next_uplink(self, mono):
        confirmed = False
        if self._conf:
            fport, data, tag = self._conf.pop(0)
            confirmed = True
        elif self._unconf:
            fport, data, tag = self._unconf.pop(0)
        elif self._ack_down or self._fopts_once or self._fpending:  # not sticky ones: no loop
            fport, data, tag = None, b"", None
        else:
            return False
        fopts = (self._fopts_sticky + self._fopts_once)[:15]
        ask = len(fopts) < 15 and self._want_time(mono)
        if ask:
            fopts += b"\x0d"  # DeviceTimeReq: its CID alone
        if 8 + len(fopts) + 1 + len(data) > self.region.max_mac_payload_len(self.dr):
            fopts = b""
            ask = False
        self._time_req = ask
        if ask:
            self._time_asked = mono
            self._time_due = mono + _TIME_EVERY  # unanswered: again if unknown, else in a day
        try:
            fcnt = self._fcnt.take()
        except OverflowError:
            self.rejoin()
            return False
        mtype = _frame.CONFIRMED_UP if confirmed else _frame.UNCONFIRMED_UP
        self._phy = session.build_data_frame(mtype, self.dev_addr, fcnt, fport, data, self._nwk,
                                              self._app, fopts=fopts, ack=self._ack_down)
        self._ack_down = False
        self._fpending = False
        self._fopts_once = b""
        self._is_join = False
        self._confirmed = confirmed
        self._tag = tag
        self._acked = False
        self._tx_left = self.cfg["confirmed_retries"] if confirmed else self.nb_trans
        self._not_before = 0
        self.uplinks += 1
        print("lorawan: uplink FCnt %d fPort %s confirmed %d"
              % (fcnt, fport, 1 if confirmed else 0))
        self._state = _S_SEND
        return True

    def _end_exchange(self, mono):
        self._state = _S_IDLE
        if self._is_join:
            if self.joined:
                self._hold = mono + self._rng(self.cfg["first_uplink_jitter_s"] * 1000 + 1)
                self._time_due = 0  # a new session: ask the network's time with its first uplink
                self._time_asked = None
                return None
            self._join_failures += 1
            n = self._join_failures - 1
            base = self.cfg["join_backoff_min_s"] * 1000 << (n if n < 16 else 16)
            cap = self.cfg["join_backoff_max_s"] * 1000
            if base > cap:
                base = cap
            self._at = mono + base // 2 + self._rng(base + 1)
            self._state = _S_JOIN_WAIT
            return None
        self._tx_left -= 1
        if self._confirmed:
            if self._acked:
                self.acked += 1
                self._fails_in_row = 0
                self._result(True)
            elif self._tx_left > 0:
                self.retransmissions += 1
                self._not_before = mono + 1000 + self._rng(2001)  # ACK_TIMEOUT 1..3 s
                self._state = _S_SEND
            else:
                self.failed += 1
                self._fails_in_row += 1
                self._result(False)
                limit = self.cfg["rejoin_after_failures"]
                if limit and self._fails_in_row >= limit:
                    self.rejoin()
                    self._at = mono + self._rng(self.cfg["join_jitter_s"] * 1000 + 1)
        elif not self._got and self._tx_left > 0:
            self.retransmissions += 1
            self._not_before = mono
            self._state = _S_SEND
        return None

    def _result(self, acked):
        if self.on_result is not None:
            self._call(self.on_result, self._tag, acked)

    def _call(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # the application's bug must not stop the MAC
            self.callback_errors += 1
            print("lorawan: callback failed: %r" % (e,))

    # -- downlinks -------------------------------------------------------------------------

    def _time_answered(self, unix_ms, mono):
        """A DeviceTimeAns: unix_ms was the time at the end of our uplink."""
        if self._time_req:
            self._time_req = False
            self._time_asked = None
            self._time_due = mono + _TIME_EVERY
            self.time_set_at = mono
            if self.on_time is not None:
                self._call(self.on_time, unix_ms + mono - self._tx_end)

    def _on_rx(self, phy, rssi, snr, mono):
        """True when phy was a valid downlink for this device (then no RX2 is opened)."""
        if not phy:
            self.bad_frames += 1
            return False
        mtype = phy[0] >> 5
        try:
            if self._is_join:
                if mtype != _frame.JOIN_ACCEPT:
                    return False
                from protocol.lorawan import join as lw_join

                acc = lw_join.open_join_accept(bytes(phy), bytes.fromhex(self.cfg["app_key"]))
                if not acc.mic_ok:
                    self.bad_frames += 1
                    return False
                self._accept_join(acc)
                self.last_rssi, self.last_snr = rssi, snr
                return True
            if mtype != _frame.UNCONFIRMED_DOWN and mtype != _frame.CONFIRMED_DOWN:
                return False
            f = _frame.decode_data(bytes(phy))
            if f.dev_addr != self.dev_addr:
                return False  # another device's frame
            o = session.open_data_frame(f, self._nwk, self._app, self._fcnt_down)
        except (_frame.FrameError, ValueError):
            self.bad_frames += 1
            return False
        if not o.mic_ok:
            self.bad_frames += 1
            return False
        if o.fcnt_status != "ok":
            self.replays += 1
            return False
        self._fcnt_down = o.fcnt
        self._store.save("fcnt_dn", o.fcnt + 1)
        self.downlinks += 1
        self.last_rssi, self.last_snr = rssi, snr
        if f.ack and self._confirmed:
            self._acked = True
        if f.mtype == _frame.CONFIRMED_DOWN:
            self._ack_down = True
        if f.fpending:
            self._fpending = True
        self._fopts_sticky = b""
        if o.mac_commands:  # rare: their code and the MAC codec load for them only
            from firmware.lorawan import mac_answers
            from firmware.main import unload

            mac_answers.answer(self, o.mac_commands, mono)
            unload(("firmware.lorawan.mac_answers", "protocol.lorawan.mac"))
        if f.fport and self.on_downlink is not None:
            self._call(self.on_downlink, f.fport, o.payload)
        return True


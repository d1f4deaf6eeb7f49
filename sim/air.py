"""The air between boards and forwarders: moves frames through sim.radio.Medium on virtual time.

Boards and forwarders are all receivers of one Medium (so downlinks suffer path loss and
collisions too). Routing by direction, since the medium does not model IQ polarity:
uplinks (from boards) are offered to forwarders only, downlinks (from forwarders) to boards
only, and only to boards whose RX window catches the preamble (SimRadio.catches): at the
downlink's start, or when a board opens its window later during the preamble. A board that
locked on a downlink gets ``deliver`` when the medium says the frame arrived intact, else its
window ends with rx_timeout at the frame's end.

Clock barriers: when a forwarder pushes an intact uplink, the clock is held at its RX1 instant
(end + RECEIVE_DELAY1, or JOIN_ACCEPT_DELAY1 for a join-request) minus ``barrier_lead_us``
(the forwarder needs a PULL_RESP that much ahead), for the uplinks ``barriers`` selects.

``step(now_us)`` does everything due at now_us, in this order: start due downlinks, poll due
boards (their new frames go into the medium), hand out medium deliveries that ended by now,
and repeat while a board's radio has an event at now. ``next_event_us()`` tells the driver
(City) when to call again.

Forwarders are half-duplex like a real concentrator: an uplink that overlaps one of the
forwarder's own downlinks is lost there (reason "half_duplex"), whatever the medium says.

Channel power for listen-before-talk: each board's ``radio.channel_power`` answers from the
frames on the air now (mean path loss, strongest within +-100 kHz), else the noise floor.

Uplink log (``uplinks``): one dict per board transmission: ``board``, ``dev_eui``, ``t_us``
(start), ``end_us``, ``freq_hz``, ``sf``, ``bw_hz``, ``phy``, ``mtype`` (LoRaWAN MType
0..7), ``dev_addr`` (hex, data frames), ``fcnt`` (16-bit, data frames), ``fport`` (None
without), ``received`` (forwarder EUI hex -> (rssi, snr) of intact copies pushed to the
gateway), ``lost`` (forwarder EUI hex -> why not: collision, no_path, interference (medium),
half_duplex).
"""

import asyncio
import heapq
import math

from protocol.lorawan import airtime
from sim.radio import path_loss_db
from protocol.lorawan import mac
from sim.sim_radio import NOISE_DBM

JOIN_REQUEST = 0
CONFIRMED_UP = 4
# which uplinks hold the clock at their RX1 instant: every one (a gateway may answer any
# uplink, e.g. with a queued command), only those that expect an answer (expects_answer():
# much faster runs, but other downlinks only make it when the gateway is quicker than the
# accelerated clock), or none
BARRIER_MODES = ("all", "expected", "none")


# MAC requests in an uplink's FOpts that the network answers in the next downlink
_ANSWERED_REQUESTS = ("LinkCheckReq", "DeviceTimeReq")


def expects_answer(phy):
    """True for the uplinks a gateway will answer: join-requests, confirmed uplinks and those
    asking LinkCheckReq or DeviceTimeReq in FOpts (plaintext in LoRaWAN 1.0.x)."""
    mtype = phy[0] >> 5 if phy else None
    if mtype in (JOIN_REQUEST, CONFIRMED_UP):
        return True
    if mtype != 2 or len(phy) < 12:
        return False
    fopts = phy[8:8 + (phy[5] & 0x0F)]
    try:
        cmds = mac.decode_commands(bytes(fopts), True)
    except mac.MacCommandError as e:
        cmds = e.commands
    return any(c.get("name") in _ANSWERED_REQUESTS for c in cmds)


def frame_fields(phy):
    """(mtype, dev_addr hex or None, fcnt16 or None, fport or None) from a PHYPayload."""
    if not phy:
        return None, None, None, None
    mtype = phy[0] >> 5
    if mtype in (2, 3, 4, 5) and len(phy) >= 12:
        fopts = phy[5] & 0x0F
        addr = phy[1:5][::-1].hex().upper()
        fcnt = phy[6] | phy[7] << 8
        fport = phy[8 + fopts] if len(phy) > 8 + fopts + 4 else None
        return mtype, addr, fcnt, fport
    return mtype, None, None, None


class Air:
    def __init__(self, medium, clock, rx1_delay_us=1000000, join_delay_us=5000000,
                 barrier_lead_us=20000, barriers="all"):
        if barriers not in BARRIER_MODES:
            raise ValueError("barriers must be one of %r" % (BARRIER_MODES,))
        self.barriers = barriers
        self.medium = medium
        self.clock = clock
        self.rx1_delay_us = rx1_delay_us
        self.join_delay_us = join_delay_us
        self.barrier_lead_us = barrier_lead_us
        self.boards = {}  # name -> board
        self.forwarders = {}  # rx_id ("fwd:<EUI>") -> forwarder
        self._wake = {}  # board name -> absolute ms the firmware asked to be polled at
        self._next = {}  # board name -> min(wake, radio event): when it is due
        self._due = []  # heap (due ms, n, name); stale entries (!= _next) are skipped
        self._n = 0
        self._downlinks = []  # heap (start_us, seq, forwarder, txpk, (freq, sf, bw), airtime)
        self._preamble = []  # downlinks on the air still catchable: [lock_deadline_us, ...]
        self._ends = []  # heap of end_us of frames in the medium
        self._tx_meta = {}  # medium seq -> uplink log entry or ("down", ...)
        self._locks = {}  # (board name, medium seq) -> True
        self._seq = 0
        self._on_air = []  # (start_us, end_us, freq, x, y, power, source) for rssi() / LBT
        self.after_poll = None  # callback(board) after each poll (the world follows the lamp)
        self.uplinks = []
        self.counters = {"uplinks": 0, "downlinks": 0, "downlinks_caught": 0,
                         "downlinks_delivered": 0, "downlinks_missed": 0}

    # ---- topology ------------------------------------------------------------------------

    def add_board(self, board):
        self.boards[board.name] = board
        board.radio.channel_power = self._channel_power_for(board)
        self.medium.add_receiver("board:" + board.name, board.x, board.y)
        self._wake[board.name] = None

    def add_forwarder(self, fwd):
        rx_id = "fwd:" + fwd.eui_hex
        self.forwarders[rx_id] = fwd
        self.medium.add_receiver(rx_id, fwd.x, fwd.y)
        fwd.air = self

    def boot_all(self, now_ms):
        for b in self.boards.values():
            self._wake[b.name] = b.boot(now_ms)
            if self.after_poll is not None:
                self.after_poll(b)
            self._resched(b)

    def wake(self, board, at_ms):
        """Poll board at at_ms at the latest (e.g. after an injected event)."""
        w = self._wake.get(board.name)
        self._wake[board.name] = at_ms if w is None else min(w, at_ms)
        self._resched(board)

    def _resched(self, board):
        # call after anything that may change when the board is due (poll, wake, radio)
        w = self._wake[board.name]
        r = board.radio.next_event_ms()
        t = w if r is None or (w is not None and w <= r) else r
        if t != self._next.get(board.name):
            self._next[board.name] = t
            if t is not None:
                self._n += 1
                heapq.heappush(self._due, (t, self._n, board.name))

    def _peek_due(self):
        while self._due:
            t, _, name = self._due[0]
            if self._next.get(name) == t:
                return t
            heapq.heappop(self._due)
        return None

    def _pop_due(self, now_ms):
        out = []
        while True:
            t = self._peek_due()
            if t is None or t > now_ms:
                return out
            name = heapq.heappop(self._due)[2]
            self._next[name] = None
            out.append(self.boards[name])

    def _channel_power_for(self, board):
        def channel_power(freq_hz, now_ms):
            # what the board's RSSI register shows: the strongest frame on air within the
            # LBT bandwidth (KR920: 200 kHz) at the mean path loss, else the noise floor
            t = now_ms * 1000
            best = NOISE_DBM
            for start, end, f, x, y, p, src in self._on_air:
                if start <= t < end and abs(f - freq_hz) <= 100000 and src != board.name:
                    best = max(best, p - path_loss_db(math.hypot(x - board.x, y - board.y)))
            return best
        return channel_power

    def _note_on_air(self, start, end, freq, x, y, power, src):
        now = self.medium.now_us
        self._on_air = [a for a in self._on_air if a[1] > now]
        self._on_air.append((start, end, freq, x, y, power, src))

    # ---- downlinks from forwarders --------------------------------------------------------

    def schedule_downlink(self, fwd, start_us, freq_hz, sf, bw_hz, power_dbm, phy, ipol=True):
        """A forwarder's transmission at start_us; ipol False (IQ not inverted, as an uplink)
        is on the air but no device's RX window demodulates it."""
        toa = airtime.time_on_air_us(len(phy), sf, bw_hz, crc=False)
        self._seq += 1
        heapq.heappush(self._downlinks, (start_us, self._seq, fwd, (freq_hz, sf, bw_hz),
                                         power_dbm, bytes(phy), toa, ipol))
        self.clock.poke()
        return toa

    def _start_downlinks(self, now_us):
        while self._downlinks and self._downlinks[0][0] <= now_us:
            start, _, fwd, (freq, sf, bw), power, phy, toa, ipol = heapq.heappop(self._downlinks)
            seq = self.medium.transmit("fwd:" + fwd.eui_hex, fwd.x, fwd.y, start, freq, sf, bw,
                                       phy=phy, tx_power_dbm=power, crc=False)
            heapq.heappush(self._ends, start + toa)
            self._note_on_air(start, start + toa, freq, fwd.x, fwd.y, power, fwd.eui_hex)
            self._tx_meta[seq] = ("down", fwd)
            self.counters["downlinks"] += 1
            fwd.on_air(start, toa)
            if ipol is False:
                continue
            slack = (4 * 8 + 17 - 20) * airtime.symbol_time_ns(sf, bw) // 4000
            self._preamble.append((start + slack, seq, start, freq, sf, bw, toa))
        self._preamble = [p for p in self._preamble if p[0] >= now_us]

    def _try_lock(self, board, now_us):
        radio = board.radio
        if radio.rx_window() is None:
            return
        for deadline, seq, start, freq, sf, bw, toa in self._preamble:
            if start <= now_us <= deadline and radio.catches(freq, sf, bw, start, toa):
                radio.lock(-(-(start + toa) // 1000))
                self._locks[(board.name, seq)] = True
                self.counters["downlinks_caught"] += 1
                self._resched(board)
                return

    # ---- the step ------------------------------------------------------------------------

    def next_event_us(self):
        times = []
        t = self._peek_due()
        if t is not None:
            times.append(t * 1000)
        if self._downlinks:
            times.append(self._downlinks[0][0])
        if self._ends:
            times.append(self._ends[0])
        return min(times) if times else None

    def step(self, now_us):
        now_ms = now_us // 1000
        self._start_downlinks(now_us)
        self._deliver(now_us)  # frames that ended by now, before boards look at their radios
        if self._preamble:
            for b in self.boards.values():
                self._try_lock(b, now_us)
        for _ in range(100):  # events at the same instant cascade a few times at most
            due = self._pop_due(now_ms)
            if not due:
                break
            for b in due:
                self._wake[b.name] = b.poll(now_ms)
                if self.after_poll is not None:
                    self.after_poll(b)
                self._take_tx(b)
                self._try_lock(b, now_us)
                self._resched(b)
            self._deliver(now_us)
        for b in self._pop_due(now_ms):  # a firmware asking for "now" again: the next ms
            if self._wake[b.name] is not None and self._wake[b.name] <= now_ms:
                self._wake[b.name] = now_ms + 1
            self._next[b.name] = None
            t = b.radio.next_event_ms()
            self._n += 1
            t = now_ms + 1 if t is None or t <= now_ms else min(t, self._wake[b.name] or t)
            self._next[b.name] = t
            heapq.heappush(self._due, (t, self._n, b.name))
        while self._ends and self._ends[0] <= now_us:
            heapq.heappop(self._ends)
        for fwd in self.forwarders.values():
            fwd.flush()

    def _take_tx(self, board):
        for f in board.radio.pending_frames():
            start_ms, freq, sf, bw, power, phy = (f["start_ms"], f["freq_hz"], f["sf"], f["bw_hz"],
                                                  f["power_dbm"], f["phy"])
            # boards count ms, the medium us: a board polled inside a ms that the medium has
            # already settled up to now starts its frame at now (< 1 ms later)
            start_us = max(start_ms * 1000, self.medium.now_us)
            seq = self.medium.transmit("board:" + board.name, board.x, board.y, start_us, freq,
                                       sf, bw, phy=phy, tx_power_dbm=power)
            toa = f["airtime_us"]  # what the chip's registers gave (its TxDone comes then)
            heapq.heappush(self._ends, start_us + toa)
            self._note_on_air(start_us, start_us + toa, freq, board.x, board.y, power, board.name)
            mtype, addr, fcnt, fport = frame_fields(phy)
            entry = {"board": board.name, "dev_eui": board.dev_eui, "t_us": start_us,
                     "end_us": start_us + toa, "freq_hz": freq, "sf": sf, "bw_hz": bw,
                     "phy": phy, "mtype": mtype, "dev_addr": addr, "fcnt": fcnt,
                     "fport": fport, "received": {}, "lost": {}, "barrier": None,
                     "lorawan": f["lorawan"]}
            self.uplinks.append(entry)
            self._tx_meta[seq] = entry
            self.counters["uplinks"] += 1

    def _deliver(self, now_us):
        for d in self.medium.deliveries(now_us):
            meta = self._tx_meta.get(d.tx_seq)
            if meta is None:
                continue
            if isinstance(meta, dict):  # an uplink
                if not d.rx_id.startswith("fwd:"):
                    continue
                fwd = self.forwarders[d.rx_id]
                if not meta["lorawan"]:
                    meta["lost"][fwd.eui_hex] = "not_lorawan"  # sync word, IQ, header, no CRC
                    continue
                if not fwd.hears(d.freq_hz, d.bw_hz):
                    meta["lost"][fwd.eui_hex] = "off_channel"  # no demodulator on that frequency
                    continue
                if fwd.transmitting_during(d.start_us, d.end_us):
                    meta["lost"][fwd.eui_hex] = "half_duplex"  # its radio was busy sending
                    fwd.deaf(d)
                    continue
                if d.ok:
                    meta["received"][fwd.eui_hex] = (round(d.rssi, 1), round(d.snr, 1))
                    if meta["barrier"] is None and (
                            self.barriers == "all" or (self.barriers == "expected"
                                                        and expects_answer(meta["phy"]))):
                        delay = self.join_delay_us if meta["mtype"] == JOIN_REQUEST \
                            else self.rx1_delay_us
                        meta["barrier"] = self.clock.hold(d.end_us + delay - self.barrier_lead_us)
                else:
                    meta["lost"][fwd.eui_hex] = d.reason
                fwd.receive(d)
            else:  # a downlink
                if not d.rx_id.startswith("board:"):
                    continue
                name = d.rx_id[6:]
                if not self._locks.pop((name, d.tx_seq), None):
                    continue
                radio = self.boards[name].radio
                if d.ok and radio.locked():
                    radio.deliver(d.phy, int(round(d.rssi)), round(d.snr, 1),
                                  -(-d.end_us // 1000))
                    self.counters["downlinks_delivered"] += 1
                    self._resched(self.boards[name])
                else:
                    self.counters["downlinks_missed"] += 1

    # ---- driving -------------------------------------------------------------------------

    async def run_until(self, until_us, next_hook_us=None, hook=None):
        """Drive boards, medium and forwarders on the clock up to virtual until_us.

        next_hook_us() -> virtual us of the caller's next own event (or None) and hook(now_us)
        let a caller (City: world, fault injection) act at its instants before the air step.
        """
        while True:
            now = self.clock.now_us
            nxt = self.next_event_us()
            target = until_us if nxt is None else min(nxt, until_us)
            if next_hook_us is not None:
                h = next_hook_us()
                if h is not None:
                    target = min(target, h)
            now = await self.clock.advance_to(max(target, now))
            if hook is not None:
                hook(now)
            self.step(now)
            await asyncio.sleep(0)  # let datagrams in (PUSH_ACK, PULL_RESP)
            if now >= until_us:
                return now

"""Sans-I/O LoRa radio medium for the simulator (pure computation, virtual clock in integer us).

The caller owns the clock. It registers receivers (gateways, or devices listening for downlinks),
announces transmissions with ``transmit(...)`` and asks ``deliveries(until_us)`` for every frame
whose reception ended by ``until_us``. Transmissions must not start before the last ``until_us``
asked for (the past is settled).

Models (``Medium(model=...)``):

``"lorasim"`` -- Bor et al., "Do LoRa Low-Power Wide-Area Networks Scale?" (MSWiM 2016):
    * log-distance path loss ``PL(d) = 127.41 + 20.8 log10(d / 40 m)``, d floored at 1 m, optional
      log-normal shadowing (seeded ``random.Random``, one draw per transmission and receiver);
    * measured sensitivity table per SF/BW: weaker frames are neither delivered nor interfere
      at that receiver (as in LoRaSim, where they never reach ``packetsAtBS``);
    * collisions only between frames on the same channel with the same SF that overlap in time;
      when a frame arrives, each frame still on air is checked: if the older frame ends no later
      than the start of the newcomer's critical section (its last 5 preamble symbols, i.e.
      ``start + (preamble - 5) * Tsym``) nobody is hurt; otherwise the power rule applies:
      difference >= 6 dB -> the weaker is lost, else both are lost (LoRaSim ``timingCollision`` +
      ``powerCollision``);
    * at most ``max_paths`` frames demodulated at once per receiver; a frame arriving while all
      paths are busy is lost there (it still interferes, like in LoRaSim).
  Fixes of bugs in the public LoRaSim code: log10 everywhere (not ln); collided flags are only
  ever set, never cleared/overwritten; the channel test compares frequencies with a bandwidth
  dependent tolerance (LoRaSim compared a frequency against a bandwidth); the 9th concurrent
  frame is refused (LoRaSim's ``processing > maxBSReceives`` let a 9th through).

``"matrix"`` -- ns-3 ``lorawan`` style: same path loss, sensitivity and reception paths, but
    interference by the Goursaud SIR matrix: at the end of a frame, for every interfering SF the
    energy (power x overlap time) of all same-channel overlapping frames -- including those below
    sensitivity -- is summed and the frame is lost if signal energy / interference energy (dB) is
    below the matrix threshold (same SF 6 dB, other SFs -16..-36 dB).

Not modelled: IQ inversion (downlinks with ``ipol`` collide with uplinks like any frame), half
duplex (a transmitting gateway still receives; only a node's own frames are never delivered to
itself), antenna gains, frequency-selective effects, CRC errors from low SNR above sensitivity.
"""

import heapq
import math
import random

from protocol.lorawan import airtime

__all__ = [
    "Medium", "Delivery", "RadioError", "SENSITIVITY_DBM", "GOURSAUD_SIR_DB",
    "path_loss_db", "sensitivity_dbm", "noise_floor_dbm", "range_m", "lorasim_der",
]

# LoRaSim measured sensitivity (dBm): SF -> (125 kHz, 250 kHz, 500 kHz)
SENSITIVITY_DBM = {
    7: (-126.5, -124.25, -120.75),
    8: (-127.25, -126.75, -124.0),
    9: (-131.25, -128.25, -127.5),
    10: (-132.75, -130.25, -128.75),
    11: (-134.5, -132.75, -128.75),
    12: (-133.25, -132.25, -132.25),
}
_BW_COL = {125000: 0, 250000: 1, 500000: 2}

# ns-3 lorawan (Goursaud) SIR thresholds in dB: [desired SF7..12][interferer SF7..12]
GOURSAUD_SIR_DB = (
    (6, -16, -18, -19, -19, -20),
    (-24, 6, -20, -22, -22, -22),
    (-27, -27, 6, -23, -25, -25),
    (-30, -30, -30, 6, -26, -28),
    (-33, -33, -33, -33, 6, -29),
    (-36, -36, -36, -36, -36, 6),
)

PL_D0_DB = 127.41
PL_D0_M = 40.0
PL_GAMMA = 2.08
CAPTURE_DB = 6.0
NOISE_FIGURE_DB = 6.0
CRITICAL_PREAMBLE_SYMBOLS = 5
MODELS = ("lorasim", "matrix")


class RadioError(ValueError):
    """Bad argument or a request that would rewrite the settled past."""


def path_loss_db(distance_m):
    """LoRaSim log-distance path loss in dB (no shadowing); distances below 1 m count as 1 m."""
    d = max(float(distance_m), 1.0)
    return PL_D0_DB + 10.0 * PL_GAMMA * math.log10(d / PL_D0_M)


def sensitivity_dbm(sf, bw_hz):
    """LoRaSim sensitivity for SF7..12 at 125/250/500 kHz."""
    try:
        return SENSITIVITY_DBM[sf][_BW_COL[bw_hz]]
    except KeyError:
        raise RadioError("no sensitivity for SF%r / %r Hz" % (sf, bw_hz)) from None


def noise_floor_dbm(bw_hz, noise_figure_db=NOISE_FIGURE_DB):
    """Thermal noise -174 dBm/Hz + 10 log10(BW) + noise figure."""
    return -174.0 + 10.0 * math.log10(bw_hz) + noise_figure_db


def range_m(sf, bw_hz, tx_power_dbm=14.0):
    """Distance at which the mean RSSI equals the sensitivity (no shadowing)."""
    budget = tx_power_dbm - sensitivity_dbm(sf, bw_hz)
    return PL_D0_M * 10.0 ** ((budget - PL_D0_DB) / (10.0 * PL_GAMMA))


def _channel_tolerance_hz(bw_a, bw_b):
    # LoRaSim frequencyCollision, with the bandwidth test done on the bandwidth and kHz units.
    bw = max(bw_a, bw_b)
    if bw >= 500000:
        return 120000
    if bw >= 250000:
        return 60000
    return 30000


def _same_channel(a, b):
    return abs(a.freq_hz - b.freq_hz) <= _channel_tolerance_hz(a.bw_hz, b.bw_hz)


class _Tx:
    __slots__ = ("seq", "tx_id", "x", "y", "start_us", "end_us", "freq_hz", "sf", "bw_hz",
                 "payload_len", "phy", "tx_power_dbm", "cr", "airtime_us", "cs_start_ns")


class _Rx:
    __slots__ = ("rx_id", "x", "y", "max_paths", "order", "hist")

    def __init__(self, rx_id, x, y, max_paths, order):
        self.rx_id = rx_id
        self.x = float(x)
        self.y = float(y)
        self.max_paths = max_paths
        self.order = order
        self.hist = []  # _Reception list: on air now or still needed as interferers


class _Reception:
    __slots__ = ("tx", "rx", "rssi", "audible", "processed", "collided", "emitted")

    def __init__(self, tx, rx, rssi, audible):
        self.tx = tx
        self.rx = rx
        self.rssi = rssi
        self.audible = audible
        self.processed = False  # got a demodulation path
        self.collided = False
        self.emitted = False


class Delivery:
    """One frame as seen by one receiver at the end of its reception."""

    __slots__ = ("rx_id", "tx_id", "tx_seq", "freq_hz", "sf", "bw_hz", "cr", "payload_len", "phy",
                 "start_us", "end_us", "airtime_us", "rssi", "snr", "ok", "reason")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    def __repr__(self):
        return "Delivery(rx=%r tx=%r seq=%d SF%d %dHz end=%d rssi=%.2f snr=%.2f %s)" % (
            self.rx_id, self.tx_id, self.tx_seq, self.sf, self.freq_hz, self.end_us, self.rssi,
            self.snr, self.reason)


class Medium:
    """The shared radio channel. See the module docstring for the models."""

    def __init__(self, model="lorasim", seed=None, shadowing_sigma_db=0.0,
                 noise_figure_db=NOISE_FIGURE_DB):
        if model not in MODELS:
            raise RadioError("model must be one of %r" % (MODELS,))
        if shadowing_sigma_db < 0:
            raise RadioError("shadowing_sigma_db must be >= 0")
        self.model = model
        self.shadowing_sigma_db = float(shadowing_sigma_db)
        self.noise_figure_db = float(noise_figure_db)
        self._rng = random.Random(seed)
        self._receivers = {}
        self._pending = []  # heap (start_us, seq, _Tx): announced, not yet on the air
        self._ending = []  # heap (end_us, seq, rx order, _Reception): audible, not yet emitted
        self._seq = 0
        self.now_us = 0  # everything before this is settled
        self.transmitted = 0

    # -- topology ---------------------------------------------------------------------------
    def add_receiver(self, rx_id, x, y, max_paths=8):
        if rx_id in self._receivers:
            raise RadioError("receiver %r already registered" % (rx_id,))
        if type(max_paths) is not int or max_paths < 1:
            raise RadioError("max_paths must be an int >= 1")
        self._receivers[rx_id] = _Rx(rx_id, x, y, max_paths, len(self._receivers))

    def move_receiver(self, rx_id, x, y):
        """Move a receiver; affects transmissions announced from now on."""
        rx = self._receivers[rx_id]
        rx.x, rx.y = float(x), float(y)

    @property
    def receivers(self):
        return tuple(self._receivers)

    # -- link budget ------------------------------------------------------------------------
    def mean_rssi_dbm(self, tx_power_dbm, x1, y1, x2, y2):
        return tx_power_dbm - path_loss_db(math.hypot(x1 - x2, y1 - y2))

    # -- transmissions ----------------------------------------------------------------------
    def transmit(self, tx_id, x, y, start_us, freq_hz, sf, bw_hz, payload_len=None, phy=None,
                 tx_power_dbm=14, cr=1, crc=True, preamble=8):
        """Announce a frame. Give ``payload_len`` (PHYPayload bytes) or ``phy`` (the bytes).

        Returns the transmission sequence number (``Delivery.tx_seq``).
        """
        if type(start_us) is not int:
            raise RadioError("start_us must be an int (microseconds)")
        if start_us < self.now_us:
            raise RadioError("start_us %d is before the settled time %d" % (start_us, self.now_us))
        if phy is not None:
            phy = bytes(phy)
            if payload_len is not None and payload_len != len(phy):
                raise RadioError("payload_len disagrees with len(phy)")
            payload_len = len(phy)
        if payload_len is None:
            raise RadioError("give payload_len or phy")
        sensitivity_dbm(sf, bw_hz)  # validates sf / bw
        if preamble < CRITICAL_PREAMBLE_SYMBOLS:
            raise RadioError("preamble must be >= %d symbols" % CRITICAL_PREAMBLE_SYMBOLS)
        toa = airtime.time_on_air_us(payload_len, sf, bw_hz, cr=cr, preamble=preamble, crc=crc)
        t = _Tx()
        t.seq = self._seq
        self._seq += 1
        t.tx_id, t.x, t.y = tx_id, float(x), float(y)
        t.start_us, t.end_us, t.airtime_us = start_us, start_us + toa, toa
        t.freq_hz, t.sf, t.bw_hz, t.cr = int(freq_hz), sf, bw_hz, cr
        t.payload_len, t.phy, t.tx_power_dbm = payload_len, phy, float(tx_power_dbm)
        t.cs_start_ns = start_us * 1000 + (preamble - CRITICAL_PREAMBLE_SYMBOLS) * \
            airtime.symbol_time_ns(sf, bw_hz)
        heapq.heappush(self._pending, (start_us, t.seq, t))
        self.transmitted += 1
        return t.seq

    # -- time -------------------------------------------------------------------------------
    def deliveries(self, until_us):
        """Frames whose reception ended at or before ``until_us``, ordered by end time.

        Afterwards no transmission may start before ``until_us``.
        """
        if type(until_us) is not int:
            raise RadioError("until_us must be an int (microseconds)")
        if until_us < self.now_us:
            raise RadioError("until_us %d is before the settled time %d" % (until_us, self.now_us))
        # Every frame starting before until_us goes on the air (in start order); frames starting
        # at until_us or later cannot overlap anything that ends by until_us.
        while self._pending and self._pending[0][0] < until_us:
            self._arrive(heapq.heappop(self._pending)[2])
        out = []
        while self._ending and self._ending[0][0] <= until_us:
            rec = heapq.heappop(self._ending)[3]
            out.append(self._emit(rec))
        self.now_us = until_us
        self._prune(until_us)
        return out

    advance = deliveries

    def _arrive(self, t):
        rng = self._rng
        sigma = self.shadowing_sigma_db
        for rx in self._receivers.values():
            if rx.rx_id == t.tx_id:
                continue
            rssi = self.mean_rssi_dbm(t.tx_power_dbm, t.x, t.y, rx.x, rx.y)
            if sigma:
                rssi += rng.gauss(0.0, sigma)
            audible = rssi >= sensitivity_dbm(t.sf, t.bw_hz)
            rec = _Reception(t, rx, rssi, audible)
            on_air = [r for r in rx.hist if r.tx.end_us > t.start_us]
            if audible:
                busy = sum(1 for r in on_air if r.processed)
                rec.processed = busy < rx.max_paths
                if self.model == "lorasim":
                    self._lorasim_collisions(rec, on_air)
                heapq.heappush(self._ending, (t.end_us, t.seq, rx.order, rec))
            if audible or self.model == "matrix":
                rx.hist.append(rec)

    @staticmethod
    def _lorasim_collisions(new, on_air):
        t = new.tx
        for old in on_air:
            o = old.tx
            if not old.audible or o.sf != t.sf or not _same_channel(o, t):
                continue
            if o.end_us * 1000 <= t.cs_start_ns:
                continue  # the older frame is gone before the newcomer's critical section
            diff = new.rssi - old.rssi
            if abs(diff) < CAPTURE_DB:
                new.collided = old.collided = True
            elif diff < 0:
                new.collided = True
            else:
                old.collided = True

    def _matrix_destroyed(self, rec):
        t = rec.tx
        energy = {}  # interferer SF -> sum of mW * us
        for r in rec.rx.hist:
            o = r.tx
            if o is t or not _same_channel(o, t):
                continue
            overlap = min(o.end_us, t.end_us) - max(o.start_us, t.start_us)
            if overlap <= 0:
                continue
            energy[o.sf] = energy.get(o.sf, 0.0) + overlap * 10.0 ** (r.rssi / 10.0)
        if not energy:
            return False
        signal = t.airtime_us * 10.0 ** (rec.rssi / 10.0)
        row = GOURSAUD_SIR_DB[t.sf - 7]
        for sf, e in energy.items():
            if 10.0 * math.log10(signal / e) < row[sf - 7]:
                return True
        return False

    def _emit(self, rec):
        rec.emitted = True
        t = rec.tx
        if not rec.processed:
            reason = "no_path"
        elif self.model == "lorasim":
            reason = "collision" if rec.collided else "ok"
        else:
            reason = "interference" if self._matrix_destroyed(rec) else "ok"
        return Delivery(
            rx_id=rec.rx.rx_id, tx_id=t.tx_id, tx_seq=t.seq, freq_hz=t.freq_hz, sf=t.sf,
            bw_hz=t.bw_hz, cr=t.cr, payload_len=t.payload_len, phy=t.phy, start_us=t.start_us,
            end_us=t.end_us, airtime_us=t.airtime_us, rssi=rec.rssi,
            snr=rec.rssi - noise_floor_dbm(t.bw_hz, self.noise_figure_db),
            ok=reason == "ok", reason=reason)

    def _prune(self, until_us):
        # Keep what is still on the air or overlaps a frame not yet emitted (matrix needs it).
        for rx in self._receivers.values():
            if not rx.hist:
                continue
            cutoff = until_us
            for r in rx.hist:
                if r.tx.end_us > until_us and r.tx.start_us < cutoff:
                    cutoff = r.tx.start_us
            rx.hist = [r for r in rx.hist if r.tx.end_us > cutoff]


def lorasim_der(n_nodes, sim_time_us=4 * 3600 * 1000000, seed=1, sf=12, bw_hz=125000,
                payload_len=20, period_us=1002000000, tx_power_dbm=14, freq_hz=868100000,
                model="lorasim", chunk_us=60 * 1000000, radius_m=None):
    """LoRaSim's single-gateway experiment: DER = frames received OK / frames sent.

    Nodes are uniform in a disc around the gateway (default radius: 98 % of the SF range, so
    every node reaches it); each waits an exponential gap (mean ``period_us``) after its
    previous frame, as LoRaSim does. Frames starting before ``sim_time_us`` count.
    """
    rng = random.Random(seed)
    if radius_m is None:
        radius_m = 0.98 * range_m(sf, bw_hz, tx_power_dbm)
    med = Medium(model=model, seed=seed)
    med.add_receiver("gw", 0.0, 0.0)
    toa = airtime.time_on_air_us(payload_len, sf, bw_hz)
    starts = []
    for n in range(n_nodes):
        r = radius_m * math.sqrt(rng.random())
        a = rng.random() * 2.0 * math.pi
        x, y = r * math.cos(a), r * math.sin(a)
        t = int(rng.expovariate(1.0 / period_us))
        while t < sim_time_us:
            starts.append((t, n, x, y))
            t += toa + int(rng.expovariate(1.0 / period_us))
    starts.sort()
    ok = 0
    i = 0
    horizon = chunk_us
    while True:
        while i < len(starts) and starts[i][0] < horizon:
            t, n, x, y = starts[i]
            med.transmit(n, x, y, t, freq_hz, sf, bw_hz, payload_len=payload_len,
                         tx_power_dbm=tx_power_dbm)
            i += 1
        ok += sum(1 for d in med.deliveries(horizon) if d.ok)
        if i >= len(starts) and horizon >= sim_time_us + toa:
            break
        horizon += chunk_us
    return ok / len(starts) if starts else 1.0

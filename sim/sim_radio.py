"""The LoRa transceiver of one emulated board: firmware-facing driver + host side for the hub.

Firmware side (the Radio driver interface of firmware/drivers/radio.py): ``rssi``, ``transmit``,
``receive``, ``poll``, ``standby``. Every call acts at ``now_ms``, the board's current virtual
time in absolute milliseconds, which the hub sets before each ``Board.poll``.

Host side (the hub, sim/air.py, moves frames between boards and the medium):

* ``pending_tx()`` -> frames transmitted since the last call, each
  ``(start_ms, freq_hz, sf, bw_hz, power_dbm, phy)``; ``pending_frames()`` takes the same
  frames as dicts that also carry ``airtime_us`` and ``lorawan`` (see transmit); the hub puts
  them into the medium.
* ``rx_window()`` -> ``(freq_hz, sf, bw_hz, open_ms, close_ms)`` of the open RX window, or None.
* ``catches(freq_hz, sf, bw_hz, start_us, airtime_us)`` -> True when a downlink starting at
  ``start_us`` would be picked up by the current window (see below).
* ``lock(until_ms)``: the window locked on a preamble (the hub checked ``catches``): it no
  longer times out; if nothing is delivered by ``until_ms`` (the frame was lost: collision,
  too weak) ``poll()`` then returns ``("rx_timeout",)``, as a driver reports a CRC failure.
* ``deliver(phy, rssi, snr, at_ms)``: a downlink fully received at ``at_ms`` (window open or
  locked); ``poll()`` at or after ``at_ms`` returns ``("rx", phy, rssi, snr)``.
* ``next_event_ms()`` -> the earliest virtual ms at which ``poll()`` has something to return
  (TX end, delivery, window timeout), or None; the hub wakes the board then.
* ``channel_power`` (a callable ``(freq_hz, now_ms) -> dBm`` or None) answers ``rssi()``, for
  KR920 listen-before-talk; without it the channel is idle (thermal noise).

Why a window "catches" a frame with a tolerance: a real receiver locks on a preamble if it is
listening while enough preamble symbols remain, and the MAC's wake-up times are rounded to
milliseconds while the forwarder schedules in microseconds. So a downlink starting at T is
caught when the window is open at some instant of its preamble with >= 5 symbols left
(``open <= T + (8 + 4.25 - 5) Tsym``) and had not timed out before T (``close >= T``).
Same frequency (within 1 kHz), SF and bandwidth are required; IQ is implied (boards only ever
receive downlinks, the hub never offers them uplinks).
"""

from protocol.lorawan import airtime

NOISE_DBM = -120  # idle channel as the SX127x RSSI register shows it (125 kHz, NF 6 dB ~ -117)
LOCK_SYMBOLS = 5  # preamble symbols a receiver needs to lock
PREAMBLE = 8


class SimRadio:
    """One half-duplex transceiver; see the module docstring.

    It is also the link between a register-level chip model (sim/devices/sx1276.py,
    sx1262.py) and the medium: the model decodes what the driver programmed and calls the
    firmware-side methods with it, so ``transmit`` takes two more arguments a driver never
    passes: ``airtime_us`` (the time on air the chip's registers give; None = LoRaWAN's
    uplink defaults) and ``lorawan`` (False: the frame is on the air, occupying the channel,
    but no LoRaWAN gateway demodulates it: wrong sync word, IQ inverted, no CRC, implicit
    header)."""

    def __init__(self, name=""):
        self.name = name
        self.now_ms = 0
        self.channel_power = None
        self.counters = {"tx": 0, "rx": 0, "rx_timeout": 0, "standby": 0, "rx_lost": 0}
        self._reset()

    def _reset(self):
        self._tx_out = []  # transmissions not yet taken by the hub
        self._tx_end_us = None  # TX in progress until then
        self._window = None  # [freq, sf, bw, open_ms, close_ms]
        self._locked = None  # (at_ms, phy, rssi, snr): a frame being received by the window
                             # (phy None: locked, outcome not known yet)
        self._events = []  # ready events, in order

    # ---- firmware side -----------------------------------------------------------------

    def rssi(self, freq_hz):
        if self.channel_power is None:
            return NOISE_DBM
        return int(round(self.channel_power(freq_hz, self.now_ms)))

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data, airtime_us=None, lorawan=True):
        data = bytes(data)
        self._abort()
        toa = airtime_us
        if toa is None:
            toa = airtime.time_on_air_us(len(data), sf, bw_hz)  # uplink: explicit header, CRC on
        self._tx_end_us = self.now_ms * 1000 + toa
        self._tx_out.append((self.now_ms, freq_hz, sf, bw_hz, power_dbm, data, toa, lorawan))
        self.counters["tx"] += 1

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        self._abort()
        self._window = [freq_hz, sf, bw_hz, self.now_ms, self.now_ms + max(0, int(timeout_ms))]

    def poll(self):
        self._advance(self.now_ms)
        if self._events:
            return self._events.pop(0)
        return None

    def standby(self):
        self._abort()
        self.counters["standby"] += 1

    def _abort(self):
        # a new TX/RX or standby aborts what the chip was doing; events already ready stay
        self._advance(self.now_ms)
        if self._tx_end_us is not None:
            self._tx_end_us = None  # TX cut short: the hub already has the frame (rare)
        if self._locked is not None:
            self.counters["rx_lost"] += 1
        self._window = None
        self._locked = None

    def _advance(self, now_ms):
        if self._tx_end_us is not None and now_ms * 1000 >= self._tx_end_us:
            self._tx_end_us = None
            self._events.append(("tx_done",))
        if self._locked is not None and now_ms >= self._locked[0]:
            _, phy, rssi, snr = self._locked
            self._locked = None
            self._window = None
            if phy is None:
                self._events.append(("rx_timeout",))
                self.counters["rx_lost"] += 1
            else:
                self._events.append(("rx", phy, rssi, snr))
                self.counters["rx"] += 1
        elif self._locked is None and self._window is not None and now_ms >= self._window[4]:
            self._window = None
            self._events.append(("rx_timeout",))
            self.counters["rx_timeout"] += 1

    # ---- host side ---------------------------------------------------------------------

    def pending_tx(self):
        out, self._tx_out = self._tx_out, []
        return [t[:6] for t in out]

    def pending_frames(self):
        """The frames pending_tx() would return, as dicts with airtime_us and lorawan too."""
        out, self._tx_out = self._tx_out, []
        keys = ("start_ms", "freq_hz", "sf", "bw_hz", "power_dbm", "phy", "airtime_us",
                "lorawan")
        return [dict(zip(keys, t)) for t in out]

    def rx_window(self):
        if self._window is None or self._locked is not None:
            return None
        return tuple(self._window)

    def catches(self, freq_hz, sf, bw_hz, start_us, airtime_us=None):
        w = self.rx_window()
        if w is None:
            return False
        wf, wsf, wbw, open_ms, close_ms = w
        if abs(wf - freq_hz) > 1000 or wsf != sf or wbw != bw_hz:
            return False
        quarters = PREAMBLE * 4 + 17 - 4 * LOCK_SYMBOLS  # preamble left to lock, in 1/4 symbols
        slack_us = quarters * airtime.symbol_time_ns(sf, bw_hz) // 4000
        return open_ms * 1000 <= start_us + slack_us and close_ms * 1000 >= start_us

    def lock(self, until_ms):
        """The open window locked on a preamble; the frame's fate is known by until_ms."""
        if self.rx_window() is None:
            raise RuntimeError("%s: lock() without an open RX window" % self.name)
        self._locked = (int(until_ms), None, None, None)

    def locked(self):
        return self._locked is not None and self._locked[1] is None

    def deliver(self, phy, rssi, snr, at_ms):
        """The open (or locked) window receives phy, complete at at_ms."""
        if self._window is None or (self._locked is not None and self._locked[1] is not None):
            raise RuntimeError("%s: deliver() without an open RX window" % self.name)
        self._locked = (int(at_ms), bytes(phy), rssi, snr)

    def next_event_ms(self):
        if self._events:
            return self.now_ms
        times = []
        if self._tx_end_us is not None:
            times.append(-(-self._tx_end_us // 1000))
        if self._locked is not None:
            times.append(self._locked[0])
        elif self._window is not None:
            times.append(self._window[4])
        return min(times) if times else None

    def busy(self):
        """True while transmitting or listening (the hub must not skip past its events)."""
        return self._tx_end_us is not None or self._window is not None

    def clear_events(self):
        self._events = []

    def power_off(self):
        """Power cut: the chip forgets everything, including frames the hub has not taken."""
        self._reset()


def carry_out(r, fn, a):
    """One radio call that a board's VM sent over its line (sim/mpvm/board.py,
    sim/devices/free_running_board.py: bytes as hex) carried out on its SimRadio r at r.now_ms
    -> [value], or the error as a string (the firmware sees an exception from its driver)."""
    try:
        if fn == "poll":
            ev = r.poll()
            if ev is not None and ev[0] == "rx":
                ev = ("rx", ev[1].hex(), ev[2], ev[3])
            return [ev]
        if fn == "transmit":
            r.transmit(a[0], a[1], a[2], a[3], bytes.fromhex(a[4]), *a[5:7])
        elif fn == "receive":
            r.receive(*a)
        elif fn == "rssi":
            return [r.rssi(*a)]
        elif fn == "standby":
            r.standby()
        elif fn == "power_off":
            r.power_off()
        else:
            return "unknown radio call %r" % fn
    except Exception as e:  # noqa: BLE001
        return repr(e)
    return [None]

"""A meter's RS-485 transceiver and its wire, paced at the baud rate: the model the firmware's
(fake) machine.UART is attached to, between the firmware and a host byte stream (a pty).

Host -> meter: a chunk the host wrote at time t occupies the wire from max(t, the host's
previous chunk's end), each byte reaching the UART when its stop bit has arrived, so the
firmware's deframer sees the request as it would on a real line. Bytes arriving while the meter drives the line
(DE high; RE is tied to DE) are lost, as on a half-duplex transceiver.

Meter -> host: uart_write() puts each byte on the wire one character time after the previous
one, from the moment it was written; a byte is only driven if DE is high when it starts and
when it ends (else it is lost and counted: the firmware dropped DE too early or raised it too
late). take_sent(now) hands the host the bytes whose stop bit has left by `now`.

Faults (LineFaults): noise, silence and garbage per reply, for the gateway's fault handling.

Times are CPython microseconds (not wrapped); `clock_us()` and `de_level()` are callables, and
`timing()` says (baud, bits per character) in force (it follows the firmware's baud changes).
Byte k of a burst ends at ceil(k * bits * 1e6 / baud) after the burst's start: exact wire time,
not k rounded character times.

Bus: several such transceivers on one pair with the master (the host): what the host writes
reaches every meter, what a meter drives reaches the host and every other meter (overheard,
as on a real bus), so each slave's deframer sees all traffic, and only the addressed one
answers.
"""

import bisect


class PacedLine:
    def __init__(self, clock_us, de_level, timing, faults=None):
        self.faults = faults
        self._clock = clock_us
        self._de = de_level
        self._timing = timing
        self._inbound = []  # (deliver_at_us, byte)
        self._outbound = []  # [start_us, end_us, byte]
        self._host_free = 0  # the host's driver is busy until then
        self._meter_free = 0  # the meter's UART is busy until then
        self.lost_de = 0  # bytes the firmware wrote without DE held over their whole time
        self.lost_rx = 0  # host bytes that arrived while the meter was driving the line
        self.tx_log = []  # (start_us, end_us) of every byte put on the wire (tests read it)

    def _wire_us(self, n):
        baud, bits = self._timing()
        return -(-n * bits * 1000000 // baud)

    # ---------------------------------------------------------------- host side

    def from_host(self, data, now_us):
        """The host wrote `data` at now_us; each byte reaches the UART when its stop bit has."""
        t0 = max(now_us, self._host_free)
        k = 0
        end = t0
        for b in bytes(data):
            k += 1
            end = t0 + self._wire_us(k)
            bisect.insort(self._inbound, (end, b))
        self._host_free = end

    def take_sent(self, now_us):
        """Bytes the meter has finished putting on the wire by now_us."""
        return bytes(b for _, _, b in self.take_sent_timed(now_us))

    def take_sent_timed(self, now_us):
        """[(start_us, end_us, byte)] the meter has finished putting on the wire by now_us."""
        out = []
        q = self._outbound
        while q and q[0][1] <= now_us:
            start, end, b, noise = q.pop(0)
            if noise:
                out.append((start, end, b))
            elif self._de():
                out.append((start, end, b))
                self.tx_log.append((start, end))
            else:
                self.lost_de += 1
        return out

    def overhear(self, timed):
        """Bytes another transceiver on the same pair drove ([(start_us, end_us, byte)]):
        they reach this UART at their end, as the host's do."""
        for _, end, b in timed:
            bisect.insort(self._inbound, (end, b))

    def next_event(self):
        """Earliest time at which a byte is delivered either way (None: nothing pending)."""
        t = None
        if self._inbound:
            t = self._inbound[0][0]
        if self._outbound and (t is None or self._outbound[0][1] < t):
            t = self._outbound[0][1]
        return t

    # ---------------------------------------------------------------- UART side

    def uart_read(self, n):
        now = self._clock()
        out = bytearray()
        q = self._inbound
        while q and q[0][0] <= now and len(out) < n:
            b = q.pop(0)[1]
            if self._de():
                self.lost_rx += 1
            else:
                out.append(b)
        return bytes(out)

    def uart_write(self, data):
        now = self._clock()
        if not self._de():
            self.lost_de += len(data)
            return
        tail = b""
        if self.faults is not None:
            data, tail = self.faults.apply(bytes(data))
        t0 = max(now, self._meter_free)
        self._meter_free = self._schedule(data, t0, False)
        if tail:  # line noise after the reply's t3.5: nobody drives it, DE does not matter
            self._schedule(tail, self._meter_free + self._wire_us(4), True)

    def _schedule(self, data, t0, noise):
        t = t0
        k = 0
        for b in data:
            k += 1
            end = t0 + self._wire_us(k)
            self._outbound.append([t, end, b, noise])
            t = end
        return t

    def uart_txdone(self, now_us=None):
        """True when every written byte has left the wire."""
        now = self._clock() if now_us is None else now_us
        return not self._outbound or self._outbound[-1][1] <= now


class Bus:
    """Meters on one RS-485 pair with the host, in one process and one time line.

    A meter here is anything with `line` (its PacedLine), `t` (its time, µs), `next_due()`
    (µs or None) and `poll_at(t) -> [(start, end, byte)]` it drove (sim.meter.EmulatedMeter).
    advance(now) runs them all through every event up to now in time order, each polled at
    its own instant, and hands every byte a meter drives to the others; the host gets all of
    them in wire order. Two meters driving at once (a duplicated address) interleave their
    bytes: the master sees a CRC error, as it would with a collision."""

    def __init__(self, meters):
        self.meters = list(meters)

    def from_host(self, data, now_us):
        for m in self.meters:
            m.line.from_host(data, now_us)

    def next_due(self):
        t = None
        for m in self.meters:
            d = m.next_due()
            if d is not None and (t is None or d < t):
                t = d
        return t

    def _drove(self, meter, timed, out):
        if timed:
            for other in self.meters:
                if other is not meter:
                    other.line.overhear(timed)
            out.extend(timed)

    def advance(self, now_us):
        """Bytes every meter put on the wire up to now_us (the host's to read)."""
        out = []
        while True:
            t = self.next_due()
            if t is None or t > now_us:
                break
            for m in self.meters:
                d = m.next_due()
                if d is not None and d <= t:
                    self._drove(m, m.poll_at(max(t, m.t)), out)
        for m in self.meters:
            self._drove(m, m.poll_at(max(now_us, m.t)), out)
        out.sort(key=lambda x: x[1])
        return bytes(b for _, _, b in out)


class LineFaults:
    """Faults on the meter's side of the line, decided per reply with a seeded RNG:
    noise (one random bit of the reply flipped: the master sees a CRC error), silence (the reply
    never reaches the wire: a timeout) and garbage (1..8 random bytes after the reply, past
    t3.5). Rates are probabilities 0..1; counters say what was injected."""

    def __init__(self, noise=0.0, silence=0.0, garbage=0.0, seed=0):
        import random

        for name, rate in (("noise", noise), ("silence", silence), ("garbage", garbage)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError("%s rate must be 0..1, got %r" % (name, rate))
        self.noise, self.silence, self.garbage = noise, silence, garbage
        self._rng = random.Random(seed)
        self.noisy = self.silenced = self.garbled = 0

    def apply(self, data):
        """(the reply as it goes on the wire, garbage bytes to follow it)."""
        rng = self._rng
        if self.silence and rng.random() < self.silence:
            self.silenced += 1
            return b"", b""
        if self.noise and data and rng.random() < self.noise:
            self.noisy += 1
            buf = bytearray(data)
            bit = rng.randrange(8 * len(buf))
            buf[bit // 8] ^= 1 << (bit % 8)
            data = bytes(buf)
        tail = b""
        if self.garbage and rng.random() < self.garbage:
            self.garbled += 1
            tail = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return data, tail


class PtyLink:
    """Pseudo-terminals joined like one RS-485 bus: with ends=2 what `socat pty,raw,echo=0
    pty,raw,echo=0` makes (what one end's user writes, the other reads); with more ends, what
    any end writes reaches every other end (a master on one, a meter on each of the others).
    `paths` are the device names (open them like serial ports). All ends are raw; a thread
    relays between the masters. Close with close() (or use it as a context manager)."""

    def __init__(self, ends=2):
        import os
        import threading
        import tty

        self._os = os
        self._fds = []
        self.paths = []
        self._masters = []
        for _ in range(ends):
            m, s = os.openpty()
            tty.setraw(s)
            self._masters.append(m)
            self._fds += [m, s]
            self.paths.append(os.ttyname(s))
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty-link", daemon=True)
        self._thread.start()

    def _relay(self):
        import select

        os = self._os
        ends = self._masters
        while True:
            r, _, _ = select.select(ends + [self._stop_r], [], [])
            if self._stop_r in r:
                return
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                for other in ends:
                    if other != fd and data:
                        os.write(other, data)

    def close(self):
        os = self._os
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in self._fds + [self._stop_r, self._stop_w]:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Register-level model of a Semtech SX1276 (RFM95W class) on the fake SPI bus, NRESET, DIO0
and DIO1 pins.

Why a model: the firmware's driver (firmware/drivers/sx127x.py) must be tested against what
the silicon does with its registers, not against a stand-in for the driver. The model keeps
the register file and the FIFO the driver writes and decodes frequency, SF, BW, CR, preamble,
header, CRC, IQ, sync word and power from them when TX or RX starts, so a mis-driven chip goes
wrong on the air.

SPI (4.3): each NSS frame is an address byte (bit 7 = write) and data bytes; the address
auto-increments, except at RegFifo (0x00), which reads/writes the FIFO at RegFifoAddrPtr and
advances that pointer. Refused (recorded in `refused`, ignored): a change of RegOpMode's LoRa
bit outside sleep (the mode bits of the same write are applied), FIFO access in sleep, TX/RX
in FSK mode, SPI within 5 ms of NRESET rising (or 10 ms of power-on), writes to read-only
registers.

Board facts the chip cannot see: `pa_boost` (True: the antenna is on PA_BOOST, False: on
RFO); a frame sent on the other PA leaves ~40 dB weaker. `version`: RegVersion (0x12; 0 for a
dead chip).

Timing on the board's ms clock: TxDone after the time on air the registers give, then
standby. RXSINGLE opens a window for RegSymbTimeout symbols on the link only when the chip
could demodulate a LoRaWAN downlink (LoRa mode, RegInvertIQ bit 6 set and RegInvertIQ2 0x19,
sync word 0x34, explicit header); otherwise it times out on its own after those symbols.
RXCONTINUOUS opens no window: RegRssiValue reads the link's channel power (LBT). A received
frame is written to the FIFO at RegFifoRxBaseAddr with PktSnr (x4) and PktRssi encoded as 5.5.5
decodes them (offset -157 dBm on the HF port, -164 on the LF port). DIO0 follows RegDioMapping1
bits 7:6 (00 RxDone, 01 TxDone, 10 CadDone), DIO1 bits 5:4 (00 RxTimeout).
MicroPython-compatible: it runs inside the VM beside the firmware.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_SLEEP = const(0)
_STANDBY = const(1)
_TX = const(3)
_RX_CONTINUOUS = const(5)
_RX_SINGLE = const(6)

_IRQ_RX_TIMEOUT = const(0x80)
_IRQ_RX_DONE = const(0x40)
_IRQ_VALID_HEADER = const(0x10)
_IRQ_TX_DONE = const(0x08)
_IRQ_CAD_DONE = const(0x04)

_BW_HZ = const((7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000))
# FifoRxCurrentAddr, RxNbBytes, packet counters and status, RSSI, version (bytes: a tuple
# would hold heap on the VM, a bytes constant stays in flash)
_READ_ONLY = const(b"\x10\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x25\x2c\x42")
_REFUSED_KEPT = const(32)
_PA_LOSS_DB = const(40)
# the register file after power-on / reset (datasheet table 41, LoRa column where the modes
# share an address), as address, value pairs; RegVersion (0x42) is the model's `version`
_RESET = const(b"\x01\x09\x06\x6c\x07\x80\x09\x4f\x0a\x09\x0b\x2b\x0c\x20\x0e\x80\x1d\x72\x1e\x70"
               b"\x1f\x64\x21\x08\x22\x01\x23\xff\x24\x00\x31\xc3\x33\x27\x36\x03\x37\x0a"
               b"\x39\x12\x3b\x1d\x4d\x84")


def attach(machine, p, link, clock, radio_fault):
    """The chip of a board whose radio profile is p (sim.devices.pole_board.attach_radio);
    radio_fault "dead": its version register reads 0x00."""
    return SX1276(machine, {"cs": p["cs"], "reset": p["reset"], "dio0": p["irq"]}, link, clock,
                  0 if radio_fault == "dead" else 0x12, p["pa_boost"])


class SX1276:
    def __init__(self, machine, pins, link, clock, version=0x12, pa_boost=True):
        self._machine = machine
        self._dio = [pins.get("dio0"), pins.get("dio1"), None, None]  # pins, levels driven
        self._link = link
        self._clock = clock
        self.version = version
        self.pa_boost = pa_boost
        self.counters = {"tx": 0, "rx_done": 0, "rx_timeout": 0, "refused": 0}
        self.refused = []
        self.fifo = bytearray(256)
        self._addr = None
        self._write = False
        self._nreset = 1
        self._defaults()
        self._ready_at = self._clock() + 10  # POR: 10 ms before the chip takes SPI
        self._outputs()
        if pins.get("reset") is not None:
            machine.watch(pins["reset"], self._on_reset)

    # ---- power, reset, DIO ----------------------------------------------------------------

    def _defaults(self):
        r = self.regs = bytearray(0x80)
        for i in range(0, len(_RESET), 2):
            r[_RESET[i]] = _RESET[i + 1]
        r[0x42] = self.version
        self._tx_end = None
        self._rx_end = None
        self._rx_link = False

    def power_cut(self):
        self._link.power_off()
        self._defaults()
        self._ready_at = self._clock() + 10  # POR, as at __init__
        self._outputs()

    def _on_reset(self, level):
        level = 0 if level == 0 else 1  # None: not driven, the chip's pull-up holds it high
        if level == self._nreset:
            return
        self._nreset = level
        self._stop_link()
        self._defaults()
        self._ready_at = None if level == 0 else self._clock() + 5
        self._outputs()

    def _outputs(self):
        r = self.regs
        irq = r[0x12]
        m = r[0x40]
        d0 = (m >> 6) & 3
        bit0 = _IRQ_RX_DONE if d0 == 0 else _IRQ_TX_DONE if d0 == 1 else _IRQ_CAD_DONE
        bit1 = _IRQ_RX_TIMEOUT if (m >> 4) & 3 == 0 else 0
        # unrolled: runs on every NSS edge, and a loop over tuples would allocate each time
        dio = self._dio
        level = 1 if irq & bit0 else 0
        if dio[0] is not None and level != dio[2]:
            dio[2] = level
            self._machine.drive(dio[0], level)
        level = 1 if irq & bit1 else 0
        if dio[1] is not None and level != dio[3]:
            dio[3] = level
            self._machine.drive(dio[1], level)

    def _refuse(self, why):
        self.counters["refused"] += 1
        if len(self.refused) < _REFUSED_KEPT:
            self.refused.append(why)

    @property
    def mode(self):
        return self.regs[0x01] & 0x07

    def lora(self):
        return bool(self.regs[0x01] & 0x80)

    # ---- time ---------------------------------------------------------------------------

    def advance(self):
        now = self._clock()
        mode = self.mode
        if mode == _TX and self._tx_end is not None:
            if now >= self._tx_end:
                self._link.poll()  # the link's own ("tx_done",): the model times TxDone itself
                self._tx_end = None
                self._set_mode(_STANDBY)
                self.regs[0x12] |= _IRQ_TX_DONE
        elif mode == _RX_SINGLE:
            if self._rx_link:
                ev = self._link.poll()
                while ev is not None and ev[0] == "tx_done":
                    ev = self._link.poll()
                if ev is not None:
                    self._rx_event(ev)
            elif self._rx_end is not None and now >= self._rx_end:
                self._rx_timeout()
        self._outputs()

    def _set_mode(self, mode):
        self.regs[0x01] = (self.regs[0x01] & 0xF8) | mode

    def _rx_event(self, ev):
        self._rx_link = False
        if ev[0] != "rx":
            self._rx_timeout()
            return
        phy = ev[1]
        n = len(phy)
        r = self.regs
        self._set_mode(_STANDBY)
        if n > r[0x23]:  # longer than RegMaxPayloadLength: the chip drops it
            self._rx_timeout()
            return
        base = r[0x0F]
        for i in range(n):
            self.fifo[(base + i) & 0xFF] = phy[i]
        snr_q = max(-128, min(127, int(round(ev[3] * 4))))
        offset = -164 if self.lf_port() else -157
        rssi = int(round(ev[2]))
        if snr_q >= 0:
            raw = ((rssi - offset) * 15 + 8) // 16
        else:
            raw = rssi - offset - snr_q // 4
        r[0x10] = base
        r[0x13] = n
        r[0x19] = snr_q & 0xFF
        r[0x1A] = max(0, min(255, raw))
        r[0x12] |= _IRQ_RX_DONE | _IRQ_VALID_HEADER
        self.counters["rx_done"] += 1

    def _rx_timeout(self):
        self._set_mode(_STANDBY)
        self._rx_end = None
        self._rx_link = False
        self.regs[0x12] |= _IRQ_RX_TIMEOUT
        self.counters["rx_timeout"] += 1

    def _stop_link(self):
        mode = self.regs[0x01] & 0x07
        if (mode == _TX and self._tx_end is not None) or (mode == _RX_SINGLE and self._rx_link):
            self._link.standby()
        self._tx_end = self._rx_end = None
        self._rx_link = False

    # ---- SPI ----------------------------------------------------------------------------

    def spi_select(self, selected):
        self._addr = None
        if not selected:
            self._outputs()

    def spi_transfer(self, mosi):
        out = bytearray(len(mosi))
        if self._ready_at is None or self._clock() < self._ready_at:  # in reset or booting
            if len(mosi):
                self._refuse("SPI while the chip is in reset or booting")
            return out  # MISO not driven yet: reads 0x00
        for j in range(len(mosi)):
            b = mosi[j]
            if self._addr is None:
                self._addr = b & 0x7F
                self._write = bool(b & 0x80)
                out[j] = 0
                continue
            a = self._addr
            r = self.regs
            if a == 0x00:  # RegFifo: at RegFifoAddrPtr, which advances; no FIFO in sleep
                if self.mode == _SLEEP:
                    self._refuse("FIFO access in sleep")
                    continue
                ptr = r[0x0D]
                out[j] = self.fifo[ptr]
                if self._write:
                    self.fifo[ptr] = b
                r[0x0D] = (ptr + 1) & 0xFF
                continue
            out[j] = r[a]
            if self._write:
                self._write_reg(a, b)
            elif a == 0x1B:  # RegRssiValue: the channel's power, in RX modes only
                m = self.mode
                rssi = 0
                if m == _RX_CONTINUOUS or m == _RX_SINGLE:
                    offset = -164 if self.lf_port() else -157
                    rssi = max(0, min(255, int(self._link.rssi(self.freq_hz())) - offset))
                out[j] = rssi
            self._addr = (a + 1) & 0x7F
        return out

    def _write_reg(self, a, v):
        r = self.regs
        if a == 0x12:  # write 1 to clear
            r[0x12] &= ~v & 0xFF
            return
        if a in _READ_ONLY:
            self._refuse("write 0x%02X to read-only register 0x%02X" % (v, a))
            return
        if a != 0x01:
            r[a] = v
            return
        # RegOpMode
        old = r[0x01]
        if (v ^ old) & 0x80 and old & 0x07 != _SLEEP:
            self._refuse("RegOpMode LoRa bit changed outside sleep (0x%02X -> 0x%02X)" % (old, v))
            v = (v & 0x7F) | (old & 0x80)
        mode = v & 0x07
        if mode != old & 0x07:
            self._stop_link()
        r[0x01] = v
        if mode in (_TX, _RX_SINGLE, _RX_CONTINUOUS) and not v & 0x80:
            self._refuse("mode %d in FSK mode: the LoRa bit is not set" % mode)
            return
        if mode == _TX and old & 0x07 != _TX:
            self._start_tx()
        elif mode == _RX_SINGLE and old & 0x07 != _RX_SINGLE:
            self._start_rx()

    # ---- decoding what the driver programmed ----------------------------------------------

    def frf(self):
        r = self.regs
        return r[0x06] << 16 | r[0x07] << 8 | r[0x08]

    def freq_hz(self):
        """Frf * 32 MHz / 2^19 = Frf * 15625 / 2^8, rounded to the Hz."""
        w = self.frf()
        return (w >> 8) * 15625 + (((w & 0xFF) * 15625 + 128) >> 8)

    def lf_port(self):
        return bool(self.regs[0x01] & 0x08)

    def bw_hz(self):
        c = self.regs[0x1D] >> 4
        return _BW_HZ[c] if c < len(_BW_HZ) else 0

    def sf(self):
        return self.regs[0x1E] >> 4

    def cr(self):
        return (self.regs[0x1D] >> 1) & 0x07

    def implicit(self):
        return bool(self.regs[0x1D] & 0x01)

    def crc(self):
        return bool(self.regs[0x1E] & 0x04)

    def preamble(self):
        return self.regs[0x20] << 8 | self.regs[0x21]

    def sync_word(self):
        return self.regs[0x39]

    def symb_timeout(self):
        return (self.regs[0x1E] & 0x03) << 8 | self.regs[0x1F]

    def _lora_ok(self, mode):
        sf, bw, cr = self.sf(), self.bw_hz(), self.cr()
        if bw == 0 or not 6 <= sf <= 12 or not 1 <= cr <= 4:
            self._refuse("mode %d: invalid modulation SF%d bw code %d cr %d"
                         % (mode, sf, self.regs[0x1D] >> 4, cr))
            return False
        return True

    def _start_tx(self):
        if not self._lora_ok(_TX):
            self._set_mode(_STANDBY)
            return
        r = self.regs
        n = r[0x22]
        base = r[0x0E]
        data = bytes(self.fifo[(base + i) & 0xFF] for i in range(n))
        sf, bw = self.sf(), self.bw_hz()
        from protocol.lorawan.airtime import time_on_air_us  # loaded by the firmware's boot

        airtime = time_on_air_us(n, sf, bw, cr=self.cr(), preamble=self.preamble(),
                                 crc=self.crc(), explicit_header=not self.implicit(),
                                 low_dr_optimize=bool(r[0x26] & 0x08))
        iq_normal = r[0x33] & 0x01 and r[0x3B] == 0x1D  # RegInvertIQ bit 0, RegInvertIQ2
        lorawan = self.sync_word() == 0x34 and iq_normal and not self.implicit() and self.crc()
        # power at the selected PA's pin from RegPaConfig and RegPaDac (5.4.3)
        pa = r[0x09]
        if pa & 0x80:  # PA_BOOST
            dbm = (pa & 0x0F) + (5 if r[0x4D] & 0x07 == 0x07 else 2)
        else:
            dbm = (108 + 6 * ((pa >> 4) & 0x07)) // 10 - 15 + (pa & 0x0F)
        if self.pa_boost != bool(pa & 0x80):
            dbm -= _PA_LOSS_DB  # the antenna is on the other PA's pin
        self._link.transmit(self.freq_hz(), sf, bw, dbm, data, airtime, bool(lorawan))
        self._tx_end = self._clock() + (airtime + 999) // 1000
        self.counters["tx"] += 1

    def _start_rx(self):
        if not self._lora_ok(_RX_SINGLE):
            self._set_mode(_STANDBY)
            return
        sf, bw = self.sf(), self.bw_hz()
        timeout_ms = -(-self.symb_timeout() * (1000 << sf) // bw)
        r = self.regs
        iq_inverted = r[0x33] & 0x40 and r[0x3B] == 0x19
        hears = iq_inverted and self.sync_word() == 0x34 and not self.implicit()
        if hears:
            self._link.receive(self.freq_hz(), sf, bw, timeout_ms)
            self._rx_link = True
        else:
            self._rx_end = self._clock() + timeout_ms

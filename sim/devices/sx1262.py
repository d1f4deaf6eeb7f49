"""Command-level model of a Semtech SX1261/62 on the fake SPI bus, BUSY, DIO1 and NRESET pins.

Why a model: the firmware's driver (firmware/drivers/sx126x.py) must be tested against what the
silicon does with its commands, not against a stand-in for the driver. The model keeps every
parameter the driver sends and decodes frequency, SF, BW, CR, preamble, header, CRC, IQ, sync
word and power from them when TX/RX starts, so a mis-driven chip goes wrong on the air.

Board facts the chip cannot see: `tcxo_mv` (its TCXO needs DIO3 at that voltage or the
oscillator never starts: SetTx/SetRx/STDBY_XOSC fail with XOSC_START_ERR; 0 = crystal) and
`dio2_rf_switch` (the antenna switch follows DIO2: without SetDio2AsRfSwitchCtrl the frame leaks
out ~40 dB weaker). `stuck_busy`: a wiring fault, BUSY never falls.

Timing on the board's ms clock: BUSY high while NRESET is low and 3.5 ms after, 3.5 ms after
Calibrate, 1 ms after CalibrateImage, 3.5 ms (+ TCXO delay) after a wake from sleep; other
commands take microseconds and are modelled as instantaneous. Refused (recorded in `refused`,
ignored): a frame that starts while BUSY is high, commands in sleep but the wake edge
(GetStatus / SetStandby), SetTx/SetRx without a running oscillator, modulation/packet params
before SetPacketType(LoRa), unknown opcodes or short frames, a PA config for the other chip.
SX1261: SetTxParams above +14 dBm is clamped to +14 (+15 dBm out with duty cycle 0x06), as the
low-power PA tops out there; recorded as refused. SetTx's own timeout is not modelled.

RX: single mode with a timeout (t * 15.625 us, floor to ms) or without one (t = 0); only a
config able to demodulate a LoRaWAN downlink (IQ inverted with register 0x0736 bit 2 cleared,
sync word 0x3444, explicit header) opens a window on the link; otherwise the model times out on
its own. Continuous RX (0xFFFFFF) is used for channel sensing: it opens no window, GetRssiInst
reads the link's channel power. A frame longer than the RX payload length is dropped with
HeaderErr. TX with BW 500 kHz and register 0x0889 bit 2 set (errata 15.1 not applied) goes on
the air as lorawan=False: its degraded modulation is not demodulated by a gateway.
MicroPython-compatible: it runs inside the VM beside the firmware.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_SLEEP = const(0)
_STBY_RC = const(2)
_STBY_XOSC = const(3)
_FS = const(4)
_RX = const(5)
_TX = const(6)
_RESET = const(7)  # NRESET held low (not a chip mode: the status cannot be read)

_IRQ_TX_DONE = const(0x0001)
_IRQ_RX_DONE = const(0x0002)
_IRQ_PREAMBLE = const(0x0004)
_IRQ_HEADER_VALID = const(0x0010)
_IRQ_HEADER_ERR = const(0x0020)
_IRQ_TIMEOUT = const(0x0200)
_ERR_XOSC_START = const(0x0020)
_ERR_PLL_CALIB = const(0x0004)

_BW_HZ = (7810, 15630, 31250, 62500, 125000, 250000, 500000, 0, 10420, 20830, 41670)
_TCXO_MV = (1600, 1700, 1800, 2200, 2400, 2700, 3000, 3300)
_HP_MAX_DBM = (8, 11, 14, 17, 18, 20, 21, 22)  # SX1262 output ceiling per hpMax (table 13-21)
_NO_TIMEOUT_MS = const(86400000)  # single RX without timeout: the window stays open a day
_REFUSED_KEPT = const(32)  # refusals listed (all are counted)
_RF_SWITCH_LOSS_DB = const(40)


def attach(machine, p, link, clock, radio_fault):
    """The chip of a board whose radio profile is p (sim.devices.pole_board.attach_radio);
    radio_fault "busy_stuck": its BUSY never falls."""
    return SX1262(machine, {"cs": p["cs"], "reset": p["reset"], "busy": p["busy"],
                            "dio1": p["irq"]}, link, clock, tcxo_mv=p["tcxo_mv"],
                  dio2_rf_switch=p["dio2_rf_switch"], stuck_busy=radio_fault == "busy_stuck")


class SX1262:
    def __init__(self, machine, pins, link, clock, tcxo_mv=1800, dio2_rf_switch=True,
                 sx1261=False, stuck_busy=False):
        self._machine = machine
        self._busy_pin = pins["busy"]
        self._dio1_pin = pins.get("dio1")
        self._link = link
        self._clock = clock
        self.tcxo_mv = tcxo_mv
        self.dio2_rf_switch = dio2_rf_switch
        self.sx1261 = sx1261
        self.stuck_busy = stuck_busy
        self.counters = {"tx": 0, "rx_done": 0, "rx_timeout": 0, "refused": 0}
        self.refused = []
        self.buffer = bytearray(256)
        self._frame = bytearray(264)
        self._n = 0
        self._selected = False
        self._frame_ok = False
        self._wake = False
        self._busy_level = None
        self._dio1_level = None
        self._nreset = 1
        self._power_on()
        if pins.get("reset") is not None:
            machine.watch(pins["reset"], self._on_reset)

    # ---- power, reset, BUSY, DIO1 -------------------------------------------------------

    def _defaults(self):
        self.regs = {0x0740: 0x14, 0x0741: 0x24, 0x0736: 0x0D, 0x0889: 0x04, 0x08D8: 0xC8}
        self.packet_type = 0  # GFSK after reset
        self.frf = 0
        self.sf, self.bw_code, self.cr, self.ldro = 7, 4, 1, 0
        self.preamble, self.implicit, self.payload_len, self.crc, self.invert_iq = 12, 0, 255, 1, 0
        self.tcxo_code = None
        self.tcxo_delay = 0
        self.rf_switch = False
        self.regulator = 0
        self.stop_on_preamble = 0
        if self.sx1261:
            self.pa_config = (0x04, 0x00, 0x01, 0x01)
        else:
            self.pa_config = (0x04, 0x07, 0x00, 0x01)
        self.power, self.ramp = 14, 0
        self.irq_mask = self.dio1_mask = self.dio2_mask = self.dio3_mask = 0
        self.irq = 0
        self.tx_base = self.rx_base = 0
        self.rx_len = self.rx_start = 0
        self.pkt_rssi = self.pkt_snr = self.pkt_signal = 0
        self.errors = 0
        self.cmd_status = 0
        self.image = None
        self._tx_end = None  # ms at which TxDone is due
        self._rx_end = None  # ms of the model's own RX timeout
        self._rx_link = False  # the RX window is open on the link
        self.mode = _STBY_RC

    def _power_on(self):
        self._defaults()
        self._busy_until = self._clock() + 4  # 3.5 ms of boot, on a whole-ms clock
        self._busy_level = None
        self._dio1_level = None
        self._outputs()

    def power_cut(self):
        self._link.power_off()
        self._power_on()

    def _on_reset(self, level):
        level = 0 if level == 0 else 1  # None: not driven, the chip's pull-up holds it high
        if level == self._nreset:
            return
        self._nreset = level
        if level == 0:
            self._stop_link()
            self._defaults()
            self.mode = _RESET
            self._busy_until = None
        else:
            self.mode = _STBY_RC
            self._busy_until = self._clock() + 4
        self._outputs()

    def _busy_high(self, now):
        if self.stuck_busy or self.mode in (_RESET, _SLEEP):
            return True
        if self._busy_until is not None:
            if now < self._busy_until:
                return True
            self._busy_until = None
        return False

    def _outputs(self):
        level = 1 if self._busy_high(self._clock()) else 0
        if level != self._busy_level:
            self._busy_level = level
            self._machine.drive(self._busy_pin, level)
        if self._dio1_pin is not None:
            level = 1 if self.irq & self.dio1_mask else 0
            if level != self._dio1_level:
                self._dio1_level = level
                self._machine.drive(self._dio1_pin, level)

    def _refuse(self, why):
        self.counters["refused"] += 1
        if len(self.refused) < _REFUSED_KEPT:
            self.refused.append(why)

    def _set_irq(self, bits):
        self.irq |= bits & self.irq_mask

    def _osc_ok(self):
        return (not self.tcxo_mv or self.tcxo_code is not None
                and _TCXO_MV[self.tcxo_code] >= self.tcxo_mv)

    # ---- time ---------------------------------------------------------------------------

    def advance(self):
        now = self._clock()
        if self.mode == _TX:
            if now >= self._tx_end:
                self._link.poll()  # the link's own ("tx_done",): the model times TxDone itself
                self._tx_end = None
                self.mode = _STBY_RC
                self._set_irq(_IRQ_TX_DONE)
        elif self.mode == _RX:
            if self._rx_link:
                ev = self._link.poll()
                while ev is not None and ev[0] == "tx_done":
                    ev = self._link.poll()
                if ev is not None:
                    self._rx_event(ev)
            elif self._rx_end is not None and now >= self._rx_end:
                self._rx_timeout()
        self._outputs()

    def _rx_event(self, ev):
        self._rx_link = False
        if ev[0] != "rx":
            self._rx_timeout()
            return
        self.mode = _STBY_RC
        phy = ev[1]
        n = len(phy)
        if n > self.payload_len:
            self._set_irq(_IRQ_PREAMBLE | _IRQ_HEADER_ERR)
            return
        base = self.rx_base
        for i in range(n):
            self.buffer[(base + i) & 0xFF] = phy[i]
        self.rx_len, self.rx_start = n, base
        self.pkt_rssi = max(0, min(255, int(round(-2 * ev[2]))))
        self.pkt_snr = max(-128, min(127, int(round(ev[3] * 4)))) & 0xFF
        self.pkt_signal = self.pkt_rssi
        self.counters["rx_done"] += 1
        self._set_irq(_IRQ_RX_DONE | _IRQ_HEADER_VALID | _IRQ_PREAMBLE)

    def _rx_timeout(self):
        self.mode = _STBY_RC
        self._rx_end = None
        self._rx_link = False
        self.counters["rx_timeout"] += 1
        self._set_irq(_IRQ_TIMEOUT)

    def _stop_link(self):
        if self.mode == _TX or (self.mode == _RX and self._rx_link):
            self._link.standby()
        self._tx_end = self._rx_end = None
        self._rx_link = False

    # ---- SPI ----------------------------------------------------------------------------

    def spi_select(self, selected):
        if selected:
            self._n = 0
            self._frame_ok = False
            self._wake = False
            if self.mode == _SLEEP:
                self._wake = True  # the falling edge wakes the chip; the frame is not executed
                self.mode = _STBY_RC
                self._busy_until = self._clock() + 4 + (self.tcxo_delay + 63) // 64
            elif self.mode != _RESET and not self._busy_high(self._clock()):
                self._frame_ok = True
            self._selected = True
        elif self._selected:
            self._selected = False
            n = self._n
            if n:
                op = self._frame[0]
                if self._wake:
                    if op not in (0xC0, 0x80):
                        self._refuse("cmd 0x%02X in sleep (only wakes the chip)" % op)
                elif not self._frame_ok:
                    self._refuse("cmd 0x%02X while BUSY high" % op)
                else:
                    self._execute(op, n)
            self._outputs()

    def _status(self):
        if self.mode in (_RESET, _SLEEP):
            return 0
        return self.mode << 4 | self.cmd_status << 1

    def spi_transfer(self, mosi):
        out = bytearray(len(mosi))
        f = self._frame
        for j in range(len(mosi)):
            i = self._n
            if i < len(f):
                f[i] = mosi[j]
            self._n = i + 1
            out[j] = self._answer(i) if self._frame_ok else self._status()
        return out

    def _answer(self, i):
        """MISO byte i of the current frame: the status, then the data a Get command reads."""
        f = self._frame
        op = f[0]
        if i == 0:
            return self._status()
        if op == 0x1D and i >= 4:
            return self.regs.get(((f[1] << 8 | f[2]) + i - 4) & 0xFFFF, 0)
        if op == 0x1E and i >= 3:
            return self.buffer[(f[1] + i - 3) & 0xFF]
        if i < 2:
            return self._status()
        if op == 0x12:
            v = self.irq
        elif op == 0x17:
            v = self.errors
        elif op == 0x13:
            v = self.rx_len << 8 | self.rx_start
        elif op == 0x14:
            return (0, 0, self.pkt_rssi, self.pkt_snr, self.pkt_signal, 0)[min(i, 5)]
        elif op == 0x15:
            if i != 2:
                return 0
            if self.mode != _RX:
                return 0xFF  # only valid in RX
            return max(0, min(255, -2 * int(self._link.rssi(self.freq_hz()))))
        else:
            return self._status()
        return (v >> 8) & 0xFF if i == 2 else v & 0xFF if i == 3 else 0

    def _execute(self, op, n):
        p = self._frame
        self.cmd_status = 0
        need = _PARAMS.get(op)
        if need is None:
            self._refuse("unknown opcode 0x%02X" % op)
            self.cmd_status = 4
            return
        if n < need + 1:
            self._refuse("cmd 0x%02X: %d parameter bytes, want %d" % (op, n - 1, need))
            self.cmd_status = 4
            return
        if op == 0x80:  # SetStandby
            if p[1] == 1 and not self._osc_ok():
                self._xosc_fail("SetStandby(STDBY_XOSC)")
                return
            self._stop_link()
            self.mode = _STBY_XOSC if p[1] == 1 else _STBY_RC
        elif op == 0x84:  # SetSleep: cold start (bit 2 clear) loses the configuration
            self._stop_link()
            if not p[1] & 0x04:
                self._defaults()
            self.mode = _SLEEP
        elif op in (0x83, 0x82, 0xC1):  # SetTx, SetRx, SetFs
            if not self._osc_ok():
                self._xosc_fail("Set%s" % ("Tx" if op == 0x83 else "Rx" if op == 0x82 else "Fs"))
                return
            self._stop_link()
            if op == 0x83:
                self._start_tx()
            elif op == 0x82:
                self._start_rx(p[1] << 16 | p[2] << 8 | p[3])
            else:
                self.mode = _FS
        elif op == 0x89:  # Calibrate
            self._busy_until = self._clock() + 4
            if not self._osc_ok():
                self.errors |= _ERR_XOSC_START | _ERR_PLL_CALIB
        elif op == 0x98:  # CalibrateImage
            self.image = p[1] << 8 | p[2]
            self._busy_until = self._clock() + 1
        elif op == 0x8A:
            self.packet_type = p[1]
        elif op in (0x8B, 0x8C):
            if self.packet_type != 1:
                self._refuse("cmd 0x%02X before SetPacketType(LoRa)" % op)
                return
            if op == 0x8B:
                self.sf, self.bw_code, self.cr, self.ldro = p[1], p[2], p[3], p[4]
            else:
                self.preamble = p[1] << 8 | p[2]
                self.implicit, self.payload_len, self.crc, self.invert_iq = p[3], p[4], p[5], p[6]
        elif op == 0x86:
            self.frf = p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4]
        elif op == 0x95:
            if (p[3] == 1) != bool(self.sx1261):
                self._refuse("SetPaConfig deviceSel %d on an %s"
                             % (p[3], "SX1261" if self.sx1261 else "SX1262"))
                return
            self.pa_config = (p[1], p[2], p[3], p[4])
        elif op == 0x8E:
            dbm = p[1] - 256 if p[1] > 127 else p[1]
            lo, hi = (-17, 14) if self.sx1261 else (-9, 22)
            if not lo <= dbm <= hi:
                self._refuse("SetTxParams %d dBm outside %d..%d: clamped" % (dbm, lo, hi))
                dbm = max(lo, min(hi, dbm))
            self.power, self.ramp = dbm, p[2]
        elif op == 0x08:
            self.irq_mask = p[1] << 8 | p[2]
            self.dio1_mask = p[3] << 8 | p[4]
            self.dio2_mask = p[5] << 8 | p[6]
            self.dio3_mask = p[7] << 8 | p[8]
        elif op == 0x02:
            self.irq &= ~(p[1] << 8 | p[2])
        elif op == 0x9D:
            self.rf_switch = bool(p[1])
        elif op == 0x97:
            self.tcxo_code = p[1] & 0x07
            self.tcxo_delay = p[2] << 16 | p[3] << 8 | p[4]
        elif op == 0x96:
            self.regulator = p[1]
        elif op == 0x9F:
            self.stop_on_preamble = p[1]
        elif op == 0x8F:
            self.tx_base, self.rx_base = p[1], p[2]
        elif op == 0x0E:
            base = p[1]
            for i in range(2, min(n, len(p))):
                self.buffer[(base + i - 2) & 0xFF] = p[i]
        elif op == 0x0D:
            addr = p[1] << 8 | p[2]
            for i in range(3, min(n, len(p))):
                self.regs[(addr + i - 3) & 0xFFFF] = p[i]
        elif op == 0x07:
            self.errors = 0

    def _xosc_fail(self, what):
        self._refuse("%s: oscillator not running (TCXO on DIO3 not enabled at %d mV)"
                     % (what, self.tcxo_mv))
        self.errors |= _ERR_XOSC_START
        self.cmd_status = 5

    # ---- decoding what the driver programmed ----------------------------------------------

    def freq_hz(self):
        """Frf * 32 MHz / 2^25 = Frf * 15625 / 2^14, rounded to the Hz."""
        w = self.frf
        return (w >> 14) * 15625 + (((w & 0x3FFF) * 15625 + 8192) >> 14)

    def bw_hz(self):
        c = self.bw_code
        return _BW_HZ[c] if c < len(_BW_HZ) else 0

    def sync_word(self):
        return self.regs.get(0x0740, 0) << 8 | self.regs.get(0x0741, 0)

    def out_dbm(self):
        """Power at the PA output from SetPaConfig + SetTxParams (table 13-21)."""
        duty, hp_max = self.pa_config[0], self.pa_config[1]
        if self.sx1261:
            return min(self.power, 14) + (1 if duty >= 0x06 else 0)
        return min(self.power, _HP_MAX_DBM[min(hp_max, 7)])

    def _lora_ok(self, what):
        if self.packet_type != 1:
            self._refuse("%s without SetPacketType(LoRa)" % what)
            return False
        if self.bw_hz() == 0 or not 6 <= self.sf <= 12 or not 1 <= self.cr <= 4:
            self._refuse("%s: invalid modulation SF%d bw 0x%02X cr %d"
                         % (what, self.sf, self.bw_code, self.cr))
            return False
        return True

    def _start_tx(self):
        if not self._lora_ok("SetTx"):
            return
        n = self.payload_len
        base = self.tx_base
        data = bytes(self.buffer[(base + i) & 0xFF] for i in range(n))
        bw = self.bw_hz()
        from protocol.lorawan.airtime import time_on_air_us  # loaded by the firmware's boot

        airtime = time_on_air_us(n, self.sf, bw, cr=self.cr, preamble=self.preamble,
                                 crc=bool(self.crc), explicit_header=not self.implicit,
                                 low_dr_optimize=bool(self.ldro))
        lorawan = (self.sync_word() == 0x3444 and not self.invert_iq and not self.implicit
                   and self.crc and not (bw == 500000 and self.regs.get(0x0889, 0) & 0x04))
        dbm = self.out_dbm()
        if self.dio2_rf_switch and not self.rf_switch:
            dbm -= _RF_SWITCH_LOSS_DB
        self._link.transmit(self.freq_hz(), self.sf, bw, dbm, data, airtime, bool(lorawan))
        self.mode = _TX
        self._tx_end = self._clock() + (airtime + 999) // 1000
        self.counters["tx"] += 1

    def _start_rx(self, t):
        if not self._lora_ok("SetRx"):
            return
        self.mode = _RX
        if t == 0xFFFFFF:
            return  # continuous: channel sensing, no window, no timeout
        timeout_ms = t // 64 if t else _NO_TIMEOUT_MS  # t * 15.625 us, floor to ms
        hears = (self.invert_iq and not self.regs.get(0x0736, 0) & 0x04
                 and self.sync_word() == 0x3444 and not self.implicit)
        if hears:
            self._link.receive(self.freq_hz(), self.sf, self.bw_hz(), timeout_ms)
            self._rx_link = True
        elif t:
            self._rx_end = self._clock() + timeout_ms


# parameter bytes each opcode needs (Get commands: the NOPs the host clocks)
_PARAMS = {0x80: 1, 0x84: 1, 0xC1: 0, 0x83: 3, 0x82: 3, 0x9F: 1, 0x96: 1, 0x89: 1, 0x98: 2,
           0x95: 4, 0x8E: 2, 0x08: 8, 0x12: 1, 0x02: 2, 0x9D: 1, 0x97: 4, 0x86: 4, 0x8A: 1,
           0x8B: 4, 0x8C: 6, 0x8F: 2, 0x0E: 1, 0x1E: 2, 0x0D: 3, 0x1D: 3, 0x13: 1, 0x14: 1,
           0x15: 1, 0xC0: 1, 0x17: 1, 0x07: 2}

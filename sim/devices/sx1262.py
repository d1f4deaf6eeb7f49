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

# The chip's state is one bytearray, `state`: what each Set command left in the chip (its
# parameter bytes as they came, big-endian) and the status the Get commands read. Bytes, not
# an attribute per setting: the model runs on the VM beside the firmware, where each name is
# one more interned string and each attribute a slot of the instance's map.
# sim/devices/sx1262_fields.py names them for tests on the host (model.sf, model.frf, ...).
_PACKET_TYPE = const(0)  # SetPacketType (0x8A): 0 GFSK, 1 LoRa
_FRF = const(1)  # SetRfFrequency (0x86): the 32-bit word
_MOD = const(5)  # SetModulationParams (0x8B): SF, BW code, CR, LDRO
_PKT = const(9)  # SetPacketParams (0x8C): preamble (2), implicit, length, CRC, InvertIQ
_TCXO = const(15)  # SetDio3AsTcxoCtrl (0x97): voltage code, delay (3, in 15.625 us)
_REGULATOR = const(19)  # SetRegulatorMode (0x96)
_STOP_ON_PREAMBLE = const(20)  # StopTimerOnPreamble (0x9F)
_PA = const(21)  # SetPaConfig (0x95): paDutyCycle, hpMax, deviceSel, paLut
_TX_PARAMS = const(25)  # SetTxParams (0x8E): power (signed), ramp
_DIO_IRQ = const(27)  # SetDioIrqParams (0x08): IRQ, DIO1, DIO2, DIO3 masks (2 each)
_BASES = const(35)  # SetBufferBaseAddress (0x8F): TX, RX
_RF_SWITCH = const(37)  # SetDio2AsRfSwitchCtrl (0x9D)
_IMAGE = const(38)  # CalibrateImage (0x98): freq1, freq2
_SET = const(40)  # bit 0: SetDio3AsTcxoCtrl seen, bit 1: CalibrateImage seen
_MODE = const(41)  # the chip mode (_SLEEP .. _RESET)
_IRQ = const(42)  # IRQ status (2)
_ERRORS = const(44)  # device errors (2)
_CMD_STATUS = const(46)  # status bits 3:1 of the last command
_RX_BUFFER = const(47)  # GetRxBufferStatus: length, start
_PKT_STATUS = const(49)  # GetPacketStatus: RssiPkt, SnrPkt, SignalRssiPkt
_RESET_LEN = const(52)  # the bytes above lose their values at reset and in cold sleep
# the model's own: levels it drives on BUSY and DIO1 (2: not yet), NRESET as it sees it, the
# RX window open on the link, and the current NSS frame
_BUSY_OUT = const(52)
_DIO1_OUT = const(53)
_NRESET = const(54)
_LINK = const(55)
_SELECTED = const(56)
_FRAME_OK = const(57)  # the frame started with BUSY low: it runs at NSS high
_WAKE = const(58)  # the frame's falling edge woke the chip: it does not run
_LEN = const(59)

# after reset: GFSK, SF7 BW125 CR4/5, preamble 12, explicit, 255 bytes, CRC on, IQ normal,
# the SX1262's PA config, +14 dBm
_DEFAULTS = const(b"\x00\x00\x00\x00\x00\x07\x04\x01\x00\x00\x0c\x00\xff\x01\x00")
_DEFAULTS_PA = const(b"\x04\x07\x00\x01\x0e")  # at _PA (an SX1261: 04 00 01 01)

# due times (ms on the board's clock) in `_due`
_BUSY_UNTIL = const(0)
_TX_END = const(1)  # TxDone
_RX_END = const(2)  # the model's own RX timeout

_BW_HZ = const((7810, 15630, 31250, 62500, 125000, 250000, 500000, 0, 10420, 20830, 41670))
_TCXO_MV = const(b"\x10\x11\x12\x16\x18\x1b\x1e\x21")  # DIO3 voltage per code, in 100 mV
_HP_MAX_DBM = const(b"\x08\x0b\x0e\x11\x12\x14\x15\x16")  # SX1262 output ceiling per hpMax (13-21)
# per opcode: its parameter bytes (Get commands: the NOPs the host clocks), and where in
# `state` a command that only stores them puts them (0xFF: handled in _execute)
_OPCODES = (const(b"\x80\x01\xff\x84\x01\xff\xc1\x00\xff\x83\x03\xff\x82\x03\xff\x9f\x01\x14"
            b"\x96\x01\x13\x89\x01\xff\x98\x02\xff\x95\x04\xff\x8e\x02\xff\x08\x08\x1b"
            b"\x12\x01\xff\x02\x02\xff\x9d\x01\x25\x97\x04\xff\x86\x04\x01\x8a\x01\x00"
            b"\x8b\x04\xff\x8c\x06\xff\x8f\x02\x23\x0e\x01\xff\x1e\x02\xff\x0d\x03\xff"
            b"\x1d\x03\xff\x13\x01\xff\x14\x01\xff\x15\x01\xff\xc0\x01\xff\x17\x01\xff"
            b"\x07\x02\xff"))
_NO_TIMEOUT_MS = const(86400000)  # single RX without timeout: the window stays open a day
_REFUSED_KEPT = const(32)  # refusals listed (all are counted)
_RF_SWITCH_LOSS_DB = const(40)


def attach(machine, p, link, clock, radio_fault):
    """The chip of a board whose radio profile is p (sim.devices.pole_board.attach_radio);
    radio_fault "busy_stuck": its BUSY never falls."""
    return SX1262(machine, {"cs": p["cs"], "reset": p["reset"], "busy": p["busy"],
                            "dio1": p["irq"]}, link, clock, tcxo_mv=p["tcxo_mv"],
                  dio2_rf_switch=p["dio2_rf_switch"], stuck_busy=radio_fault == "busy_stuck")


def frf_hz(w):
    """Frequency of a SetRfFrequency word: Frf * 32 MHz / 2^25 = Frf * 15625 / 2^14, to the Hz."""
    return (w >> 14) * 15625 + (((w & 0x3FFF) * 15625 + 8192) >> 14)


class SX1262:
    def __init__(self, machine, pins, link, clock, tcxo_mv=1800, dio2_rf_switch=True,
                 sx1261=False, stuck_busy=False):
        self._machine = machine
        self._pins = (pins["busy"], pins.get("dio1"))
        self._link = link
        self._clock = clock
        self.tcxo_mv = tcxo_mv
        self.dio2_rf_switch = dio2_rf_switch
        self.sx1261 = sx1261
        self.stuck_busy = stuck_busy
        self.counters = {"tx": 0, "rx_done": 0, "rx_timeout": 0, "refused": 0}
        self.refused = []
        self.buffer = bytearray(256)
        self.regs = {}
        self.state = bytearray(_LEN)
        self._due = [None, None, None]
        self._frame = bytearray(264)
        self._n = 0
        self.state[_NRESET] = 1
        self._power_on()
        if pins.get("reset") is not None:
            machine.watch(pins["reset"], self._on_reset)

    def __getattr__(self, name):
        """The chip's settings by name (sf, frf, invert_iq, mode, ...), for tests on the host:
        sim/devices/sx1262_fields.py reads them out of `state`."""
        if name[0] == "_" or name == "state":
            raise AttributeError(name)
        from sim.devices.sx1262_fields import field

        return field(self, name)

    # ---- power, reset, BUSY, DIO1 -------------------------------------------------------

    def _defaults(self):
        s = self.state
        s[:_RESET_LEN] = bytes(_RESET_LEN)
        s[:len(_DEFAULTS)] = _DEFAULTS
        s[_PA:_PA + 5] = _DEFAULTS_PA
        if self.sx1261:
            s[_PA + 1:_PA + 4] = b"\x00\x01\x01"
        s[_MODE] = _STBY_RC
        self.regs.clear()  # the registers' reset values the driver reads or checks
        self.regs.update({0x0740: 0x14, 0x0741: 0x24, 0x0736: 0x0D, 0x0889: 0x04, 0x08D8: 0xC8})
        d = self._due
        d[_TX_END] = d[_RX_END] = None
        s[_LINK] = 0

    def _power_on(self):
        self._defaults()
        self._due[_BUSY_UNTIL] = self._clock() + 4  # 3.5 ms of boot, on a whole-ms clock
        self.state[_BUSY_OUT] = self.state[_DIO1_OUT] = 2
        self._outputs()

    def power_cut(self):
        self._link.power_off()
        self._power_on()

    def _on_reset(self, level):
        level = 0 if level == 0 else 1  # None: not driven, the chip's pull-up holds it high
        s = self.state
        if level == s[_NRESET]:
            return
        s[_NRESET] = level
        if level == 0:
            self._stop_link()
            self._defaults()
            s[_MODE] = _RESET
            self._due[_BUSY_UNTIL] = None
        else:
            s[_MODE] = _STBY_RC
            self._due[_BUSY_UNTIL] = self._clock() + 4
        self._outputs()

    def _busy_high(self, now):
        if self.stuck_busy or self.state[_MODE] in (_RESET, _SLEEP):
            return True
        until = self._due[_BUSY_UNTIL]
        if until is not None:
            if now < until:
                return True
            self._due[_BUSY_UNTIL] = None
        return False

    def _outputs(self):
        s = self.state
        level = 1 if self._busy_high(self._clock()) else 0
        if level != s[_BUSY_OUT]:
            s[_BUSY_OUT] = level
            self._machine.drive(self._pins[0], level)
        if self._pins[1] is not None:
            level = 1 if (s[_IRQ] & s[_DIO_IRQ + 2] or s[_IRQ + 1] & s[_DIO_IRQ + 3]) else 0
            if level != s[_DIO1_OUT]:
                s[_DIO1_OUT] = level
                self._machine.drive(self._pins[1], level)

    def _refuse(self, why):
        self.counters["refused"] += 1
        if len(self.refused) < _REFUSED_KEPT:
            self.refused.append(why)

    def _set_irq(self, bits):
        """Raise the IRQ bits that SetDioIrqParams' IRQ mask lets through."""
        s = self.state
        s[_IRQ] |= (bits >> 8) & s[_DIO_IRQ]
        s[_IRQ + 1] |= bits & s[_DIO_IRQ + 1]

    def _osc_ok(self):
        s = self.state
        return not self.tcxo_mv or s[_SET] & 1 and _TCXO_MV[s[_TCXO]] * 100 >= self.tcxo_mv

    # ---- time ---------------------------------------------------------------------------

    def advance(self):
        now = self._clock()
        s = self.state
        if s[_MODE] == _TX:
            if now >= self._due[_TX_END]:
                self._link.poll()  # the link's own ("tx_done",): the model times TxDone itself
                self._due[_TX_END] = None
                s[_MODE] = _STBY_RC
                self._set_irq(_IRQ_TX_DONE)
        elif s[_MODE] == _RX:
            if s[_LINK]:
                ev = self._link.poll()
                while ev is not None and ev[0] == "tx_done":
                    ev = self._link.poll()
                if ev is not None:
                    self._end_rx(ev)
            elif self._due[_RX_END] is not None and now >= self._due[_RX_END]:
                self._end_rx(None)
        self._outputs()

    def _end_rx(self, ev):
        """The RX ends: ev, the link's ("rx", phy, rssi, snr), or a timeout."""
        s = self.state
        s[_MODE] = _STBY_RC
        s[_LINK] = 0
        self._due[_RX_END] = None
        if ev is None or ev[0] != "rx":
            self.counters["rx_timeout"] += 1
            self._set_irq(_IRQ_TIMEOUT)
            return
        phy = ev[1]
        n = len(phy)
        if n > s[_PKT + 3]:  # longer than the payload length: HeaderErr
            self._set_irq(_IRQ_PREAMBLE | _IRQ_HEADER_ERR)
            return
        base = s[_BASES + 1]
        for i in range(n):
            self.buffer[(base + i) & 0xFF] = phy[i]
        s[_RX_BUFFER], s[_RX_BUFFER + 1] = n, base
        rssi = max(0, min(255, int(round(-2 * ev[2]))))
        s[_PKT_STATUS], s[_PKT_STATUS + 2] = rssi, rssi
        s[_PKT_STATUS + 1] = max(-128, min(127, int(round(ev[3] * 4)))) & 0xFF
        self.counters["rx_done"] += 1
        self._set_irq(_IRQ_RX_DONE | _IRQ_HEADER_VALID | _IRQ_PREAMBLE)

    def _stop_link(self):
        s = self.state
        if s[_MODE] == _TX or (s[_MODE] == _RX and s[_LINK]):
            self._link.standby()
        d = self._due
        d[_TX_END] = d[_RX_END] = None
        s[_LINK] = 0

    # ---- SPI ----------------------------------------------------------------------------

    def spi_select(self, selected):
        s = self.state
        if selected:
            self._n = 0
            s[_FRAME_OK] = s[_WAKE] = 0
            if s[_MODE] == _SLEEP:
                s[_WAKE] = 1  # the falling edge wakes the chip; the frame is not executed
                s[_MODE] = _STBY_RC
                delay = s[_TCXO + 1] << 16 | s[_TCXO + 2] << 8 | s[_TCXO + 3]
                self._due[_BUSY_UNTIL] = self._clock() + 4 + (delay + 63) // 64
            elif s[_MODE] != _RESET and not self._busy_high(self._clock()):
                s[_FRAME_OK] = 1
            s[_SELECTED] = 1
        elif s[_SELECTED]:
            s[_SELECTED] = 0
            n = self._n
            if n:
                op = self._frame[0]
                if s[_WAKE]:
                    if op not in (0xC0, 0x80):
                        self._refuse("cmd 0x%02X in sleep (only wakes the chip)" % op)
                elif not s[_FRAME_OK]:
                    self._refuse("cmd 0x%02X while BUSY high" % op)
                else:
                    self._execute(op, n)
            self._outputs()

    def _status(self):
        s = self.state
        if s[_MODE] in (_RESET, _SLEEP):
            return 0
        return s[_MODE] << 4 | s[_CMD_STATUS] << 1

    def spi_transfer(self, mosi):
        out = bytearray(len(mosi))
        f = self._frame
        ok = self.state[_FRAME_OK]
        for j in range(len(mosi)):
            i = self._n
            if i < len(f):
                f[i] = mosi[j]
            self._n = i + 1
            out[j] = self._answer(i) if ok else self._status()
        return out

    def _answer(self, i):
        """MISO byte i of the current frame: the status, then the data a Get command reads."""
        f = self._frame
        op = f[0]
        s = self.state
        if i == 0:
            return self._status()
        if op == 0x1D and i >= 4:  # ReadRegister
            return self.regs.get(((f[1] << 8 | f[2]) + i - 4) & 0xFFFF, 0)
        if op == 0x1E and i >= 3:  # ReadBuffer
            return self.buffer[(f[1] + i - 3) & 0xFF]
        if i < 2:
            return self._status()
        if op == 0x12:  # GetIrqStatus
            at = _IRQ
        elif op == 0x17:  # GetDeviceErrors
            at = _ERRORS
        elif op == 0x13:  # GetRxBufferStatus
            at = _RX_BUFFER
        elif op == 0x14:  # GetPacketStatus
            return s[_PKT_STATUS + i - 2] if i < 5 else 0
        elif op == 0x15:  # GetRssiInst
            if i != 2:
                return 0
            if s[_MODE] != _RX:
                return 0xFF  # only valid in RX
            return max(0, min(255, -2 * int(self._link.rssi(self.freq_hz()))))
        else:
            return self._status()
        return s[at + i - 2] if i < 4 else 0

    def _execute(self, op, n):
        p = self._frame
        s = self.state
        s[_CMD_STATUS] = 0
        k = 0
        while k < len(_OPCODES) and _OPCODES[k] != op:
            k += 3
        if k == len(_OPCODES):
            self._refuse("unknown opcode 0x%02X" % op)
            s[_CMD_STATUS] = 4
            return
        need, at = _OPCODES[k + 1], _OPCODES[k + 2]
        if n < need + 1:
            self._refuse("cmd 0x%02X: %d parameter bytes, want %d" % (op, n - 1, need))
            s[_CMD_STATUS] = 4
            return
        if at != 0xFF:  # SetPacketType, SetRfFrequency, SetDioIrqParams, ...: stored as sent
            s[at:at + need] = p[1:1 + need]
        elif op == 0x80:  # SetStandby
            if p[1] == 1 and not self._osc_ok():
                self._xosc_fail("SetStandby(STDBY_XOSC)")
                return
            self._stop_link()
            s[_MODE] = _STBY_XOSC if p[1] == 1 else _STBY_RC
        elif op == 0x84:  # SetSleep: cold start (bit 2 clear) loses the configuration
            self._stop_link()
            if not p[1] & 0x04:
                self._defaults()
            s[_MODE] = _SLEEP
        elif op in (0x83, 0x82, 0xC1):  # SetTx, SetRx, SetFs
            if not self._osc_ok():
                self._xosc_fail("SetTx" if op == 0x83 else "SetRx" if op == 0x82 else "SetFs")
                return
            self._stop_link()
            if op == 0x83:
                self._start_tx()
            elif op == 0x82:
                self._start_rx(p[1] << 16 | p[2] << 8 | p[3])
            else:
                s[_MODE] = _FS
        elif op == 0x89:  # Calibrate
            self._due[_BUSY_UNTIL] = self._clock() + 4
            if not self._osc_ok():
                s[_ERRORS + 1] |= _ERR_XOSC_START | _ERR_PLL_CALIB
        elif op == 0x98:  # CalibrateImage
            s[_IMAGE], s[_IMAGE + 1] = p[1], p[2]
            s[_SET] |= 2
            self._due[_BUSY_UNTIL] = self._clock() + 1
        elif op in (0x8B, 0x8C):  # SetModulationParams, SetPacketParams
            if s[_PACKET_TYPE] != 1:
                self._refuse("cmd 0x%02X before SetPacketType(LoRa)" % op)
                return
            at = _MOD if op == 0x8B else _PKT
            s[at:at + need] = p[1:1 + need]
        elif op == 0x95:  # SetPaConfig
            if (p[3] == 1) != bool(self.sx1261):
                self._refuse("SetPaConfig deviceSel %d on an %s"
                             % (p[3], "SX1261" if self.sx1261 else "SX1262"))
                return
            s[_PA:_PA + 4] = p[1:5]
        elif op == 0x8E:  # SetTxParams
            dbm = p[1] - 256 if p[1] > 127 else p[1]
            lo, hi = (-17, 14) if self.sx1261 else (-9, 22)
            if not lo <= dbm <= hi:
                self._refuse("SetTxParams %d dBm outside %d..%d: clamped" % (dbm, lo, hi))
                dbm = max(lo, min(hi, dbm))
            s[_TX_PARAMS], s[_TX_PARAMS + 1] = dbm & 0xFF, p[2]
        elif op == 0x02:  # ClearIrqStatus
            s[_IRQ] &= ~p[1]
            s[_IRQ + 1] &= ~p[2]
        elif op == 0x97:  # SetDio3AsTcxoCtrl
            s[_TCXO:_TCXO + 4] = p[1:5]
            s[_TCXO] &= 0x07
            s[_SET] |= 1
        elif op == 0x0E:  # WriteBuffer
            base = p[1]
            for i in range(2, min(n, len(p))):
                self.buffer[(base + i - 2) & 0xFF] = p[i]
        elif op == 0x0D:  # WriteRegister
            addr = p[1] << 8 | p[2]
            for i in range(3, min(n, len(p))):
                self.regs[(addr + i - 3) & 0xFFFF] = p[i]
        elif op == 0x07:  # ClearDeviceErrors
            s[_ERRORS] = s[_ERRORS + 1] = 0

    def _xosc_fail(self, what):
        self._refuse("%s: oscillator not running (TCXO on DIO3 not enabled at %d mV)"
                     % (what, self.tcxo_mv))
        self.state[_ERRORS + 1] |= _ERR_XOSC_START
        self.state[_CMD_STATUS] = 5

    # ---- decoding what the driver programmed ----------------------------------------------

    def freq_hz(self):
        s = self.state
        return frf_hz(s[_FRF] << 24 | s[_FRF + 1] << 16 | s[_FRF + 2] << 8 | s[_FRF + 3])

    def bw_hz(self):
        c = self.state[_MOD + 1]
        return _BW_HZ[c] if c < len(_BW_HZ) else 0

    def sync_word(self):
        return self.regs.get(0x0740, 0) << 8 | self.regs.get(0x0741, 0)

    def _lora_ok(self, what):
        s = self.state
        sf, cr = s[_MOD], s[_MOD + 2]
        if s[_PACKET_TYPE] != 1:
            self._refuse("%s without SetPacketType(LoRa)" % what)
            return False
        if self.bw_hz() == 0 or not 6 <= sf <= 12 or not 1 <= cr <= 4:
            self._refuse("%s: invalid modulation SF%d bw 0x%02X cr %d"
                         % (what, sf, s[_MOD + 1], cr))
            return False
        return True

    def _start_tx(self):
        if not self._lora_ok("SetTx"):
            return
        s = self.state
        n = s[_PKT + 3]
        base = s[_BASES]
        data = bytes(self.buffer[(base + i) & 0xFF] for i in range(n))
        bw = self.bw_hz()
        sf = s[_MOD]
        implicit, crc, invert_iq = s[_PKT + 2], s[_PKT + 4], s[_PKT + 5]
        from protocol.lorawan.airtime import time_on_air_us  # loaded by the firmware's boot

        airtime = time_on_air_us(n, sf, bw, cr=s[_MOD + 2], preamble=s[_PKT] << 8 | s[_PKT + 1],
                                 crc=bool(crc), explicit_header=not implicit,
                                 low_dr_optimize=bool(s[_MOD + 3]))
        lorawan = (self.sync_word() == 0x3444 and not invert_iq and not implicit and crc
                   and not (bw == 500000 and self.regs.get(0x0889, 0) & 0x04))
        # the PA's output from SetPaConfig and SetTxParams (table 13-21)
        dbm = s[_TX_PARAMS] - 256 if s[_TX_PARAMS] > 127 else s[_TX_PARAMS]
        if self.sx1261:
            dbm = min(dbm, 14) + (1 if s[_PA] >= 0x06 else 0)
        else:
            dbm = min(dbm, _HP_MAX_DBM[min(s[_PA + 1], 7)])
        if self.dio2_rf_switch and not s[_RF_SWITCH]:
            dbm -= _RF_SWITCH_LOSS_DB
        self._link.transmit(self.freq_hz(), sf, bw, dbm, data, airtime, bool(lorawan))
        s[_MODE] = _TX
        self._due[_TX_END] = self._clock() + (airtime + 999) // 1000
        self.counters["tx"] += 1

    def _start_rx(self, t):
        if not self._lora_ok("SetRx"):
            return
        s = self.state
        s[_MODE] = _RX
        if t == 0xFFFFFF:
            return  # continuous: channel sensing, no window, no timeout
        timeout_ms = t // 64 if t else _NO_TIMEOUT_MS  # t * 15.625 us, floor to ms
        hears = (s[_PKT + 5] and not self.regs.get(0x0736, 0) & 0x04
                 and self.sync_word() == 0x3444 and not s[_PKT + 2])
        if hears:
            self._link.receive(self.freq_hz(), s[_MOD], self.bw_hz(), timeout_ms)
            s[_LINK] = 1
        elif t:
            self._due[_RX_END] = self._clock() + timeout_ms

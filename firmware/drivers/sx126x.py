"""SX1261/62 LoRa driver over the command interface (Semtech DS_SX1261-2, ch. 11-15).

The chip takes commands, not registers: every frame (NSS low .. high) is one opcode and its
parameters, and the chip accepts a frame only while BUSY is low, so every command first waits
for BUSY (bounded: a wiring fault must end in RadioError, not a hang). Boards differ in two
ways the chip cannot detect: a TCXO powered from DIO3 (without SetDio3AsTcxoCtrl the oscillator
never starts and TX/RX fail) and an RF switch driven from DIO2 (without it the antenna is not
connected to the PA). The errata of ch. 15 (BW500 modulation, TX clamp, inverted IQ) are
applied here because the silicon does not fix them itself.

Buffers are allocated once; poll() allocates only for a received frame. With DIO1 wired the
IRQ handler only sets a flag and poll() does no SPI traffic until it has fired.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from firmware.drivers.radio import RX, RX_TIMEOUT, TX_DONE, RadioError

_SET_STANDBY = const(0x80)
_SET_TX = const(0x83)
_SET_RX = const(0x82)
_CLEAR_IRQ = const(0x02)
_SET_RF_FREQ = const(0x86)
_SET_MODULATION = const(0x8B)
_SET_PACKET = const(0x8C)
_WRITE_REG = const(0x0D)
_READ_REG = const(0x1D)

_IRQ_TX_DONE = const(0x0001)
_IRQ_RX_DONE = const(0x0002)
_IRQ_HEADER_ERR = const(0x0020)
_IRQ_CRC_ERR = const(0x0040)
_IRQ_TIMEOUT = const(0x0200)
_IRQ_USED = const(0x0263)  # TxDone | RxDone | HeaderErr | CrcErr | Timeout

_REG_IQ = const(0x0736)  # errata 15.4: bit 2 cleared for inverted IQ
_REG_TX_MOD = const(0x0889)  # errata 15.1: bit 2 cleared for BW 500 kHz
_REG_TX_CLAMP = const(0x08D8)  # errata 15.2: bits 4:1 set
_REG_SYNC = const(0x0740)

_BUSY_SPINS = const(300)  # reads before sleeping: most commands keep BUSY high for microseconds
_BUSY_MAX_MS = const(20)  # longest legitimate BUSY: reset/calibration 3.5 ms + TCXO start
_TCXO_DELAY = const(320)  # 5 ms in 15.625 us steps: the TCXO's start-up time
_TCXO_MV = const((1600, 1700, 1800, 2200, 2400, 2700, 3000, 3300))  # DIO3 voltage codes 0..7

_EV_TX_DONE = (TX_DONE,)
_EV_RX_TIMEOUT = (RX_TIMEOUT,)


def _image_band(freq_hz):
    """CalibrateImage's frequency pair (table 9-2) for the band holding freq_hz."""
    if freq_hz >= 900000000:
        return 0xE1E9  # 902-928 MHz (US915, AU915, AS923, KR920 920-925)
    if freq_hz >= 850000000:
        return 0xD7DB  # 863-870 MHz (EU868, IN865)
    if freq_hz >= 770000000:
        return 0xC1C5  # 779-787 MHz
    if freq_hz >= 460000000:
        return 0x7581  # 470-510 MHz
    return 0x6B6F  # 430-440 MHz


def frf(freq_hz):
    """SetRfFrequency's word, freq * 2^25 / 32 MHz = freq * 2^14 / 15625, in small ints."""
    q, r = divmod(freq_hz, 15625)
    return (q << 14) + ((r << 14) + 7812) // 15625


class SX126x:
    def __init__(self, spi, cs, reset, busy, dio1=None, sleep_ms=None, tcxo_mv=1800,
                 dio2_rf_switch=True, sx1261=False, pins=None):
        self._spi = spi
        self._cs = cs
        self._reset = reset
        self._busy = busy
        self._dio1 = dio1
        if sleep_ms is None:
            from time import sleep_ms
        self._sleep_ms = sleep_ms
        self._sx1261 = sx1261
        self._name = "SX1261" if sx1261 else "SX1262"
        self._pins = pins or {}
        self._cmd = bytearray(10)
        self._ans = bytearray(10)
        self._views = tuple(memoryview(self._cmd)[:n] for n in range(10))
        self._ans_views = tuple(memoryview(self._ans)[:n] for n in range(10))
        self._data = bytearray(255)
        self._data_mv = memoryview(self._data)
        self._irq_cmd = b"\x12\x00\x00\x00"
        self._band = None
        self._flag = False
        cs(1)
        self._boot(tcxo_mv, dio2_rf_switch)
        if dio1 is not None:
            dio1.irq(self._on_dio1, dio1.IRQ_RISING)

    # ---- command interface ---------------------------------------------------------------

    def _pin(self, key, obj):
        return self._pins.get(key, obj)

    def _wait_busy(self):
        busy = self._busy
        for _ in range(_BUSY_SPINS):
            if not busy.value():
                return
        for _ in range(_BUSY_MAX_MS):
            self._sleep_ms(1)
            if not busy.value():
                return
        raise RadioError("%s BUSY stuck high (pin %s): check BUSY, NSS and RESET wiring"
                         % (self._name, self._pin("busy", busy)))

    def _send(self, n):
        """Send the first n bytes of self._cmd as one command; the answer is in self._ans."""
        self._wait_busy()
        self._cs(0)
        self._spi.write_readinto(self._views[n], self._ans_views[n])
        self._cs(1)

    def _c(self, op, *params):
        cmd = self._cmd
        cmd[0] = op
        i = 1
        for p in params:
            cmd[i] = p
            i += 1
        self._send(i)

    def _write_reg(self, addr, value):
        self._c(_WRITE_REG, addr >> 8, addr & 0xFF, value)

    def _read_reg(self, addr):
        self._c(_READ_REG, addr >> 8, addr & 0xFF, 0, 0)
        return self._ans[4]

    def _set_reg_bit2(self, addr, on):
        v = self._read_reg(addr)
        self._write_reg(addr, (v | 0x04) if on else (v & 0xFB))

    # ---- boot ------------------------------------------------------------------------------

    def _boot(self, tcxo_mv, rf_switch):
        self._reset(0)
        self._sleep_ms(1)
        self._reset(1)
        self._c(0xC0, 0)  # GetStatus (waits for BUSY: the chip boots for ~3.5 ms)
        status = self._ans[1]
        if status in (0x00, 0xFF) or not 2 <= (status >> 4) & 7 <= 6:
            raise RadioError("%s does not answer: GetStatus reads 0x%02X; check NSS (pin %s), "
                             "SCK/MOSI/MISO and RESET (pin %s)"
                             % (self._name, status, self._pin("cs", self._cs),
                                self._pin("reset", self._reset)))
        self._c(_SET_STANDBY, 0)  # STDBY_RC
        if tcxo_mv:
            code = 0
            while code < 7 and _TCXO_MV[code] < tcxo_mv:
                code += 1
            self._c(0x97, code, _TCXO_DELAY >> 16, (_TCXO_DELAY >> 8) & 0xFF,
                    _TCXO_DELAY & 0xFF)
        self._c(0x96, 1)  # SetRegulatorMode: DC-DC
        self._c(0x89, 0x7F)  # Calibrate all blocks (now that the oscillator can run)
        if rf_switch:
            self._c(0x9D, 1)
        self._c(0x8A, 1)  # SetPacketType: LoRa
        self._c(0x8F, 0, 0)  # SetBufferBaseAddress: TX 0, RX 0
        self._write_reg(_REG_TX_CLAMP, self._read_reg(_REG_TX_CLAMP) | 0x1E)
        self._c(_WRITE_REG, _REG_SYNC >> 8, _REG_SYNC & 0xFF, 0x34, 0x44)  # public LoRaWAN
        self._c(0x08, _IRQ_USED >> 8, _IRQ_USED & 0xFF, _IRQ_USED >> 8, _IRQ_USED & 0xFF,
                0, 0, 0, 0)
        self._c(0x07, 0, 0)  # ClearDeviceErrors (the TCXO's absence at power-on left one)
        self._c(_CLEAR_IRQ, 0xFF, 0xFF)

    def _on_dio1(self, pin):
        self._flag = True

    # ---- configuration ----------------------------------------------------------------------

    def _set_freq(self, freq_hz):
        band = _image_band(freq_hz)
        if band != self._band:  # the image rejection is calibrated per band (~1 ms of BUSY)
            self._c(0x98, band >> 8, band & 0xFF)
            self._band = band
        w = frf(freq_hz)
        self._c(_SET_RF_FREQ, w >> 24, (w >> 16) & 0xFF, (w >> 8) & 0xFF, w & 0xFF)

    def _tune(self, freq_hz, sf, bw_hz):
        self._set_freq(freq_hz)
        bw_code = 0x06 if bw_hz >= 500000 else 0x05 if bw_hz >= 250000 else 0x04
        ldro = 1 if (1 << sf) * 1000 >= 16 * bw_hz else 0  # Tsym >= 16 ms
        self._c(_SET_MODULATION, sf, bw_code, 1, ldro)  # CR 4/5

    def _packet(self, length, crc, invert_iq):
        self._c(_SET_PACKET, 0, 8, 0, length, crc, invert_iq)  # preamble 8, explicit header
        self._set_reg_bit2(_REG_IQ, not invert_iq)

    def _power(self, dbm):
        if self._sx1261:
            if dbm >= 15:  # table 13-21: +15 dBm needs duty cycle 0x06 at +14 dBm setting
                self._c(0x95, 0x06, 0x00, 0x01, 0x01)
                dbm = 14
            else:
                self._c(0x95, 0x04, 0x00, 0x01, 0x01)
                dbm = max(-17, dbm)
        else:
            self._c(0x95, 0x04, 0x07, 0x00, 0x01)
            dbm = max(-9, min(22, dbm))
        self._c(0x8E, dbm & 0xFF, 0x04)  # SetTxParams, ramp 200 us

    def _standby(self):
        self._c(_SET_STANDBY, 0)

    def _clear_irq(self):
        self._c(_CLEAR_IRQ, 0xFF, 0xFF)

    # ---- the Radio interface ------------------------------------------------------------------

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data):
        n = len(data)
        if n > 255:
            raise ValueError("LoRa frame longer than 255 bytes")
        self._standby()
        self._tune(freq_hz, sf, bw_hz)
        self._packet(n, 1, 0)
        self._set_reg_bit2(_REG_TX_MOD, bw_hz < 500000)
        self._power(power_dbm)
        self._wait_busy()
        self._cs(0)
        self._spi.write(b"\x0e\x00")  # WriteBuffer at offset 0
        self._spi.write(data)
        self._cs(1)
        self._clear_irq()
        self._flag = False
        self._c(_SET_TX, 0, 0, 0)

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        self._standby()
        self._tune(freq_hz, sf, bw_hz)
        self._packet(255, 0, 1)
        self._c(0x9F, 1)  # StopTimerOnPreamble: a frame under way is not cut off
        self._clear_irq()
        self._flag = False
        t = max(1, min(0xFFFFFE, timeout_ms * 64))  # 15.625 us steps
        self._c(_SET_RX, t >> 16, (t >> 8) & 0xFF, t & 0xFF)

    def rssi(self, freq_hz):
        self._standby()
        self._set_freq(freq_hz)
        self._c(_SET_RX, 0xFF, 0xFF, 0xFF)  # continuous RX
        self._sleep_ms(1)
        self._c(0x15, 0, 0)  # GetRssiInst
        raw = self._ans[2]
        self._standby()
        return -(raw >> 1)

    def poll(self):
        if self._dio1 is not None and not self._flag:
            return None
        self._flag = False
        self._wait_busy()
        self._cs(0)
        self._spi.write_readinto(self._irq_cmd, self._ans_views[4])
        self._cs(1)
        irq = self._ans[2] << 8 | self._ans[3]
        if not irq & _IRQ_USED:
            return None
        self._clear_irq()
        if irq & _IRQ_TX_DONE:
            return _EV_TX_DONE
        if irq & _IRQ_RX_DONE and not irq & (_IRQ_CRC_ERR | _IRQ_HEADER_ERR):
            self._c(0x13, 0, 0, 0)  # GetRxBufferStatus
            n, start = self._ans[2], self._ans[3]
            self._wait_busy()
            self._cs(0)
            self._cmd[0] = 0x1E  # ReadBuffer(start), NOP, data
            self._cmd[1] = start
            self._cmd[2] = 0
            self._spi.write(self._views[3])
            self._spi.readinto(self._data_mv[:n])
            self._cs(1)
            self._c(0x14, 0, 0, 0, 0)  # GetPacketStatus
            snr = self._ans[3]
            return (RX, bytes(self._data_mv[:n]), -(self._ans[2] >> 1),
                    (snr - 256 if snr > 127 else snr) / 4)
        if irq & (_IRQ_RX_DONE | _IRQ_TIMEOUT | _IRQ_CRC_ERR | _IRQ_HEADER_ERR):
            self._standby()
            return _EV_RX_TIMEOUT
        return None

    def standby(self):
        self._standby()
        self._clear_irq()
        self._flag = False

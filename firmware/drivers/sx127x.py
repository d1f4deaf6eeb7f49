"""SX1276/77/78/79 LoRa driver over SPI registers (Semtech DS_SX1276-7-8-9, ch. 4.1 and 6.4).

Why registers in this order: the LoRa/FSK bit of RegOpMode changes only in sleep, so boot goes
FSK sleep -> LoRa sleep -> standby; every TX/RX is configured in standby and started by the
mode bits. Uplinks and downlinks differ in three places a gateway is strict about: the IQ
polarity (RegInvertIQ/RegInvertIQ2, inverted for RX as LoRaWAN downlinks are), the payload CRC
(on for uplinks, off for downlinks) and nothing else: sync word 0x34 (public), explicit
header, CR 4/5 and preamble 8 always. The packet RSSI offset is -157 dBm on the HF port
(> 525 MHz) and -164 on the LF port (5.5.5). An RX window is RXSINGLE with a symbol timeout
(at most 1023 symbols): the chip itself closes it, so the driver needs no clock.

Interrupts: DIO0 carries TxDone or RxDone (RegDioMapping1), DIO1 RxTimeout. When wired, their
IRQ handlers only set a flag and poll() reads no register until one has fired; an RX window
without DIO1 polls RegIrqFlags for its timeout. Buffers are allocated once; poll() allocates
only for a received frame.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from firmware.drivers.radio import RX, RX_TIMEOUT, TX_DONE, RadioError

_FIFO = const(0x00)
_OP_MODE = const(0x01)
_FRF_MSB = const(0x06)
_PA_CONFIG = const(0x09)
_OCP = const(0x0B)
_LNA = const(0x0C)
_FIFO_ADDR_PTR = const(0x0D)
_FIFO_TX_BASE = const(0x0E)
_FIFO_RX_CURRENT = const(0x10)
_IRQ_FLAGS = const(0x12)
_RX_NB_BYTES = const(0x13)
_PKT_SNR = const(0x19)
_RSSI_VALUE = const(0x1B)
_MODEM_CONFIG1 = const(0x1D)
_PREAMBLE_MSB = const(0x20)
_PAYLOAD_LENGTH = const(0x22)
_MODEM_CONFIG3 = const(0x26)
_DETECT_OPTIMIZE = const(0x31)
_INVERT_IQ = const(0x33)
_HIGH_BW_OPT1 = const(0x36)
_DETECTION_THRESHOLD = const(0x37)
_SYNC_WORD = const(0x39)
_HIGH_BW_OPT2 = const(0x3A)
_INVERT_IQ2 = const(0x3B)
_DIO_MAPPING1 = const(0x40)
_VERSION = const(0x42)
_PA_DAC = const(0x4D)

_LORA = const(0x80)
_LF = const(0x08)  # LowFrequencyModeOn: the LF port's registers (bands below 525 MHz)
_SLEEP = const(0)
_STANDBY = const(1)
_TX = const(3)
_RX_CONTINUOUS = const(5)
_RX_SINGLE = const(6)

_IRQ_RX_TIMEOUT = const(0x80)
_IRQ_RX_DONE = const(0x40)
_IRQ_CRC_ERROR = const(0x20)
_IRQ_TX_DONE = const(0x08)

_MAP_RX = const(0x00)  # DIO0 = RxDone, DIO1 = RxTimeout
_MAP_TX = const(0x40)  # DIO0 = TxDone
_VERSION_SX1276 = const(0x12)
_BOOT_MS = const(6)  # 5 ms after NRESET rises before the chip takes SPI (7.2.1)
_MAX_SYMBOLS = const(1023)

_EV_TX_DONE = (TX_DONE,)
_EV_RX_TIMEOUT = (RX_TIMEOUT,)

_IDLE = const(0)
_IN_TX = const(1)
_IN_RX = const(2)


def frf(freq_hz):
    """RegFrf's word, freq * 2^19 / 32 MHz = freq * 2^8 / 15625 (61.035 Hz steps), small ints."""
    q, r = divmod(freq_hz, 15625)
    return (q << 8) + ((r << 8) + 7812) // 15625


def symbols(timeout_ms, sf, bw_hz):
    """RX symbol timeout covering timeout_ms (rounded up, 4..1023 symbols)."""
    n = (timeout_ms * bw_hz + (1000 << sf) - 1) // (1000 << sf)
    return max(4, min(_MAX_SYMBOLS, n))


class SX127x:
    def __init__(self, spi, cs, reset, dio0=None, sleep_ms=None, pa_boost=True, pins=None,
                 dio1=None):
        self._spi = spi
        self._cs = cs
        self._reset = reset
        self._dio0 = dio0
        self._dio1 = dio1
        if sleep_ms is None:
            from time import sleep_ms
        self._sleep_ms = sleep_ms
        self._pa_boost = pa_boost
        self._pins = pins or {}
        self._w = bytearray(2)
        self._r = bytearray(2)
        self._w1 = memoryview(self._w)[:1]
        self._frf = bytearray(3)
        self._data = bytearray(256)
        self._data_mv = memoryview(self._data)
        self._lf = 0
        self._state = _IDLE
        self._flag = False
        cs(1)
        self._boot()
        if dio0 is not None:
            dio0.irq(self._on_dio, dio0.IRQ_RISING)
        if dio1 is not None:
            dio1.irq(self._on_dio, dio1.IRQ_RISING)

    # ---- registers -------------------------------------------------------------------------

    def _read(self, reg):
        w = self._w
        w[0] = reg
        w[1] = 0
        self._cs(0)
        self._spi.write_readinto(w, self._r)
        self._cs(1)
        return self._r[1]

    def _write(self, reg, value):
        w = self._w
        w[0] = reg | 0x80
        w[1] = value
        self._cs(0)
        self._spi.write(w)
        self._cs(1)

    def _write_burst(self, reg, data):
        """Consecutive registers (or the FIFO) in one frame: the address auto-increments."""
        w = self._w
        w[0] = reg | 0x80
        self._cs(0)
        self._spi.write(self._w1)
        self._spi.write(data)
        self._cs(1)

    def _set_frf(self, freq_hz):
        w = frf(freq_hz)
        b = self._frf
        b[0] = w >> 16
        b[1] = (w >> 8) & 0xFF
        b[2] = w & 0xFF
        self._write_burst(_FRF_MSB, b)

    def _mode(self, mode):
        self._write(_OP_MODE, _LORA | self._lf | mode)

    # ---- boot ------------------------------------------------------------------------------

    def _boot(self):
        self._reset(0)
        self._sleep_ms(1)
        self._reset(1)
        self._sleep_ms(_BOOT_MS)
        version = self._read(_VERSION)
        if version != _VERSION_SX1276:
            raise RadioError("SX1276 does not answer: version register 0x42 reads 0x%02X, not "
                             "0x12; check NSS (pin %s), SCK/MOSI/MISO and RESET (pin %s)"
                             % (version, self._pins.get("cs", self._cs),
                                self._pins.get("reset", self._reset)))
        self._write(_OP_MODE, _SLEEP)  # FSK sleep: the only state the LoRa bit may change in
        self._write(_OP_MODE, _LORA | _SLEEP)
        if self._read(_OP_MODE) & _LORA == 0:
            raise RadioError("SX1276 refuses LoRa mode (RegOpMode reads 0x%02X): check the "
                             "SPI wiring" % self._read(_OP_MODE))
        self._mode(_STANDBY)
        self._write(_SYNC_WORD, 0x34)  # LoRaWAN public network
        self._write(_LNA, 0x23)  # max gain, LNA boost on the HF port
        self._write(_MODEM_CONFIG3, 0x04)  # AGC on (LowDataRateOptimize set per frame)
        self._write(_DETECT_OPTIMIZE, 0xC3)  # SF7..SF12
        self._write(_DETECTION_THRESHOLD, 0x0A)
        self._write(_PREAMBLE_MSB, 0)
        self._write(_PREAMBLE_MSB + 1, 8)
        self._write(_IRQ_FLAGS - 1, 0)  # RegIrqFlagsMask: every flag raises
        self._write(_IRQ_FLAGS, 0xFF)

    def _on_dio(self, pin):
        self._flag = True

    # ---- configuration ---------------------------------------------------------------------

    def _tune(self, freq_hz, sf, bw_hz, crc, invert_iq):
        lf = _LF if freq_hz < 525000000 else 0
        if lf != self._lf:
            self._lf = lf
            self._mode(_STANDBY)
        self._set_frf(freq_hz)
        bw_code = 9 if bw_hz >= 500000 else 8 if bw_hz >= 250000 else 7
        self._write(_MODEM_CONFIG1, bw_code << 4 | 1 << 1)  # CR 4/5, explicit header
        self._write(_MODEM_CONFIG1 + 1, sf << 4 | (0x04 if crc else 0))
        ldro = 0x08 if (1 << sf) * 1000 >= 16 * bw_hz else 0  # Tsym >= 16 ms
        self._write(_MODEM_CONFIG3, 0x04 | ldro)
        # errata 2.1: sensitivity at BW 500 kHz needs these two registers
        self._write(_HIGH_BW_OPT1, 0x02 if bw_code == 9 else 0x03)
        if bw_code == 9:
            self._write(_HIGH_BW_OPT2, 0x7F if lf else 0x64)
        if invert_iq:
            self._write(_INVERT_IQ, 0x67)
            self._write(_INVERT_IQ2, 0x19)
        else:
            self._write(_INVERT_IQ, 0x27)
            self._write(_INVERT_IQ2, 0x1D)

    def _power(self, dbm):
        if self._pa_boost:  # PA_BOOST: 2..17 dBm, 20 dBm with the high-power DAC
            if dbm > 17:
                dbm = min(dbm, 20)
                self._write(_PA_DAC, 0x87)
                self._write(_OCP, 0x3B)  # 240 mA for +20 dBm
                self._write(_PA_CONFIG, 0xF0 | (dbm - 5))
            else:
                self._write(_PA_DAC, 0x84)
                self._write(_OCP, 0x2B)  # 100 mA
                self._write(_PA_CONFIG, 0xF0 | (max(2, dbm) - 2))
        else:  # RFO with MaxPower 7 (Pmax 15 dBm): Pout = OutputPower, 0..14 dBm
            self._write(_PA_DAC, 0x84)
            self._write(_OCP, 0x2B)
            self._write(_PA_CONFIG, 0x70 | max(0, min(14, dbm)))

    # ---- the Radio interface ---------------------------------------------------------------

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data):
        n = len(data)
        if n > 255:
            raise ValueError("LoRa frame longer than 255 bytes")
        self._mode(_STANDBY)
        self._tune(freq_hz, sf, bw_hz, True, False)
        self._power(power_dbm)
        self._write(_FIFO_TX_BASE, 0)
        self._write(_FIFO_ADDR_PTR, 0)
        self._write_burst(_FIFO, data)
        self._write(_PAYLOAD_LENGTH, n)
        self._write(_DIO_MAPPING1, _MAP_TX)
        self._write(_IRQ_FLAGS, 0xFF)
        self._flag = False
        self._state = _IN_TX
        self._mode(_TX)

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        self._mode(_STANDBY)
        self._tune(freq_hz, sf, bw_hz, False, True)
        n = symbols(timeout_ms, sf, bw_hz)
        cfg2 = self._read(_MODEM_CONFIG1 + 1)
        self._write(_MODEM_CONFIG1 + 1, (cfg2 & 0xFC) | n >> 8)
        self._write(_MODEM_CONFIG1 + 2, n & 0xFF)  # RegSymbTimeoutLsb
        self._write(_FIFO_TX_BASE + 1, 0)  # RegFifoRxBaseAddr
        self._write(_FIFO_ADDR_PTR, 0)
        self._write(_PAYLOAD_LENGTH + 1, 0xFF)  # RegMaxPayloadLength
        self._write(_DIO_MAPPING1, _MAP_RX)
        self._write(_IRQ_FLAGS, 0xFF)
        self._flag = False
        self._state = _IN_RX
        self._mode(_RX_SINGLE)

    def rssi(self, freq_hz):
        self._mode(_STANDBY)
        lf = _LF if freq_hz < 525000000 else 0
        self._lf = lf
        self._set_frf(freq_hz)
        self._mode(_RX_CONTINUOUS)
        self._sleep_ms(1)  # RegRssiValue settles within a few symbols of the receiver's start
        raw = self._read(_RSSI_VALUE)
        self._mode(_STANDBY)
        self._state = _IDLE
        return (-164 if lf else -157) + raw

    def poll(self):
        if self._state == _IDLE:
            return None
        if (self._dio0 is not None and not self._flag
                and (self._state == _IN_TX or self._dio1 is not None)):
            return None
        self._flag = False
        irq = self._read(_IRQ_FLAGS)
        if self._state == _IN_TX:
            if not irq & _IRQ_TX_DONE:
                return None
            self._write(_IRQ_FLAGS, 0xFF)
            self._state = _IDLE
            return _EV_TX_DONE
        if not irq & (_IRQ_RX_DONE | _IRQ_RX_TIMEOUT):
            return None
        self._write(_IRQ_FLAGS, 0xFF)
        self._state = _IDLE
        if irq & _IRQ_RX_TIMEOUT or irq & _IRQ_CRC_ERROR:
            self._mode(_STANDBY)
            return _EV_RX_TIMEOUT
        n = self._read(_RX_NB_BYTES)
        self._write(_FIFO_ADDR_PTR, self._read(_FIFO_RX_CURRENT))
        w = self._w
        w[0] = _FIFO
        self._cs(0)
        self._spi.write(self._w1)
        self._spi.readinto(self._data_mv[:n])
        self._cs(1)
        snr = self._read(_PKT_SNR)
        snr = snr - 256 if snr > 127 else snr
        raw = self._read(_PKT_SNR + 1)
        offset = -164 if self._lf else -157
        if snr >= 0:  # 5.5.5: above the noise floor the raw value is scaled by 16/15
            rssi = offset + raw * 16 // 15
        else:
            rssi = offset + raw + snr // 4
        return (RX, bytes(self._data_mv[:n]), rssi, snr / 4)

    def standby(self):
        self._mode(_STANDBY)
        self._write(_IRQ_FLAGS, 0xFF)
        self._state = _IDLE
        self._flag = False

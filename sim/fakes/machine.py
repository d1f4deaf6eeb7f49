"""A fake of MicroPython's `machine` module (ESP32 port) at bus/pin level, for emulated boards.

Firmware sees the MicroPython API; the simulator owns the "hardware" through module-level hooks.
Where ports differ this follows ports/esp32 (machine_i2c.c, machine_pin.c, machine_pwm.c,
modmachine.c, machine_rtc.c, machine_wdt.c).

I2C: `I2C(id, scl=None, sda=None, freq=400000)` (id 0 or 1) is a view of the simulator-owned
`bus(id)`; `SoftI2C(scl, sda, freq=400000)` gets a bus of its own per (scl, sda) pin pair
(`soft_bus(scl, sda)`). Devices are attached with `bus(id).attach(addr, model)`. A model
implements `i2c_write(data, stop) -> bool` (False = NACK) and `i2c_read(n) -> bytes or None`
(None = NACK). A NACK raises OSError(ENODEV), as the ESP32 port maps ESP_FAIL to MP_ENODEV (the
port cannot tell an address NACK from a data NACK). `*_mem` methods follow extmod/machine_i2c.c:
write the memory address (addrsize=8 or 16, big-endian) then, for reads, a repeated start.

Pin: `Pin(id, mode=-1, pull=-1, *, value=None)`; Pin objects with the same id share one state.
The simulator drives an input with `drive(id, level)` (None = released) and reads an output
with `level(id)`. Pin.irq(handler, trigger) handlers run synchronously from drive().

UART: `UART(id, baudrate, tx=, rx=, timeout=)` (ids 0..2) is a view of the simulator-owned
`uart(id)`; a chip model is wired with `uart(id).attach(model)`, where the model has
`uart_write(bytes)` and `uart_read(n) -> bytes` (fewer bytes than asked = the line went quiet,
which the real UART reports after its timeout). read()/readinto() return None when nothing came.

RTC: `RTC().datetime()` is the board clock (set_clock) plus `set_epoch(unix_s_at_clock_zero)`;
without set_epoch the board starts at 2000-01-01 00:00:00 like an ESP32 whose RTC was never
set. datetime(tuple) sets it. An ESP32 without a backup battery loses the RTC's time with its
power: power_cut() restarts it at 2000-01-01 00:00:00 (until the firmware sets it, e.g. from
the network), unless the simulator declared `set_rtc_battery(True)` (a battery-backed RTC
keeps the wall time). soft_reset() keeps it, as the chip's RTC domain stays powered.

SPI: `SPI(id, baudrate, polarity=, phase=, ...)` (ids 1, 2) is a view of the simulator-owned
`spi(id)`; the firmware drives chip select with a Pin output and a chip model is wired with
`spi(id).attach(cs_pin, model)` (model: `spi_select(selected)` on CS edges and
`spi_transfer(mosi) -> miso`, see SPIBus).

PWM: `PWM(pin, freq=5000, duty_u16=..)` (duty also settable as duty 0..1023 or duty_ns); the
simulator sees the duty through `pwm_duty(id)` (None when no PWM runs on the pin).

Output watchers: `watch(id, fn)` calls fn(level) whenever the firmware changes what it drives
on pin `id` (value, init, on/off; level None when the pin stops being an output), so a chip
model sees edges on its RESET or NSS input that happen between two SPI transfers.

GPIOs per MCU: `set_mcu("esp32" | "esp32s3")` picks which pin numbers exist (the classic
ESP32: 0-39 less 20, 24, 28-31, with 34-39 input only; the ESP32-S3: 0-21 and 26-48); a Pin on
a number the MCU lacks raises ValueError("invalid pin"), as the port does.

Board-level hooks: `power_cut()` (loses RTC memory, the RTC's time unless battery-backed, pin
and WDT state; next reset_cause() is PWRON_RESET), `set_rtc_battery(present)`, `soft_reset()` (what machine.reset() does on the chip: RTC memory kept,
reset_cause() SOFT_RESET), `set_clock(fn)` (ms clock used by WDT), `wdt_expired()`.
`machine.reset()` raises ResetRequested (a BaseException, so firmware's `except Exception`
does not swallow it); the simulator catches it, calls soft_reset() and boots the firmware again.
"""

import errno
import time

# reset causes (ports/esp32/modmachine.c)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

UNIQUE_ID = b"\x24\x6f\x28\x00\x00\x01"  # the ESP32's base MAC; a simulator sets one per board
_RTC_MEM_MAX = 2048  # MICROPY_HW_RTC_USER_MEM_MAX on the ESP32


class ResetRequested(BaseException):
    """Raised by machine.reset() / deepsleep(); the simulator restarts the firmware."""


class _Board:
    def __init__(self):
        self.reset_cause = PWRON_RESET
        self.rtc_mem = b""
        self.pins = {}
        self.wdt = None  # [timeout_ms, last_feed_ms]
        self.clock = lambda: int(time.monotonic() * 1000)
        self.epoch = None  # unix seconds at clock() == 0; None = RTC never set
        self.rtc_battery = False  # a backup battery keeps the RTC's time over a power cut


BOARD = _Board()
_buses = {}  # id or ("soft", scl, sda) -> I2CBus; hardware wiring, survives power cuts
_uarts = {}  # id -> UARTPort; hardware wiring, survives power cuts


def set_clock(fn):
    """Use fn() -> milliseconds as the board's time base (for the WDT)."""
    BOARD.clock = fn


def set_epoch(epoch_s):
    """Wall clock: unix seconds at the moment the board clock (set_clock) reads 0."""
    BOARD.epoch = epoch_s


def set_rtc_battery(present=True):
    """Simulator: the board's RTC has a backup battery, so its time survives power cuts."""
    BOARD.rtc_battery = bool(present)


def power_cut():
    """Cut and restore power: RTC memory, pin levels, PWM and the WDT are lost, and the RTC's
    time too (it reads 2000-01-01 00:00:00 at power-up) unless it is battery-backed."""
    clock, epoch, battery = BOARD.clock, BOARD.epoch, BOARD.rtc_battery
    BOARD.__init__()
    BOARD.clock = clock
    BOARD.rtc_battery = battery
    BOARD.epoch = epoch if battery else _Y2K - clock() // 1000


def soft_reset(cause=SOFT_RESET):
    """Reset the chip keeping RTC memory (machine.reset(), or WDT_RESET after a WDT expiry)."""
    BOARD.reset_cause = cause
    BOARD.pins = {}
    BOARD.wdt = None


def reset_cause():
    return BOARD.reset_cause


def reset():
    raise ResetRequested("machine.reset()")


def unique_id():
    return UNIQUE_ID


def freq(hz=None):
    if hz is None:
        return 160000000
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


# -- I2C -------------------------------------------------------------------------------------

class I2CBus:
    """The wires of one I2C bus, owned by the simulator: address -> device model."""

    def __init__(self):
        self.devices = {}
        self.transfers = 0

    def attach(self, addr, model):
        if not 0 <= addr < 0x80:
            raise ValueError("7-bit address expected")
        self.devices[addr] = model
        return model

    def detach(self, addr):
        self.devices.pop(addr, None)

    def _dev(self, addr):
        self.transfers += 1
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(errno.ENODEV, "ENODEV")
        return dev

    def write(self, addr, data, stop=True):
        if not self._dev(addr).i2c_write(bytes(data), stop):
            raise OSError(errno.ENODEV, "ENODEV")

    def read(self, addr, n, stop=True):
        data = self._dev(addr).i2c_read(n)
        if data is None:
            raise OSError(errno.ENODEV, "ENODEV")
        if len(data) != n:
            raise AssertionError("device model returned %d bytes, %d asked" % (len(data), n))
        return bytes(data)


def _get(table, key, new):
    """table[key], made by new() the first time. Not dict.setdefault(key, new()): that builds a
    throw-away object on every call, and the firmware's hot paths (a driver spinning on BUSY)
    call these thousands of times inside one poll, which the heap budget counts."""
    v = table.get(key)
    if v is None:
        v = table[key] = new()
    return v


def bus(id):
    """The simulator's handle on hardware I2C bus `id` (0 or 1)."""
    return _get(_buses, id, I2CBus)


def soft_bus(scl, sda):
    return _get(_buses, ("soft", _pin_id(scl), _pin_id(sda)), I2CBus)


def _buffer(buf):
    try:
        return memoryview(buf)
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


class _I2CBase:
    def scan(self):
        return sorted(self._bus.devices)

    def writeto(self, addr, buf, stop=True):
        data = bytes(_buffer(buf))
        self._bus.write(addr, data, stop)
        return len(data)  # number of ACKs received

    def readfrom(self, addr, nbytes, stop=True):
        return self._bus.read(addr, nbytes, stop)

    def readfrom_into(self, addr, buf, stop=True):
        mv = _buffer(buf)
        mv[:] = self._bus.read(addr, len(mv), stop)

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(bytes(_buffer(b)) for b in vector), stop)

    def _memaddr(self, memaddr, addrsize):
        if addrsize not in (8, 16):
            raise ValueError("addrsize must be 8 or 16")  # extmod accepts up to 32 in steps of 8
        return memaddr.to_bytes(addrsize // 8, "big") if addrsize == 16 else bytes([memaddr & 0xFF])

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._bus.write(addr, self._memaddr(memaddr, addrsize) + bytes(_buffer(buf)), True)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self._bus.write(addr, self._memaddr(memaddr, addrsize), False)
        return self._bus.read(addr, nbytes, True)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        mv = _buffer(buf)
        mv[:] = self.readfrom_mem(addr, memaddr, len(mv), addrsize=addrsize)


class I2C(_I2CBase):
    """Hardware I2C (ESP32: ids 0 and 1)."""

    def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % (id,))
        self.id = id
        self.scl, self.sda, self.freq = scl, sda, freq
        self._bus = bus(id)


class SoftI2C(_I2CBase):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self.scl, self.sda, self.freq = scl, sda, freq
        self._bus = soft_bus(scl, sda)


# -- Pin and PWM -----------------------------------------------------------------------------

# per GPIO number: "2" in/out, "1" input only, "0" absent (bytes, not sets of ints: no heap on
# the MicroPython VM)
_MCU_PINS = {
    "esp32": b"2222222222222222222202220222000022111111",
    "esp32s3": b"2222222222222222222222000022222222222222222222222",
}
_PINS = _MCU_PINS["esp32"]
MCU = "esp32"
_watchers = {}  # pin id -> fn(level): hardware wiring, survives power cuts


def set_mcu(name):
    """Simulator: which chip this board is (its GPIO numbers)."""
    global _PINS, MCU
    _PINS = _MCU_PINS[name]
    MCU = name


def _pin_kind(id):
    """2 in/out, 1 input only, 0 no such GPIO on this board's MCU."""
    if isinstance(id, int) and 0 <= id < len(_PINS):
        return _PINS[id] - 48  # ord("0")
    return 0


def watch(id, fn):
    """Simulator: fn(level) on every change of what the firmware drives on pin id (None: not
    an output any more); fn None removes the watcher."""
    if fn is None:
        _watchers.pop(id, None)
    else:
        _watchers[id] = fn


def _driven(id):
    fn = _watchers.get(id)
    if fn is not None:
        fn(level(id))


class _PinState:
    def __init__(self):
        self.mode = None
        self.pull = None
        self.out = 0  # output register
        self.ext = None  # level driven from outside (None = released)
        self.pwm = None  # duty_u16 while a PWM runs on the pin
        self.irq = None  # (handler, trigger, pin object)


def _pin_id(pin):
    return pin.id if isinstance(pin, Pin) else pin


def _state(id):
    return _get(BOARD.pins, id, _PinState)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if not _pin_kind(id):
            raise ValueError("invalid pin")
        self.id = id
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        s = _state(self.id)
        if mode != -1 and mode is not None:
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode != Pin.IN and _pin_kind(self.id) == 1:
                raise ValueError("pin can only be input")
        if value is not None:
            s.out = 1 if value else 0
            _cs_edge(self.id, s.out)
        if mode != -1 and mode is not None:
            s.mode = mode
        if pull != -1:
            s.pull = pull
        if self.id in _watchers:
            _driven(self.id)
        return None

    def value(self, x=None):
        s = _state(self.id)
        if x is not None:
            s.out = 1 if x else 0
            _cs_edge(self.id, s.out)
            if self.id in _watchers:
                _driven(self.id)
            return None
        if s.mode == Pin.OUT:
            return s.out
        if s.mode == Pin.OPEN_DRAIN and s.out == 0:
            return 0
        if s.ext is not None:
            return s.ext
        return 1 if s.pull == Pin.PULL_UP else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        _state(self.id).irq = (handler, trigger, self) if handler else None

    def __repr__(self):
        return "Pin(%d)" % self.id


def drive(id, level):
    """Simulator: drive input pin `id` to 0/1 from outside (None releases it); fires Pin.irq."""
    s = _state(id)
    before = Pin(id).value()
    s.ext = None if level is None else (1 if level else 0)
    after = Pin(id).value()
    if s.irq and before != after:
        handler, trigger, pin = s.irq
        if trigger & (Pin.IRQ_RISING if after else Pin.IRQ_FALLING):
            handler(pin)


def level(id):
    """Simulator: the level the board drives on pin `id` (None when it is not an output)."""
    s = BOARD.pins.get(id)
    if s is None or s.mode not in (Pin.OUT, Pin.OPEN_DRAIN):
        return None
    return s.out if s.mode == Pin.OUT or s.out == 0 else None


def pwm_duty(id):
    """Simulator: duty_u16 of the PWM running on pin `id`, or None."""
    s = BOARD.pins.get(id)
    return None if s is None else s.pwm


class PWM:
    """LEDC PWM as on the ESP32 (default frequency 5 kHz, duty 0 until set)."""

    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None):
        self._pin = dest if isinstance(dest, Pin) else Pin(dest, Pin.OUT)
        self._freq = 5000
        self._duty = 0
        self._active = True
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None):
        self._active = True
        if freq is not None:
            self.freq(freq)
        if duty is not None:
            self.duty(duty)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        self._publish()

    def _publish(self):
        _state(self._pin.id).pwm = self._duty if self._active else None

    def freq(self, value=None):
        if value is None:
            return self._freq
        if not 1 <= value <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        self._freq = value

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._duty = value
        self._publish()

    def duty(self, value=None):
        if value is None:
            return self._duty >> 6
        self.duty_u16(min(max(value, 0), 1023) * 65535 // 1023)

    def duty_ns(self, value=None):
        period_ns = 1000000000 // self._freq
        if value is None:
            return self._duty * period_ns // 65535
        self.duty_u16(min(value * 65535 // period_ns, 65535))

    def deinit(self):
        self._active = False
        self._publish()


# -- UART ------------------------------------------------------------------------------------

class UARTPort:
    """The wires of one UART, owned by the simulator: at most one device model on the other end."""

    def __init__(self):
        self.model = None
        self.rx = b""  # bytes the model sent that the firmware has not read yet
        self.written = 0

    def attach(self, model):
        self.model = model
        self.rx = b""
        return model

    def detach(self):
        self.model = None
        self.rx = b""

    def _pull(self, n):
        if self.model is not None and len(self.rx) < n:
            self.rx += bytes(self.model.uart_read(n - len(self.rx)))


def uart(id):
    """The simulator's handle on UART `id`."""
    return _get(_uarts, id, UARTPort)


class UART:
    """ESP32 UART (ids 0..2), byte-level, as machine_uart.c behaves for a polling reader."""

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
                 timeout=0, timeout_char=0, rxbuf=256, txbuf=256, invert=0, flow=0):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % (id,))
        self.id = id
        self._port = uart(id)
        self.init(baudrate, bits, parity, stop, tx=tx, rx=rx, timeout=timeout)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
             timeout=0, timeout_char=0, rxbuf=256, txbuf=256, invert=0, flow=0):
        if bits not in (5, 6, 7, 8) or stop not in (1, 2) or parity not in (None, 0, 1):
            raise ValueError("invalid UART format")
        self.baudrate, self.tx, self.rx, self.timeout = baudrate, tx, rx, timeout

    def deinit(self):
        pass

    def write(self, buf):
        data = bytes(_buffer(buf))
        self._port.written += len(data)
        if self._port.model is not None:
            self._port.model.uart_write(data)
        return len(data)

    def any(self):
        self._port._pull(4096)
        return len(self._port.rx)

    def read(self, nbytes=-1):
        port = self._port
        port._pull(4096 if nbytes is None or nbytes < 0 else nbytes)
        if nbytes is None or nbytes < 0:
            nbytes = len(port.rx)
        data, port.rx = port.rx[:nbytes], port.rx[nbytes:]
        return data or None

    def readinto(self, buf, nbytes=None):
        mv = _buffer(buf)
        n = len(mv) if nbytes is None else min(nbytes, len(mv))
        data = self.read(n)
        if not data:
            return None
        mv[:len(data)] = data
        return len(data)

    def readline(self):
        port = self._port
        port._pull(4096)
        i = port.rx.find(b"\n")
        n = len(port.rx) if i < 0 else i + 1
        data, port.rx = port.rx[:n], port.rx[n:]
        return data or None

    def flush(self):
        pass

    def txdone(self):
        return True


# -- SPI -------------------------------------------------------------------------------------

class SPIBus:
    """The wires of one SPI bus, owned by the simulator: chip-select pin -> device model.

    A model implements `spi_select(selected)` (called when its CS pin goes low (True) or high
    (False), as a frame starts or ends) and `spi_transfer(mosi) -> miso` (full duplex, as many
    bytes back as went out). A transfer with no CS low is clocked into nothing: the firmware
    reads 0xFF, like an undriven MISO with a pull-up."""

    def __init__(self):
        self.devices = {}  # cs pin id -> model
        self.transfers = 0

    def attach(self, cs, model):
        cs = _pin_id(cs)
        self.devices[cs] = model
        _cs_watch[cs] = self
        return model

    def detach(self, cs):
        cs = _pin_id(cs)
        self.devices.pop(cs, None)
        _cs_watch.pop(cs, None)

    def _edge(self, cs, level):
        model = self.devices.get(cs)
        if model is not None:
            model.spi_select(level == 0)

    def transfer(self, mosi):
        """miso bytes for mosi (any buffer; the model must not keep it). Copies nothing on the
        way: a driver clocks dozens of frames per poll and the heap budget counts them."""
        self.transfers += 1
        miso = None
        for cs in self.devices:
            if level(cs) == 0:
                out = self.devices[cs].spi_transfer(mosi)
                if len(out) != len(mosi):
                    raise AssertionError("SPI model returned %d bytes for %d" % (len(out), len(mosi)))
                miso = out
        return b"\xff" * len(mosi) if miso is None else miso


_spis = {}  # id -> SPIBus; hardware wiring, survives power cuts
_cs_watch = {}  # cs pin id -> SPIBus


def _cs_edge(id, out):
    bus_ = _cs_watch.get(id)
    if bus_ is not None and BOARD.pins[id].mode == Pin.OUT:
        bus_._edge(id, out)


def spi(id):
    """The simulator's handle on hardware SPI bus `id` (1 = HSPI, 2 = VSPI)."""
    return _get(_spis, id, SPIBus)


class SPI:
    """ESP32 hardware SPI (ids 1 and 2) as machine_hw_spi.c: the firmware drives CS itself
    with a Pin; write/read/readinto/write_readinto clock bytes through `spi(id)`."""

    MSB = 0
    LSB = 1

    def __init__(self, id, baudrate=500000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        if id not in (1, 2):
            raise ValueError("SPI(%s) doesn't exist" % (id,))
        self.id = id
        self._bus = spi(id)
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit)

    def init(self, baudrate=500000, *, polarity=0, phase=0, bits=8, firstbit=0, sck=None,
             mosi=None, miso=None):
        if bits != 8:
            raise ValueError("bits must be 8")
        self.baudrate, self.polarity, self.phase, self.firstbit = baudrate, polarity, phase, firstbit

    def deinit(self):
        pass

    def write(self, buf):
        self._bus.transfer(_buffer(buf))

    def read(self, nbytes, write=0x00):
        return bytes(self._bus.transfer(bytes([write]) * nbytes))

    def readinto(self, buf, write=0x00):
        mv = _buffer(buf)
        mv[:] = self._bus.transfer(bytes([write]) * len(mv))

    def write_readinto(self, write_buf, read_buf):
        out = _buffer(read_buf)
        data = _buffer(write_buf)
        if len(data) != len(out):
            raise ValueError("buffers must be the same length")
        out[:] = self._bus.transfer(data)


# -- RTC, WDT --------------------------------------------------------------------------------

def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


_Y2K = 946684800  # unix seconds of 2000-01-01, where an unset ESP32 RTC starts


class RTC:
    def datetime(self, dt=None):
        """(year, month, day, weekday 0=Monday, hours, minutes, seconds, microseconds)."""
        ms = BOARD.clock()
        if dt is not None:
            y, mo, d, _wd, h, mi, s = dt[:7]
            us = dt[7] if len(dt) > 7 else 0
            unix_ms = (_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000 + us // 1000
            BOARD.epoch = (unix_ms - ms) / 1000
            return None
        epoch = _Y2K if BOARD.epoch is None else BOARD.epoch
        unix_ms = int(epoch * 1000) + ms
        secs, frac = divmod(unix_ms, 1000)
        days, rem = divmod(secs, 86400)
        y, mo, d = _civil_from_days(days)
        return (y, mo, d, (days + 3) % 7, rem // 3600, rem // 60 % 60, rem % 60, frac * 1000)

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        """RTC slow memory: survives machine.reset() and deep sleep, not a power cut."""
        if data is None:
            return BOARD.rtc_mem
        data = bytes(_buffer(data))
        if len(data) > _RTC_MEM_MAX:
            raise ValueError("buffer too long")
        BOARD.rtc_mem = data


class WDT:
    """Task watchdog: cannot be stopped once started; the simulator polls wdt_expired()."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%s) doesn't exist" % (id,))
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        BOARD.wdt = [timeout, BOARD.clock()]

    def feed(self):
        if BOARD.wdt is not None:
            BOARD.wdt[1] = BOARD.clock()


def wdt_expired():
    """Simulator: True when a started WDT has not been fed within its timeout."""
    return BOARD.wdt is not None and BOARD.clock() - BOARD.wdt[1] > BOARD.wdt[0]

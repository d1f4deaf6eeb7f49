"""A fake of MicroPython's `machine` module (ESP32 port) at bus/pin level, for emulated boards.

Firmware sees the MicroPython API; the simulator owns the "hardware" through module-level hooks.
Where ports differ this follows ports/esp32 (machine_i2c.c, machine_pin.c, machine_pwm.c,
modmachine.c, machine_rtc.c, machine_wdt.c).

Only the API that the firmware and the tests use is here (each def costs heap on the VM, where
the fakes run beside the firmware): no SoftI2C, open-drain pins, machine.freq() or idle().
I2C and PWM are in machine_i2c_pwm.py, loaded on first use (a meter has neither).

I2C: `I2C(id, scl=None, sda=None, freq=400000)` (id 0 or 1) is a view of the simulator-owned
`bus(id)`. Devices are attached with `bus(id).attach(addr, model)`. A model
implements `i2c_write(data, stop) -> bool` (False = NACK) and `i2c_read(n) -> bytes or None`
(None = NACK). A NACK raises OSError(ENODEV), as the ESP32 port maps ESP_FAIL to MP_ENODEV (the
port cannot tell an address NACK from a data NACK). `*_mem` methods follow extmod/machine_i2c.c:
write the memory address (8-bit: no addrsize) then, for reads, a repeated start.

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

PWM: `PWM(pin, freq=5000, duty_u16=..)` (duty also settable as duty 0..1023); the
simulator sees the duty through `pwm_duty(id)` (None when no PWM runs on the pin).

Output watchers: `watch(id, fn)` calls fn(level) whenever the firmware changes what it drives
on pin `id` (value, init, on/off; level None when the pin stops being an output), so a chip
model sees edges on its RESET or NSS input that happen between two SPI transfers.

GPIOs per MCU: `set_mcu("esp32" | "esp32s3")` picks which pin numbers exist (the classic
ESP32: 0-39 less 20, 24, 28-31, with 34-39 input only; the ESP32-S3: 0-21 and 26-48); a Pin on
a number the MCU lacks raises ValueError("invalid pin"), as the port does.

Board-level hooks: `power_cut()` (loses RTC memory, the RTC's time unless battery-backed, pin
and WDT state; next reset_cause() is PWRON_RESET), `set_rtc_battery(on)`, `soft_reset()`
(what machine.reset() does on the chip: RTC memory kept,
reset_cause() SOFT_RESET), `set_clock(fn)` (ms clock used by WDT), `wdt_expired()`.
`machine.reset()` raises ResetRequested (a BaseException, so firmware's `except Exception`
does not swallow it); the simulator catches it, calls soft_reset() and boots the firmware again.
"""

import time

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# reset causes (ports/esp32/modmachine.c)
PWRON_RESET = 1
HARD_RESET = 2  # the reset button (EN pin)
WDT_RESET = 3
SOFT_RESET = 5

UNIQUE_ID = b"\x24\x6f\x28\x00\x00\x01"  # the ESP32's base MAC; a simulator sets one per board
_RTC_MEM_MAX = const(2048)  # MICROPY_HW_RTC_USER_MEM_MAX on the ESP32
_Y2K = const(946684800)  # unix seconds of 2000-01-01, where an unset ESP32 RTC starts


class ResetRequested(BaseException):
    """Raised by machine.reset() / deepsleep(); the simulator restarts the firmware."""


# the board's state: a list indexed by these (as a pin's; a class would cost heap on the VM)
_CAUSE = const(0)  # reset_cause() after the last reset
_RTC_MEM = const(1)
_GPIO = const(2)  # GPIO number -> its state (see Pin)
_WDT = const(3)  # [timeout_ms, last_feed_ms] once started, else None
_CLOCK = const(4)  # fn() -> ms, the board's time base
_EPOCH = const(5)  # unix seconds at clock() == 0; None = RTC never set
_BATTERY = const(6)  # a backup battery keeps the RTC's time over a power cut
_DUTY = const(7)  # GPIO number -> duty_u16 of the PWM running on it
_IRQS = const(8)  # GPIO number -> (handler, trigger, Pin) of its Pin.irq
_NGPIO = const(49)  # GPIO numbers 0..48 (the ESP32-S3's)
# the default time base (until set_clock): the host's clock, MicroPython's or CPython's
_board = [PWRON_RESET, b"", bytearray(_NGPIO), None,
          getattr(time, "ticks_ms", None) or (lambda: int(time.monotonic() * 1000)), None,
          False, {}, {}]
_uarts = {}  # id -> UARTPort; hardware wiring, survives power cuts


def set_clock(fn):
    """Use fn() -> milliseconds as the board's time base (for the WDT); returns the old one."""
    old, _board[_CLOCK] = _board[_CLOCK], fn
    return old


def set_epoch(epoch_s):
    """Wall clock: unix seconds at the moment the board clock (set_clock) reads 0."""
    _board[_EPOCH] = epoch_s


def set_rtc_battery(on=True):
    """Simulator: the board's RTC has a backup battery, so its time survives power cuts."""
    _board[_BATTERY] = bool(on)


def power_cut():
    """Cut and restore power: RTC memory, pin levels, PWM and the WDT are lost, and the RTC's
    time too (it reads 2000-01-01 00:00:00 at power-up) unless it is battery-backed."""
    b = _board
    b[_CAUSE], b[_RTC_MEM], b[_WDT] = PWRON_RESET, b"", None
    b[_GPIO], b[_DUTY], b[_IRQS] = bytearray(_NGPIO), {}, {}
    if not b[_BATTERY]:
        b[_EPOCH] = _Y2K - b[_CLOCK]() // 1000


def soft_reset(cause=SOFT_RESET):
    """Reset the chip keeping RTC memory (machine.reset(), or WDT_RESET after a WDT expiry)."""
    b = _board
    b[_CAUSE], b[_WDT] = cause, None
    b[_GPIO], b[_DUTY], b[_IRQS] = bytearray(_NGPIO), {}, {}


def reset_cause():
    return _board[_CAUSE]


def reset():
    raise ResetRequested("machine.reset()")


def unique_id():
    return UNIQUE_ID


def _buffer(buf):
    try:
        return memoryview(buf)
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


# -- I2C and PWM: sim/fakes/machine_i2c_pwm.py, loaded when first asked for -----------------

def __getattr__(name):
    """Anything not defined here comes from machine_i2c_pwm.py (I2C, I2CBus, bus, PWM, pwm_duty,
    and _buses, the I2C wiring tests reset), loaded on first use. A meter uses none of them, and
    every def in a fake is heap on the VM beside the firmware (a real board's machine is C in
    flash). The names are not listed here: each would be one more qstr on a meter's VM."""
    try:
        return getattr(load_part(), name)
    except AttributeError:
        raise AttributeError("machine has no attribute %r" % (name,)) from None


def load_part():
    """sim/fakes/machine_i2c_pwm.py, which reads this module's state. sim.board.load_fake
    replaces this with a loader of the board's own private copy."""
    from sim.fakes import machine_i2c_pwm

    return machine_i2c_pwm


# -- Pin -----------------------------------------------------------------------------------

# per GPIO number: "2" in/out, "1" input only, "0" absent (bytes, not sets of ints: no heap on
# the MicroPython VM)
_PINS = b"2222222222222222222202220222000022111111"  # the classic ESP32's
_watchers = {}  # pin id -> fn(level): hardware wiring, survives power cuts


def set_mcu(name):
    """Simulator: which chip this board is (its GPIO numbers): "esp32" or "esp32s3"."""
    global _PINS
    _PINS = (b"2222222222222222222222000022222222222222222222222" if name == "esp32s3" else
             b"2222222222222222222202220222000022111111")


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


# a GPIO's state: bits of its byte in _board[_GPIO] (a bytearray indexed by GPIO number: no
# object per pin on the VM's heap); a running PWM's duty and an irq live in dicts beside it
_MODE = const(3)  # Pin.IN (1) / Pin.OUT (3); 0 until set
_PULL_UP = const(4)
_OUT = const(8)  # the output register
_EXT = const(16)  # driven from outside, ...
_EXT_HIGH = const(32)  # ... high


def _set(id, bits, on):
    g = _board[_GPIO]
    g[id] = g[id] | bits if on else g[id] & ~bits


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        if not _pin_kind(id):
            raise ValueError("invalid pin")
        self.id = id
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        id = self.id
        if mode != -1 and mode is not None:
            if mode not in (Pin.IN, Pin.OUT):
                raise ValueError("invalid pin mode")
            if mode != Pin.IN and _pin_kind(id) == 1:
                raise ValueError("pin can only be input")
        if value is not None:
            _set(id, _OUT, value)
            _cs_edge(id, 1 if value else 0)
        if mode != -1 and mode is not None:
            _board[_GPIO][id] = _board[_GPIO][id] & ~_MODE | mode
        if pull != -1:
            _set(id, _PULL_UP, pull == Pin.PULL_UP)
        fn = _watchers.get(id)
        if fn is not None:
            fn(level(id))
        return None

    def value(self, x=None):
        id = self.id
        if x is not None:
            _set(id, _OUT, x)
            _cs_edge(id, 1 if x else 0)
            fn = _watchers.get(id)
            if fn is not None:
                fn(level(id))
            return None
        s = _board[_GPIO][id]
        if s & _MODE == Pin.OUT:
            return 1 if s & _OUT else 0
        if s & _EXT:
            return 1 if s & _EXT_HIGH else 0
        return 1 if s & _PULL_UP else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        if handler:
            _board[_IRQS][self.id] = (handler, trigger, self)
        else:
            _board[_IRQS].pop(self.id, None)


def drive(id, level):
    """Simulator: drive input pin `id` to 0/1 from outside (None releases it); fires Pin.irq."""
    before = Pin(id).value()
    _set(id, _EXT, level is not None)
    _set(id, _EXT_HIGH, level)
    after = Pin(id).value()
    irq = _board[_IRQS].get(id)
    if irq and before != after:
        handler, trigger, pin = irq
        if trigger & (Pin.IRQ_RISING if after else Pin.IRQ_FALLING):
            handler(pin)


def level(id):
    """Simulator: the level the board drives on pin `id` (None when it is not an output)."""
    s = _board[_GPIO][id] if _pin_kind(id) else 0
    return (1 if s & _OUT else 0) if s & _MODE == Pin.OUT else None


# -- UART ------------------------------------------------------------------------------------

class UARTPort:
    """The wires of one UART, owned by the simulator: at most one device model on the other end."""

    def __init__(self):
        self.model = None
        self.rx = b""  # bytes the model sent that the firmware has not read yet

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
    """The simulator's handle on UART `id`, made the first time (see bus())."""
    p = _uarts.get(id)
    if p is None:
        p = _uarts[id] = UARTPort()
    return p


class UART:
    """ESP32 UART (ids 0..2), byte-level, as machine_uart.c behaves for a polling reader."""

    def __init__(self, id, baudrate=115200, *, tx=None, rx=None, timeout=0):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % (id,))
        self.id = id
        self._port = uart(id)
        self.init(baudrate, tx=tx, rx=rx, timeout=timeout)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
             timeout=0):
        if bits not in (5, 6, 7, 8) or stop not in (1, 2) or parity not in (None, 0, 1):
            raise ValueError("invalid UART format")
        self.baudrate, self.tx, self.rx, self.timeout = baudrate, tx, rx, timeout

    def write(self, buf):
        data = bytes(_buffer(buf))
        if self._port.model is not None:
            self._port.model.uart_write(data)
        return len(data)

    def any(self):
        self._port._pull(4096)
        return len(self._port.rx)

    def read(self, n=-1):
        port = self._port
        port._pull(4096 if n is None or n < 0 else n)
        if n is None or n < 0:
            n = len(port.rx)
        data, port.rx = port.rx[:n], port.rx[n:]
        return data or None

    def readinto(self, buf, n=None):
        mv = _buffer(buf)
        n = len(mv) if n is None else min(n, len(mv))
        data = self.read(n)
        if not data:
            return None
        mv[:len(data)] = data
        return len(data)

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
        """cs: the chip-select GPIO number."""
        self.devices[cs] = model
        return model

    def detach(self, cs):
        self.devices.pop(cs, None)

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


def _cs_edge(id, out):
    """The firmware set pin id's output register: an NSS edge for the chip on it, if any."""
    if _board[_GPIO][id] & _MODE != Pin.OUT:
        return
    for sid in (1, 2):  # the SPI bus ids (a constant tuple: the loop allocates nothing)
        b = _spis.get(sid)
        model = None if b is None else b.devices.get(id)
        if model is not None:
            model.spi_select(out == 0)


def spi(id):
    """The simulator's handle on hardware SPI bus `id` (1 = HSPI, 2 = VSPI), made the first
    time (see bus())."""
    b = _spis.get(id)
    if b is None:
        b = _spis[id] = SPIBus()
    return b


class SPI:
    """ESP32 hardware SPI (ids 1 and 2) as machine_hw_spi.c: the firmware drives CS itself
    with a Pin; write/readinto/write_readinto clock bytes through `spi(id)` (MSB first, 8 bits:
    the firmware uses no other framing)."""

    def __init__(self, id, baudrate=500000, *, polarity=0, phase=0, sck=None, mosi=None,
                 miso=None):
        if id not in (1, 2):
            raise ValueError("SPI(%s) doesn't exist" % (id,))
        self.id = id  # baudrate, polarity, phase: the model clocks bytes, not edges
        self._bus = spi(id)

    def write(self, buf):
        self._bus.transfer(_buffer(buf))

    def readinto(self, buf, write=0x00):
        mv = _buffer(buf)
        mv[:] = self._bus.transfer(bytes([write]) * len(mv))

    def write_readinto(self, buf, out):
        out = _buffer(out)
        data = _buffer(buf)
        if len(data) != len(out):
            raise ValueError("buffers must be the same length")
        out[:] = self._bus.transfer(data)


# -- RTC, WDT --------------------------------------------------------------------------------

class RTC:
    def datetime(self, dt=None):
        """(year, month, day, weekday 0=Monday, hours, minutes, seconds, microseconds).

        Civil date <-> days since 1970-01-01 by H. Hinnant's days_from_civil / civil_from_days
        (eras of 400 years from March 1st), independent of the firmware's own date code."""
        ms = _board[_CLOCK]()
        if dt is not None:
            y, m, d, _wd, h, mi, s = dt[:7]
            us = dt[7] if len(dt) > 7 else 0
            y -= m <= 2
            era = (y if y >= 0 else y - 399) // 400
            yoe = y - era * 400
            doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
            days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
            unix_ms = (days * 86400 + h * 3600 + mi * 60 + s) * 1000 + us // 1000
            _board[_EPOCH] = (unix_ms - ms) / 1000
            return None
        epoch = _Y2K if _board[_EPOCH] is None else _board[_EPOCH]
        secs, frac = divmod(int(epoch * 1000) + ms, 1000)
        days, rem = divmod(secs, 86400)
        z = days + 719468
        era = (z if z >= 0 else z - 146096) // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        m = mp + (3 if mp < 10 else -9)
        return (yoe + era * 400 + (m <= 2), m, doy - (153 * mp + 2) // 5 + 1, (days + 3) % 7,
                rem // 3600, rem // 60 % 60, rem % 60, frac * 1000)

    def memory(self, data=None):
        """RTC slow memory: survives machine.reset() and deep sleep, not a power cut."""
        if data is None:
            return _board[_RTC_MEM]
        data = bytes(_buffer(data))
        if len(data) > _RTC_MEM_MAX:
            raise ValueError("buffer too long")
        _board[_RTC_MEM] = data


class WDT:
    """Task watchdog: cannot be stopped once started; the simulator polls wdt_expired()."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%s) doesn't exist" % (id,))
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _board[_WDT] = [timeout, _board[_CLOCK]()]

    def feed(self):
        wdt = _board[_WDT]
        if wdt is not None:
            wdt[1] = _board[_CLOCK]()


def wdt_expired():
    """Simulator: True when a started WDT has not been fed within its timeout."""
    wdt = _board[_WDT]
    return wdt is not None and _board[_CLOCK]() - wdt[1] > wdt[0]

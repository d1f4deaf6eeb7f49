"""The I2C, PWM and Timer peripherals of the `machine` fake (sim/fakes/machine.py loads this when
one of them is first asked for): the simulator-owned I2C bus(id) with its device models, the
firmware's I2C view of it, LEDC PWM, and timers. A pole uses I2C and PWM; a meter none, so it
never holds them."""

try:
    machine  # the board's private copy of sim/fakes/machine.py, set by sim.board.load_fake
except NameError:  # imported by sim/fakes/machine.py itself (one board per process: the VM)
    from sim.fakes import machine

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_CLOCK = const(4)  # sim/fakes/machine.py's slots in _board: the board's clock, ...
_DUTY = const(7)  # ... the running PWMs' duties
_ENODEV = 19  # MicroPython's errno.ENODEV (Linux's number too)
_buses = {}  # id -> I2CBus; hardware wiring, survives power cuts


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

    def write(self, addr, data, stop=True):
        self.transfers += 1
        dev = self.devices.get(addr)
        if dev is None or not dev.i2c_write(bytes(data), stop):
            raise OSError(_ENODEV, "ENODEV")

    def read(self, addr, n, stop=True):
        self.transfers += 1
        dev = self.devices.get(addr)
        data = None if dev is None else dev.i2c_read(n)
        if data is None:
            raise OSError(_ENODEV, "ENODEV")
        if len(data) != n:
            raise AssertionError("device model returned %d bytes, %d asked" % (len(data), n))
        return bytes(data)


def bus(id):
    """The simulator's handle on hardware I2C bus `id` (0 or 1), made the first time. Not
    dict.setdefault(id, I2CBus()) (nor in uart(), spi()): that builds a throw-away object on
    every call, and the firmware's hot paths (a driver spinning on BUSY) call these thousands
    of times inside one poll, which the heap budget counts."""
    b = _buses.get(id)
    if b is None:
        b = _buses[id] = I2CBus()
    return b


class I2C:
    """Hardware I2C (ESP32: ids 0 and 1)."""

    def __init__(self, id, *, scl=None, sda=None, freq=400000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % (id,))
        self.id = id  # scl, sda, freq: the bus model has no timing or pin mux to apply them to
        self._bus = bus(id)

    def scan(self):
        return sorted(self._bus.devices)

    def writeto(self, addr, buf, stop=True):
        data = bytes(machine._buffer(buf))
        self._bus.write(addr, data, stop)
        return len(data)  # number of ACKs received

    def readfrom(self, addr, n, stop=True):
        return self._bus.read(addr, n, stop)

    def readfrom_into(self, addr, buf, stop=True):
        mv = machine._buffer(buf)
        mv[:] = self._bus.read(addr, len(mv), stop)

    # 8-bit memory addresses only: no addrsize (what the firmware's chips use; a driver that
    # passed addrsize would get a TypeError here, not a silently wrong transfer)

    def writeto_mem(self, addr, memaddr, buf):
        self._bus.write(addr, bytes([memaddr & 0xFF]) + bytes(machine._buffer(buf)), True)

    def readfrom_mem(self, addr, memaddr, n):
        self._bus.write(addr, bytes([memaddr & 0xFF]), False)
        return self._bus.read(addr, n, True)

    def readfrom_mem_into(self, addr, memaddr, buf):
        mv = machine._buffer(buf)
        mv[:] = self.readfrom_mem(addr, memaddr, len(mv))


# -- PWM -------------------------------------------------------------------------------------

def pwm_duty(id):
    """Simulator: duty_u16 of the PWM running on pin `id`, or None."""
    return machine._board[_DUTY].get(id)


class PWM:
    """LEDC PWM as on the ESP32 (default frequency 5 kHz, duty 0 until set)."""

    def __init__(self, dest, *, freq=5000, duty_u16=0):
        self._pin = dest if isinstance(dest, machine.Pin) else machine.Pin(dest, machine.Pin.OUT)
        self._active = True
        self._duty = 0
        self.freq(freq)
        self.duty_u16(duty_u16)

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
        if self._active:  # what the pin shows (pwm_duty)
            machine._board[_DUTY][self._pin.id] = value

    def duty(self, value=None):
        if value is None:
            return self._duty >> 6
        self.duty_u16(min(max(value, 0), 1023) * 65535 // 1023)

    def deinit(self):
        self._active = False
        machine._board[_DUTY].pop(self._pin.id, None)




# -- Timer: here too, as only a Ctrl-C on the console starts one (firmware/main.py) -----------

_timers = {}  # id -> [due ms, period ms, mode, callback, Timer]


class Timer:
    """A hardware timer: a one-shot or periodic callback, called by the board when its time
    passes (run_timers; on a real chip from an interrupt)."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kwargs):
        if not 0 <= id <= 3:
            raise ValueError("Timer(%s) doesn't exist" % (id,))
        self._id = id
        if kwargs:
            self.init(**kwargs)

    def init(self, *, mode=PERIODIC, period=-1, callback=None, freq=-1):
        if freq > 0:
            period = 1000 // freq
        if period < 0:
            raise ValueError("period must be >= 0")
        _timers[self._id] = [machine._board[_CLOCK]() + period, period, mode, callback, self]

    def deinit(self):
        _timers.pop(self._id, None)


def run_timers(now_ms):
    """The callbacks of the timers due at now_ms (the board's clock)."""
    for id, t in list(_timers.items()):
        if now_ms >= t[0]:
            if t[2] == Timer.PERIODIC and t[1] > 0:
                t[0] = now_ms + t[1]
            else:
                _timers.pop(id, None)
            if t[3] is not None:
                t[3](t[4])

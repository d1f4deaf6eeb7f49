"""A firmware stand-in for VMBoard tests, run on the MicroPython VM (like tests/sim/test_board.py's
StandInApp): reads the VEML7700, keeps a boot counter in NVS (committed) and a scratch value
(uncommitted), transmits a frame every 10 s and records radio events."""

_HALF = 1 << 29
_MASK = (1 << 30) - 1


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


class StandInApp:
    def __init__(self, machine, esp32, cfg, radio, sleep_ms):
        if radio is None:  # the board's own chip, through the firmware's real driver
            from firmware.radio_board import DEFAULT, build_radio

            radio = build_radio(machine, {"board": cfg.get("board", DEFAULT)}, sleep_ms)
        self.machine, self.radio, self.sleep_ms = machine, radio, sleep_ms
        self.i2c = machine.I2C(0)
        self.i2c.writeto_mem(0x10, 0x00, b"\x00\x00")  # ALS on, gain x1, 100 ms
        self.nvs = esp32.NVS("app")
        try:
            self.boots = self.nvs.get_i32("boots") + 1
        except OSError:
            self.boots = 1
        print("standin boot", self.boots)  # must not disturb the host protocol on stdout
        self.nvs.set_i32("boots", self.boots)
        self.nvs.commit()
        self.nvs.set_i32("scratch", 7)  # never committed
        self.crash_at = cfg.get("crash_at_boot")
        self.reset_at = cfg.get("reset_at_boot")
        self.next = None
        self.measured = None
        self.events = []
        self.polls = []

    def poll(self, now):
        self.polls.append(now)
        if self.boots == self.crash_at:
            raise ValueError("boom")
        if self.boots == self.reset_at:
            self.machine.RTC().memory(b"state")
            self.machine.reset()
        ev = self.radio.poll()
        if ev:
            self.events.append((now, ev))
        if self.next is None:
            self.next = now
        if ticks_diff(now, self.next) >= 0:
            self.sleep_ms(120)  # wait for the integration, as a driver would
            raw = self.i2c.readfrom_mem(0x10, 0x04, 2)
            self.measured = {"als": raw[0] | raw[1] << 8}
            self.radio.transmit(868100000, 7, 125000, 14, b"x" * 20)
            self.next = (self.next + 10000) & _MASK
        return self.next


def create(machine, esp32, cfg, radio, sleep_ms):
    return StandInApp(machine, esp32, cfg, radio, sleep_ms)

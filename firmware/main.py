"""Entry points: create() builds a pole (hardware, MAC, application) from given modules; run()
is the device's main loop.

    app = create(machine, esp32, cfg, radio, sleep_ms)
    wake = app.poll(now_ms)          # -> next tick at which to poll again

create() takes the modules as arguments so the simulator can hand each board its own fakes;
cfg may be partial (it is merged over config.DEFAULTS and validated). The returned PoleApp
has `.mac` (EndDevice) and `.hw` (PoleHardware).
"""

from firmware import config as _config


def create(machine, esp32, cfg, radio, sleep_ms, rng=None, ticks_ms=None):
    """ticks_ms (optional, the device's time.ticks_ms): lets the app see time a poll spent
    blocked outside sleep_ms too (see firmware/poll_clock.py)."""
    from firmware.board import build_pole
    from firmware.lorawan.device import EndDevice, device_rng
    from firmware.poll_clock import PollClock
    from firmware.pole import PoleApp

    cfg = _config.merge(cfg)
    clock = PollClock(sleep_ms, ticks_ms)  # drivers sleep through it: the MAC sees that time
    hw = build_pole(machine, esp32, cfg, radio, clock.sleep_ms)
    rng = rng or device_rng(cfg["dev_eui"])  # per device: join, channel and report jitter
    app = PoleApp(hw, cfg, clock=clock, rng=rng)  # lamp at its safe level before anything can fail
    mac = EndDevice(radio, cfg, hw.nvs, rng=rng)
    app.attach(mac)
    return app


def make_radio(machine, cfg):
    """The board's LoRa driver. None exists in this repository (see drivers/radio.py): a board
    build must provide firmware/drivers/sx127x.py with Radio's methods."""
    from firmware.drivers import sx127x  # noqa: F401  (not part of this repository)

    return sx127x.SX127x(machine, cfg)


def run(config_path="/config.json"):
    import esp32
    import gc
    import machine
    import time

    cfg = _config.load(config_path)
    radio = make_radio(machine, cfg)
    app = create(machine, esp32, cfg, radio, time.sleep_ms, ticks_ms=time.ticks_ms)
    gc.collect()
    while True:
        now = time.ticks_ms()
        wake = app.poll(now)
        d = time.ticks_diff(wake, time.ticks_ms())
        if d > 0:
            time.sleep_ms(d if d < 1000 else 1000)  # cap: stay responsive to the door and WDT

"""Safe mode: what a board runs after too many boots in a row failed (firmware/boot_health.py).

The lamp at its safe level (a pole: its default level, lit; a meter: the relay as NVS last left
it, which the wiring restores), the radio quiet (its driver is never built), no watchdog, and
the console's REPL reachable (Ctrl-C breaks the loop on the device). After HOLD_MS it resets
the board, which then tries the application again: a fault that went away heals without a
truck roll, one that did not comes back here after the next failed boots. Nothing is wiped.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


HOLD_MS = const(3600000)


def start(machine, esp32, cfg, clock):
    """The board in safe mode (main.create()): the wiring, the lamp at its safe level, and
    nothing else."""
    hw = None
    try:
        if cfg["kind"] == "meter":
            from firmware.meter_hardware import build_meter

            hw = build_meter(machine, esp32, cfg, None, clock.sleep_ms)
        else:
            from firmware.pole_hardware import build_pole

            hw = build_pole(machine, esp32, cfg, None, clock.sleep_ms)
            hw.dimmer.set(cfg["default_level"])
    except Exception as e:  # noqa: BLE001 - the wiring may be what fails: stay reachable
        print("safe_mode: wiring failed: %r" % (e,))
    return SafeMode(hw, machine.reset)


class SafeMode:
    safe_mode = True
    mac = None
    slave = None

    def __init__(self, hw, reset):
        self.hw = hw
        self._reset = reset
        self._since = None

    def poll(self, now_ms):
        from firmware.ticks import ticks_add, ticks_diff

        if self._since is None:
            self._since = now_ms
            print("safe_mode: too many failed boots; lamp safe, radio off, REPL on Ctrl-C; "
                  "reset in %d s" % (HOLD_MS // 1000))
        left = HOLD_MS - ticks_diff(now_ms, self._since)
        if left <= 0:
            self._reset()
        return ticks_add(now_ms, left if left < 60000 else 60000)

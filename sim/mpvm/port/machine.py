"""The serial board's own `machine`: the resets, RTC and identity a field tool uses over the REPL.

Runs inside the VM on the `_chip` calls of sim/mpvm/serial_repl.mjs. Deliberately minimal:
firmware that needs pins and buses installs the simulator's full fake (sim/fakes/machine.py)
over it from a --frozen-boot script. Constants and reset semantics follow ports/esp32.
"""

import _chip
import binascii
import time

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def reset():
    """The chip restarts (ROM boot text, boot.py, main.py) with its flash kept; reset_cause()
    is then SOFT_RESET, as esp_restart()'s SW_CPU_RESET maps on ports/esp32."""
    _chip.reset("hard")
    raise SystemExit  # unwinds to the REPL, which hands the reset to the node side


def soft_reset():
    _chip.reset("soft")
    raise SystemExit


def reset_cause():
    return _chip.reset_cause()


def unique_id():
    return binascii.unhexlify(_chip.unique_id())


def freq(hz=None):
    if hz is None:
        return 160000000
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")


def idle():
    if _chip.sleep_ms(1):  # Ctrl-C
        raise KeyboardInterrupt


class RTC:
    """The chip's RTC (`mpremote rtc --set`), also what time.time() reads: it keeps counting
    over soft and hard resets and restarts at 2000-01-01 00:00:00 at power-on (no battery)."""

    def datetime(self, dt=None):
        if dt is None:
            now = _chip.rtc_time()
            s = int(now)
            year, month, day, hour, minute, second, weekday = time.gmtime(s)[:7]
            return (year, month, day, weekday, hour, minute, second, int((now - s) * 1000000))
        year, month, day, _weekday, hour, minute, second = dt[:7]
        us = dt[7] if len(dt) > 7 else 0
        _chip.rtc_set(time.mktime((year, month, day, hour, minute, second, 0, 0)) + us / 1000000)

    def init(self, dt):
        self.datetime(dt)

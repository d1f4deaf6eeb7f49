"""Cabinet door switch on a GPIO input, debounced with injected time.

Wiring (streetgrid pole board): the switch closes to ground while the door is shut, with the
pin's pull-up, so the pin reads 1 when the door is OPEN - a cut wire also reads "open", which
is the safe way to fail for a tamper alarm. `open_level` says which level means open.

poll(now_ms) reads the pin; a new level must be seen again debounce_ms later (no other level
in between) before is_open changes. It returns the tick at which it wants the confirming
read, or None when the level is stable.
"""

from firmware.ticks import ticks_add, ticks_diff


class Door:
    def __init__(self, pin, debounce_ms=50, open_level=1):
        self.pin = pin
        self.debounce_ms = debounce_ms
        self.open_level = open_level
        self.is_open = pin.value() == open_level  # at boot: believe the first read
        self._cand = None  # candidate state
        self._since = 0

    def poll(self, now_ms):
        state = self.pin.value() == self.open_level
        if state == self.is_open:
            self._cand = None
            return None
        if self._cand is None or self._cand != state:
            self._cand = state
            self._since = now_ms
            return ticks_add(now_ms, self.debounce_ms)
        if ticks_diff(now_ms, self._since) >= self.debounce_ms:
            self.is_open = state
            self._cand = None
            return None
        return ticks_add(self._since, self.debounce_ms)

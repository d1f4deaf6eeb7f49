"""Luminaire dimmer: a PWM duty (0..65535) for the driver's dimming input plus a lamp relay.

The PWM feeds a 0-10 V interface through an RC filter and op-amp (or a PWM dimming input
directly); invert=True for the common open-collector stage that pulls the line low. The relay
cuts the driver's mains, because most LED drivers still glow (and burn standby power) at 0 V
on the dimming line: level 0 opens the relay, any other level closes it.

Fades are stepped by the application through poll(now_ms) (no timers, no threads): the duty
moves linearly from the start level to the target in integer arithmetic, one step per poll,
and poll returns when it next wants to be called. Levels are whole percent (0..100).
"""

from firmware.ticks import ticks_add, ticks_diff

_STEP_MS = 100  # fade step: smooth enough for the eye through a driver's own ramp


def level_to_duty(level):
    return (level * 65535 + 50) // 100


class Dimmer:
    def __init__(self, pwm, relay=None, invert=False):
        self.pwm = pwm
        self.relay = relay
        self.invert = invert
        self.level = 0  # the level the lamp shows now (during a fade: the current step)
        self.target = 0
        self._from = 0  # fade start duty
        self._to = 0
        self._t0 = 0
        self._dur = 0  # 0: no fade running
        self._duty = -1

    def _write(self, duty):
        if duty != self._duty:
            self._duty = duty
            self.pwm.duty_u16(65535 - duty if self.invert else duty)

    def _relay(self, on):
        if self.relay is not None:
            self.relay.value(1 if on else 0)

    def set(self, level, fade_ms=0, now_ms=0):
        """Go to level (0..100) now, or linearly over fade_ms starting at now_ms."""
        if not 0 <= level <= 100:
            raise ValueError("dim level must be 0..100, got %r" % (level,))
        self.target = level
        if fade_ms <= 0 or level == self.level:
            self._dur = 0
            self._apply(level, level_to_duty(level))
            return
        self._from = level_to_duty(self.level) if self._dur == 0 else self._duty
        self._to = level_to_duty(level)
        self._t0 = now_ms
        self._dur = fade_ms
        if level > 0:
            self._relay(True)  # fading up from off: power the driver first

    def _apply(self, level, duty):
        self.level = level
        self._write(duty)
        self._relay(level > 0)

    def fading(self):
        return self._dur != 0

    def poll(self, now_ms):
        """Advance a running fade; returns the next tick it wants a poll at, or None."""
        if not self._dur:
            return None
        el = ticks_diff(now_ms, self._t0)
        if el >= self._dur:
            self._dur = 0
            self._apply(self.target, level_to_duty(self.target))
            return None
        if el < 0:
            el = 0
        duty = self._from + (self._to - self._from) * el // self._dur
        self._write(duty)
        self.level = (duty * 100 + 32767) // 65535
        if self.level == 0 and self.target > 0:
            self.level = 1  # on, however dim
        return ticks_add(now_ms, _STEP_MS)

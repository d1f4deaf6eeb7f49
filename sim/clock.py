"""Virtual time of a simulated city: accelerated, event-driven, held back for real gateways.

Virtual time is an int of microseconds since the simulation start. A concentrator's ``tmst``
is it mod 2**32; a virtual UTC epoch (``epoch_s``, Unix seconds at virtual 0) gives rxpk
``time``. Everything simulated (boards, medium, world) runs on it; the gateway under test runs
on real time. The clock reconciles the two:

* Pace: virtual time never runs ahead of ``speed`` x the real time elapsed since the last
  anchor (``speed=None``: no cap).
* Idle jumps: when nothing real is pending (no open barrier) and ``jump_idle`` is set, time
  jumps straight to the next event instead of waiting for the pace, so a quiet night costs no
  real time. The pace then only applies while a gateway might still act.
* Barriers: after an uplink is pushed to the gateway, ``hold(at_us)`` keeps virtual time from
  passing its RX1 instant until ``grace_s`` real seconds have passed or ``release_at(at_us)``
  (the PULL_RESP for it arrived). Without this, an accelerated clock would run past RX1 before
  the gateway's dedup window (real time) even closed, and class-A downlinks could never work.
  After a barrier blocked the clock, the pace is re-anchored (no catch-up burst).

The core is sans-I/O (``step(target_us, real_s)``, ``wait_s(target_us, real_s)``) so tests
drive it with a fake real clock; ``advance_to`` is the asyncio wrapper the hub awaits.
``poke()`` wakes a waiting ``advance_to`` early (a downlink got scheduled, a barrier was
released) so the hub can look at its event list again.
"""

import asyncio
import datetime
import time

TMST_MOD = 1 << 32
DEFAULT_EPOCH_S = 1767225600  # 2026-01-01T00:00:00Z
DEFAULT_GRACE_S = 0.35  # gateway dedup window 200 ms + 150 ms to answer


class Barrier:
    __slots__ = ("at_us", "deadline_s", "key", "released")

    def __init__(self, at_us, deadline_s, key):
        self.at_us = at_us
        self.deadline_s = deadline_s
        self.key = key
        self.released = False

    def __repr__(self):
        return "Barrier(at_us=%d, deadline=%.3f, key=%r%s)" % (
            self.at_us, self.deadline_s, self.key, ", released" if self.released else "")


class VirtualClock:
    def __init__(self, speed=2880.0, grace_s=DEFAULT_GRACE_S, epoch_s=DEFAULT_EPOCH_S,
                 start_us=0, jump_idle=True, real=time.monotonic):
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (virtual seconds per real second) or None")
        self.speed = speed
        self.grace_s = grace_s
        self.epoch_s = epoch_s
        self.jump_idle = jump_idle
        self.real = real
        self.now_us = int(start_us)
        self._anchor = None  # (real_s, virtual_us) of the pace
        self._barriers = []
        self._wake = None
        self.counters = {"barriers": 0, "released": 0, "expired": 0, "blocked_s": 0.0,
                         "jumps": 0}

    # ---- readings ------------------------------------------------------------------------

    @property
    def now_ms(self):
        return self.now_us // 1000

    def tmst(self, t_us=None):
        """Concentrator timestamp of virtual instant t_us (default now): us mod 2**32."""
        return (self.now_us if t_us is None else t_us) % TMST_MOD

    def unwrap_tmst(self, tmst):
        """The absolute virtual us congruent to tmst mod 2**32 nearest to now."""
        base = self.now_us - self.now_us % TMST_MOD + tmst
        if base - self.now_us > TMST_MOD // 2:
            base -= TMST_MOD
        elif self.now_us - base >= TMST_MOD // 2:
            base += TMST_MOD
        return base

    def utc(self, t_us=None):
        """Virtual UTC as an aware datetime."""
        t = self.now_us if t_us is None else t_us
        return (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
                + datetime.timedelta(seconds=self.epoch_s, microseconds=t))

    def utc_iso(self, t_us=None):
        """rxpk "time": ISO 8601 UTC with microseconds, e.g. 2026-01-01T00:00:00.000000Z."""
        return self.utc(t_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def unix_s(self, t_us=None):
        return self.epoch_s + (self.now_us if t_us is None else t_us) / 1e6

    # ---- barriers ------------------------------------------------------------------------

    def hold(self, at_us, grace_s=None, key=None, real_s=None):
        """Do not pass at_us before grace_s real seconds from now, unless released."""
        r = self.real() if real_s is None else real_s
        b = Barrier(int(at_us), r + (self.grace_s if grace_s is None else grace_s), key)
        self._barriers.append(b)
        self.counters["barriers"] += 1
        return b

    def release(self, barrier):
        if not barrier.released and barrier in self._barriers:
            barrier.released = True
            if barrier.at_us <= self.now_us:
                self._anchor = None  # it held the clock: the pace restarts at the next step
            self._barriers.remove(barrier)
            self.counters["released"] += 1
            self.poke()

    def release_at(self, at_us):
        """Release every barrier at instant at_us (a PULL_RESP for that RX1 instant came)."""
        n = 0
        for b in [b for b in self._barriers if b.at_us == at_us]:
            self.release(b)
            n += 1
        return n

    def barriers(self, real_s=None):
        """The barriers still in force at real time real_s (expired ones are dropped)."""
        r = self.real() if real_s is None else real_s
        keep = []
        for b in self._barriers:
            if b.deadline_s <= r:
                self.counters["expired"] += 1
            else:
                keep.append(b)
        self._barriers = keep
        return keep

    # ---- sans-I/O core -------------------------------------------------------------------

    def _free(self, active):
        return self.speed is None or (self.jump_idle and not active)

    def step(self, target_us, real_s):
        """Move as far towards target_us as allowed at real time real_s (never blocks).

        Returns True when target_us is reached."""
        active = self.barriers(real_s)
        limit = min([target_us] + [b.at_us for b in active])
        if self._free(active):
            new = limit
            if new > self.now_us:
                self.counters["jumps"] += 1
        else:
            if self._anchor is None:
                self._anchor = (real_s, self.now_us)
            r0, v0 = self._anchor
            new = min(limit, v0 + int(round((real_s - r0) * self.speed * 1e6)))
        if new > self.now_us:
            self.now_us = int(new)
        if self._free(active) or (active and self.now_us >= limit and limit < target_us):
            self._anchor = (real_s, self.now_us)  # jumped, or held: pace restarts from here
        return self.now_us >= target_us

    def wait_s(self, target_us, real_s):
        """Real seconds before step() can make more progress towards target_us."""
        if self.now_us >= target_us:
            return 0.0
        active = self.barriers(real_s)
        held = [b.deadline_s for b in active if b.at_us <= self.now_us]
        if held:
            return max(0.0, min(held) - real_s)
        if self._free(active) or self._anchor is None:
            return 0.0
        r0, v0 = self._anchor
        goal = min([target_us] + [b.at_us for b in active])
        return max(0.0, r0 + (goal - v0) / (self.speed * 1e6) - real_s)

    # ---- asyncio -------------------------------------------------------------------------

    def poke(self):
        """Wake a pending advance_to() (new event or released barrier)."""
        if self._wake is not None:
            self._wake.set()

    async def advance_to(self, target_us):
        """Move virtual time to target_us, waiting in real time as the pace and barriers
        require. Returns the virtual time reached: target_us, or earlier when poke()d."""
        if self._wake is None:
            self._wake = asyncio.Event()
        target_us = int(target_us)
        while True:
            r = self.real()
            if self.step(target_us, r):
                return self.now_us
            w = self.wait_s(target_us, r)
            self._wake.clear()
            held = any(b.at_us <= self.now_us for b in self._barriers)
            t0 = self.real()
            try:
                await asyncio.wait_for(self._wake.wait(), max(w, 0.0005))
                woken = True
            except asyncio.TimeoutError:
                woken = False
            if held:
                self.counters["blocked_s"] += self.real() - t0
            if woken:
                self.step(target_us, self.real())
                return self.now_us

"""Waiting on the asyncio loop until an instant, to within tens of microseconds, never early.

Why: the loop's timers wake through epoll, whose timeout is whole milliseconds rounded up, so
asyncio.sleep(0.0018) returns 0.2-1 ms late. A Modbus RTU master must leave t3.5 of silence
(1.75-2 ms at 19200 baud) before each request; sleeping it with asyncio adds ~0.5 ms to every
~18 ms transaction. On Linux a timerfd armed at an absolute CLOCK_MONOTONIC instant (the clock
of loop.time()) makes that same epoll return at the instant (timer slack, ~50 us): no thread,
no spinning. Where there is no timerfd (not Linux, a loop without add_reader), asyncio.sleep.
"""

from __future__ import annotations

import asyncio
import os
import time

__all__ = ["DeadlineSleep"]

_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1
_CLOCK_MONOTONIC = 1


def _timerfd():
    """(fd, arm(deadline_ns)) of a new non-blocking timerfd, or None where there is none."""
    if hasattr(os, "timerfd_create"):  # Python 3.13+
        fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        return fd, lambda ns: os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME, initial=ns)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError, ImportError):
        return None

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

    fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return None
    spec = _Itimerspec()

    def arm(ns: int) -> None:
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return fd, arm


class DeadlineSleep:
    """`await until(when)`: return once loop.time() >= when. One waiter at a time (a bus's
    scheduler); `close()` releases the timerfd. `precise` says whether a timerfd is used."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = None
        self._arm = None
        self._waiter = None
        if self._loop.time() - time.monotonic() > 0.001:  # a loop on another clock
            return
        made = None
        try:
            made = _timerfd()
            if made is not None:
                self._loop.add_reader(made[0], self._fired)
        except (OSError, NotImplementedError, RuntimeError):
            if made is not None:
                os.close(made[0])
            made = None
        if made is not None:
            self._fd, self._arm = made

    @property
    def precise(self) -> bool:
        return self._fd is not None

    async def until(self, when: float) -> None:
        loop = self._loop
        while True:
            now = loop.time()
            if now >= when:
                return
            if self._fd is None:
                await asyncio.sleep(when - now)
                continue
            waiter = self._waiter = loop.create_future()
            try:
                self._arm(int(when * 1e9) + 1)
                await waiter
            finally:
                if self._waiter is waiter:  # not a newer wait's (this one was cancelled)
                    self._waiter = None

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except (BlockingIOError, InterruptedError):
            return
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

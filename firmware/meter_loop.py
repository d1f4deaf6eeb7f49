"""The meter's loop: the Modbus slave at character timing and the application's poll, with their
failure policy. One plain loop, not asyncio: asyncio's own objects are 5 KB of a board's heap
(measured on the MicroPython VM), and two poll functions that say when to be called again need
no scheduler. A pole has one poll loop in main.run() and never loads this.

A meter answers Modbus at character timing while its application polls the metering chip once a
second. A failing application poll is logged and retried a second later while the slave keeps
serving the committed energy; _APP_FAILURES_BEFORE_RESET in a row reset the board: everything
that must survive is in NVS, so a clean boot is the recovery. A slave poll that raises is logged
and resets the board, so Modbus never goes silent unnoticed. Between polls the loop sleeps until
the earlier of the two wake-ups (at most a second: the WDT and the door): bytes that arrive
meanwhile wait in the UART's FIFO, as they would for any scheduler.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_APP_FAILURES_BEFORE_RESET = const(3)
_MAX_SLEEP_US = const(1000000)


def log_exception(where, e):
    """The failure and, on MicroPython, its traceback on the console."""
    import sys

    print("main: %s failed: %r" % (where, e))
    if hasattr(sys, "print_exception"):  # MicroPython: the traceback on the console
        sys.print_exception(e)


def run_meter(app, ticks_ms, ticks_us, sleep_us, reset):
    """Run the meter for ever (until reset() or an exception from it): app.poll(now_ms) when it
    asked to be, app.slave.poll(now_us) (if the meter has a slave) as often as it asks."""
    from firmware.ticks import ticks_add, ticks_diff  # ticks_us wraps as ticks_ms does

    slave = app.slave
    failures = 0
    app_wake = ticks_ms()
    slave_wake = 0
    while True:
        if slave is not None:
            try:
                slave_wake = slave.poll(ticks_us())
            except Exception as e:  # noqa: BLE001 - Modbus must not go silent unnoticed
                log_exception("Modbus slave", e)
                reset()
                return  # (on the device reset() does not return)
        now = ticks_ms()
        if ticks_diff(app_wake, now) <= 0:
            try:
                app_wake = app.poll(now)
                failures = 0
            except Exception as e:  # noqa: BLE001 - a bug must not stop the meter silently
                failures += 1
                log_exception("meter poll (%d in a row)" % failures, e)
                if failures >= _APP_FAILURES_BEFORE_RESET:
                    reset()
                    return
                app_wake = ticks_add(ticks_ms(), 1000)
        d = ticks_diff(app_wake, ticks_ms()) * 1000
        if slave is not None:
            d = min(d, ticks_diff(slave_wake, ticks_us()))
        if d > 0:
            sleep_us(d if d < _MAX_SLEEP_US else _MAX_SLEEP_US)

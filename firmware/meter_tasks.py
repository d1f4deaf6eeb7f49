"""The meter's two asyncio tasks, Modbus and the application, with their failure policy.

A meter answers Modbus at character timing while its application polls the metering chip once a
second, so main.run() runs them as two tasks (a pole has one poll loop and never loads this).
A failing application poll is logged and retried a second later while the slave keeps serving
the committed energy; _APP_FAILURES_BEFORE_RESET in a row reset the board: everything that must
survive is in NVS, so a clean boot is the recovery. A slave task that ends with an exception is
logged and resets the board, so Modbus never goes silent unnoticed.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


def log_exception(where, e):
    """The failure and, on MicroPython, its traceback on the console."""
    import sys

    print("main: %s failed: %r" % (where, e))
    if hasattr(sys, "print_exception"):  # MicroPython: the traceback on the console
        sys.print_exception(e)


_APP_FAILURES_BEFORE_RESET = const(3)


async def app_task(app, ticks_ms, reset):
    """The application's poll as an asyncio task, beside the Modbus slave's serve()."""
    import asyncio

    from firmware.ticks import ticks_add, ticks_diff

    failures = 0
    while True:
        try:
            wake = app.poll(ticks_ms())
            failures = 0
        except Exception as e:  # noqa: BLE001 - a bug must not stop the meter silently
            failures += 1
            log_exception("meter poll (%d in a row)" % failures, e)
            if failures >= _APP_FAILURES_BEFORE_RESET:
                reset()
            wake = ticks_add(ticks_ms(), 1000)
        d = ticks_diff(wake, ticks_ms())
        await asyncio.sleep_ms(d if 0 < d < 1000 else (1000 if d > 0 else 0))


async def run_meter(app, ticks_ms, reset):
    """The meter's tasks: Modbus (if any) and the application."""
    import asyncio

    from firmware.modbus_slave import serve

    task = None
    if app.slave is not None:
        async def modbus():
            try:
                await serve(app.slave)
            except Exception as e:  # noqa: BLE001
                log_exception("Modbus slave", e)
                reset()

        task = asyncio.create_task(modbus())
    try:
        await app_task(app, ticks_ms, reset)
    finally:  # (on the device reset() does not return; elsewhere nothing is left running)
        if task is not None:
            task.cancel()

"""Entry points: create() builds a pole or a meter (hardware, MAC, application) from given
modules; run() is the device's main loop.

    app = create(machine, esp32, cfg, radio, sleep_ms)
    wake = app.poll(now_ms)          # -> next tick at which to poll again

create() takes the modules as arguments so the simulator can hand each board its own fakes;
radio None builds the board's own LoRa driver from cfg["board"] (firmware/radio_board.py), as
run() does on the device and the simulator does for every board, once the lamp is safe: a chip
that does not answer is a boot error (printed, and named in hw.faults and app.radio_error) and
the device runs without LoRaWAN (the lamp on its photocell, a meter on Modbus) instead of
crashing in a loop. Tests may pass a scripted radio instead. cfg may be partial (it is merged over the defaults of its kind, config.defaults, and
validated). cfg["kind"] "pole" (the default) gives a PoleApp with `.mac` (EndDevice) and `.hw`
(PoleHardware). "meter" gives a MeterApp with `.hw` (MeterHardware), `.source` (MeterSource),
`.slave` (ModbusSlave, None with interfaces "lorawan"; driven on its own at microsecond
granularity: slave.poll(now_us), by firmware.meter_loop on the device) and `.mac` (None with
interfaces "modbus", when radio may be None). The building itself is firmware/startup.py,
unloaded after the boot.
"""


def create(machine, esp32, cfg, radio, sleep_ms, rng=None, ticks_ms=None):
    """ticks_ms (optional, the device's time.ticks_ms): lets the app see time a poll spent
    blocked outside sleep_ms too (see firmware/poll_clock.py)."""
    from firmware import startup

    app = startup.start(machine, esp32, cfg, radio, sleep_ms, rng, ticks_ms)
    # needed only while a device boots: the builders, the config check, the board profiles
    unload(("firmware.startup", "firmware.config", "firmware.pole_config",
            "firmware.meter_config", "firmware.radio_board", "firmware.pole_hardware",
            "firmware.meter_hardware", "firmware.boot_health"))
    return app


def unload(names):
    """Unload modules that only the boot uses (see create()), or that a device uses once in a
    while (firmware.boot_health, the join): about 5 KB of functions and tables on an ESP32 heap.
    MicroPython only; a later import loads them again. CPython keeps them, so that code holding
    a module (tests) still sees the classes the firmware raises."""
    import sys

    if sys.implementation.name != "micropython":
        return
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, leaf = name.rpartition(".")
        parent = sys.modules.get(pkg)
        # through the dict: hasattr() would intern the name of a module that was never loaded
        # (a meter's "pole_hardware") as one more qstr for good
        if parent is not None:
            parent.__dict__.pop(leaf, None)


def run(config_path="/config.json"):
    import esp32
    import gc
    import machine
    import time

    from firmware import config

    cfg = config.load(config_path)
    del config
    meter = cfg["kind"] == "meter"
    app = create(machine, esp32, cfg, None, time.sleep_ms, ticks_ms=time.ticks_ms)
    gc.collect()
    try:
        if meter and not app.safe_mode:
            from firmware.meter_loop import run_meter

            run_meter(app, time.ticks_ms, time.ticks_us, time.sleep_us, machine.reset)
            return
        while True:
            now = time.ticks_ms()
            wake = app.poll(now)
            d = time.ticks_diff(wake, time.ticks_ms())
            if d > 0:
                time.sleep_ms(d if d < 1000 else 1000)  # cap: stay responsive to the door and WDT
    except KeyboardInterrupt:
        # Ctrl-C on the console (a technician, mpremote before a deploy): the loop stops and
        # the REPL takes over. The watchdog cannot be stopped once started, so a timer feeds it
        # from then on: the board is not reset under the technician's hands.
        wdt = app.wdt
        if wdt is not None:
            machine.Timer(0).init(period=1000, callback=lambda t: wdt.feed())
            print("main: stopped (Ctrl-C); the watchdog is fed by a timer; machine.reset() "
                  "restarts")
        raise

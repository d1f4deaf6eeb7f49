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
granularity: slave.poll(now_us), by firmware.meter_loop on the device) and `.mac` (None with interfaces "modbus", when
radio may be None).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_WDT_MS = const(30000)  # no legitimate poll blocks near this long (sensor waits are ms)


def create(machine, esp32, cfg, radio, sleep_ms, rng=None, ticks_ms=None):
    """ticks_ms (optional, the device's time.ticks_ms): lets the app see time a poll spent
    blocked outside sleep_ms too (see firmware/poll_clock.py)."""
    from firmware import boot_health, config
    from firmware.nvs_store import NvsStore
    from firmware.poll_clock import PollClock

    cfg = config.merge(cfg)
    clock = PollClock(sleep_ms, ticks_ms)  # drivers sleep through it: the MAC sees that time
    store = NvsStore(esp32.NVS(cfg["kind"]))  # the application's namespace
    cause = machine.reset_cause()
    failures = boot_health.begin(store, cause == machine.PWRON_RESET
                                 or cause == machine.HARD_RESET)
    if not failures:
        from firmware import safe_mode

        app = safe_mode.start(machine, esp32, cfg, clock)
    else:
        if cfg["kind"] == "meter":
            app = _create_meter(machine, esp32, cfg, radio, clock, rng)
        else:
            app = _create_pole(machine, esp32, cfg, radio, clock, rng)
        app.boot_failures = failures
        app.esp32 = esp32  # for boot_health.passed(): the OTA partition to mark valid
        # fed at the start of every poll (DeviceApp): a poll that hangs longer resets the board
        app.wdt = machine.WDT(timeout=_WDT_MS)
    # needed only while a device boots: the config check, the board profiles, the builders
    unload(("firmware.config", "firmware.pole_config", "firmware.meter_config",
            "firmware.radio_board", "firmware.pole_hardware", "firmware.meter_hardware",
            "firmware.boot_health"))
    return app


def unload(names):
    """Unload modules that only the boot uses (see create()), or that a device uses once in a
    while (firmware.boot_health): about 5 KB of functions and tables on an ESP32 heap. MicroPython only; a later import
    (the next boot) loads them again. CPython keeps them, so that code holding a module (tests)
    still sees the classes the firmware raises."""
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


def _create_pole(machine, esp32, cfg, radio, clock, rng):
    from firmware.pole_hardware import build_pole
    from firmware.lorawan.device import EndDevice, device_rng
    from firmware.pole import PoleApp

    hw = build_pole(machine, esp32, cfg, radio, clock.sleep_ms)
    rng = rng or device_rng(cfg["dev_eui"])  # per device: join, channel and report jitter
    app = PoleApp(hw, cfg, clock=clock, rng=rng)  # lamp at its safe level before anything can fail
    if radio is None:
        radio = _boot_radio(machine, cfg, clock.sleep_ms, hw, app)
    if radio is not None:
        app.attach(EndDevice(radio, cfg, hw.nvs, rng=rng))
    return app


def _create_meter(machine, esp32, cfg, radio, clock, rng):
    from firmware.meter_hardware import build_meter
    from firmware.meter_app import FIRMWARE_VERSION, MeterApp
    from firmware.meter_source import MeterSource

    hw = build_meter(machine, esp32, cfg, radio, clock.sleep_ms)
    source = MeterSource(hw.chip, hw.register, hw.relay)
    lorawan = cfg["interfaces"] != "modbus"
    if lorawan:
        from firmware.lorawan.device import EndDevice, device_rng

        rng = rng or device_rng(cfg["dev_eui"])
    app = MeterApp(hw, cfg, source, clock=clock, rng=rng)
    if cfg["interfaces"] != "lorawan":
        from firmware.modbus_slave import ModbusSlave
        from firmware.nvs_store import NvsStore

        # provisioned address and baud; a Modbus write saved in NVS takes precedence afterwards
        store = NvsStore(hw.modbus_nvs, {"mb_addr": cfg["modbus_address"],
                                         "mb_baud": cfg["modbus_baud"] // 100})
        serial = cfg["serial_number"] or int(cfg["dev_eui"][-8:], 16)
        app.slave = ModbusSlave(hw.uart, hw.de, source, store=store, serial=serial,
                                firmware=FIRMWARE_VERSION)
    if lorawan and radio is None:
        radio = _boot_radio(machine, cfg, clock.sleep_ms, hw, app)
    if lorawan and radio is not None:
        app.attach(EndDevice(radio, cfg, hw.nvs, rng=rng))
    return app


def _boot_radio(machine, cfg, sleep_ms, hw, app):
    """The board's driver, or None after a boot error (see the module docstring)."""
    from firmware.drivers.radio import RadioError
    from firmware.radio_board import build_radio

    app.radio_error = None
    try:
        radio = build_radio(machine, cfg, sleep_ms)
    except RadioError as e:
        app.radio_error = str(e)
        hw.faults.append("radio: %s" % e)
        print("main: BOOT ERROR radio (board %s): %s; running without LoRaWAN"
              % (cfg["board"] if isinstance(cfg["board"], str) else "custom", e))
        return None
    hw.radio = radio
    return radio


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

"""What a device does once, at boot: merge and check its config, count the boot (boot_health),
then build the hardware, the application and the MAC, or the safe mode. firmware.main.create()
runs this and unloads it with the other boot-only modules: a running device does not hold the
code that built it.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_WDT_MS = const(30000)  # no legitimate poll blocks near this long (sensor waits are ms)


def start(machine, esp32, cfg, radio, sleep_ms, rng, ticks_ms):
    """firmware.main.create(), whose docstring says what it builds."""
    from firmware import boot_health, config
    from firmware.nvs_store import NvsStore
    from firmware.poll_clock import PollClock

    cfg = config.merge(cfg)
    clock = PollClock(sleep_ms, ticks_ms)  # drivers sleep through it: the MAC sees that time
    store = NvsStore(esp32.NVS(cfg["kind"]))  # the application's namespace
    cause = machine.reset_cause()
    power = cause == machine.PWRON_RESET or cause == machine.HARD_RESET
    failures = boot_health.begin(store, power)
    # the console's first line of this boot (streetgrid-field verify reads it; the technician
    # guide lists the lines): what runs, as whom, after which reset, how many boots unproven
    print("main: boot %s DevEUI %s board %s reset %d unproven %d"
          % (cfg["kind"], cfg["dev_eui"], cfg["board"] if isinstance(cfg["board"], str)
             else "custom", cause, failures))
    if not failures:
        from firmware import safe_mode

        app = safe_mode.start(machine, esp32, cfg, clock)
    else:
        if cfg["kind"] == "meter":
            app = _create_meter(machine, esp32, cfg, radio, clock, rng)
        else:
            app = _create_pole(machine, esp32, cfg, radio, clock, rng)
        app.boot_failures = failures
        app.boot_report = boot_health.report(store, cause, failures, power)
        app.esp32 = esp32  # for boot_health.passed(): the OTA partition to mark valid
        # fed at the start of every poll (DeviceApp): a poll that hangs longer resets the board
        app.wdt = machine.WDT(timeout=_WDT_MS)
    return app


def _create_pole(machine, esp32, cfg, radio, clock, rng):
    from firmware.pole_hardware import build_pole
    from firmware.lorawan.device import EndDevice, device_rng
    from firmware.pole import PoleApp

    hw = build_pole(machine, esp32, cfg, radio, clock.sleep_ms)
    _print_faults(hw)
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
    _print_faults(hw)
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


def _print_faults(hw):
    for f in hw.faults:  # a sensor or chip that did not answer: the device runs without it
        print("main: BOOT ERROR %s" % f)


def _boot_radio(machine, cfg, sleep_ms, hw, app):
    """The board's driver, or None after a boot error (see firmware.main's docstring)."""
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

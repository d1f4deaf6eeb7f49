"""A field board's hardware inside the MicroPython VM of sim/mpvm/serial_repl.mjs: the simulator's
`machine` and `esp32` fakes with the board's chip models soldered on, running free on the VM's
own clock, as the silicon would under whatever firmware was deployed.

Why free-running: sim.devices.pole_board.PoleBoard drives the firmware poll by poll on virtual
time, which suits a city but not a board a technician flashes and deploys: here the firmware
runs its own main.py (firmware.main.run) and nothing but the chips' physics is simulated. Time
is the VM's ticks_ms; every sleep of the firmware moves the chip models (their IRQ lines and
the energy the metering chip counts) and checks the watchdog, which resets the board when it
expired. A hung loop that never sleeps would block the VM itself; on a board started with
watchdog_everywhere (the VM's settrace build) a trace function checks the watchdog every 256
Python events too, so such a loop is reset as the silicon's timer would reset it.

What lives on the host, over the `radiolink` module (sim/field_board.py answers): the radio's
antenna (SimRadio's firmware-side calls, as on sim/mpvm/board.py) and the NVS partition (loaded
at boot, saved on every commit, so it outlives resets and power cuts as flash does). Resets,
reset causes, RTC and the unique id are the serial board's own (sim/mpvm/port/machine.py).

Run at every boot by the board's --frozen-boot script: install(wiring), wiring being the JSON
the host computed (sim/field_board.py: the pins of the board's peripherals and its radio
profile), before boot.py and main.py run.
"""

import json
import sys
import time

import _chip
import radiolink


def _call(fn, args=()):
    reply = json.loads(radiolink.call(json.dumps([fn, args])))
    if isinstance(reply, str):  # the host could not carry it out: the driver sees an error
        raise RuntimeError(reply)
    return reply[0]


# The chip model's antenna (sim/devices/sx1276.py, sx1262.py call these): SimRadio on the host.

def rssi(freq_hz):
    return _call("rssi", [freq_hz])


def transmit(freq_hz, sf, bw_hz, power_dbm, data, airtime_us=None, lorawan=True):
    _call("transmit", [freq_hz, sf, bw_hz, power_dbm, bytes(data).hex(), airtime_us, lorawan])


def receive(freq_hz, sf, bw_hz, timeout_ms):
    _call("receive", [freq_hz, sf, bw_hz, timeout_ms])


def standby():
    _call("standby")


def power_off():
    _call("power_off")


def poll():
    ev = _call("poll")
    if ev is None:
        return None
    if ev[0] == "rx":
        return ("rx", bytes.fromhex(ev[1]), ev[2], ev[3])
    return tuple(ev)


def _load_nvs(flash):
    for ns, keys in (_call("nvs_load") or {}).items():
        flash.data[ns] = dict((k, (kind, bytes.fromhex(v) if kind == "blob" else v))
                              for k, (kind, v) in keys.items())


def _save_nvs(flash):
    _call("nvs_save", [dict((ns, dict((k, [kind, v.hex() if kind == "blob" else v])
                                      for k, (kind, v) in keys.items()))
                            for ns, keys in flash.data.items())])


def install(wiring):
    """The board's hardware as `machine` and `esp32` for the firmware (see the module
    docstring). wiring: {"kind", "cfg" (pins and buses, firmware config keys), "radio" (the
    radio profile, or None)}."""
    import machine as port  # the serial board's own: resets, reset cause, RTC, identity

    import sim.fakes.esp32 as esp32
    import sim.fakes.machine as machine
    from sim.devices.pole_board import attach_radio

    clock = time.ticks_ms
    machine.set_clock(clock)
    machine.set_epoch(int(_chip.rtc_time()) - clock() // 1000)
    machine.UNIQUE_ID = port.unique_id()
    machine.reset = port.reset
    machine.reset_cause = port.reset_cause
    _load_nvs(esp32.FLASH)
    esp32.FLASH.on_commit = _save_nvs
    if wiring["kind"] == "meter":
        from sim.devices.meter_board import MeterPeripherals as parts
    else:
        from sim.devices.pole_peripherals import PolePeripherals as parts
    hardware = parts(machine, wiring["cfg"], clock)
    hardware.drive_inputs()
    chip = attach_radio(machine, wiring["radio"], sys.modules[__name__], clock, None)
    sys.modules["machine"] = machine
    sys.modules["esp32"] = esp32
    _run_free(time, machine, hardware, chip)
    if wiring.get("watchdog_everywhere"):
        _watch_everywhere(machine)
    return hardware, chip


def _wdt_reset():
    print("wdt: the watchdog was not fed in time: reset")
    _chip.reset("wdt")
    raise SystemExit


def _watch_everywhere(machine):
    """The watchdog between any two lines and calls of Python (sys.settrace), not only at
    sleeps: the hardware timer fires whatever the CPU runs. Every 256th event, so the firmware
    still runs at a useful speed."""
    seen = [0]

    def trace(frame, event, arg):
        seen[0] += 1
        if not seen[0] & 255 and machine.wdt_expired():
            sys.settrace(None)
            _wdt_reset()
        return trace

    sys.settrace(trace)


def _run_free(clock_module, machine, hardware, chip):
    """Every sleep of the firmware: the chips catch up with the time that passed, due timers'
    callbacks run, and an expired watchdog resets the board (cause WDT_RESET)."""

    def moved():
        now = clock_module.ticks_ms()
        hardware.advance_meter(now)
        if chip is not None:
            chip.advance()
        timers = sys.modules.get("sim.fakes.machine_i2c_pwm")  # loaded once one is asked for
        if timers is not None:
            timers.run_timers(now)
        if machine.wdt_expired():
            _wdt_reset()

    def wrap(sleep):
        def sleep_and_move(t):
            sleep(t)
            moved()
        return sleep_and_move

    for name in ("sleep", "sleep_ms", "sleep_us"):
        setattr(clock_module, name, wrap(getattr(clock_module, name)))

"""Boot health: how many boots in a row failed before the application proved itself healthy,
kept in NVS (it must survive the very resets it counts), and what that count decides.

A boot counts as failed from its start until DeviceApp declares it healthy: joined (or its
session restored) with one uplink sent, or, without LoRaWAN or without a network, ten minutes
of polls that all returned (a gateway outage must not look like a broken board). A crash or a
watchdog reset before that leaves the boot counted; a power cut or the reset button does not
(flickering mains is not a broken image) and starts the count again. After _SAFE_MODE_AFTER
failed boots in a row the next boot is a safe mode (firmware/safe_mode.py). Nothing else is written
here and nothing is ever wiped: provisioning, the LoRaWAN session and counters, the energy
registers and the settings stay as they are.

Boot-only: main.create() unloads this module with the configuration, and DeviceApp imports it
again once, for passed().
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_SAFE_MODE_AFTER = const(5)  # failed boots in a row before a safe mode
_FAILS = const("boot_fails")  # NVS keys, in the application's namespace ("pole" / "meter")
_SAFE_MODES = const("safe_modes")
_TOLD = const("safe_told")  # safe_modes as of the last boot frame the network acknowledged


def begin(store, power):
    """Count this boot as failed until proved otherwise (committed before anything can go
    wrong) -> the failed boots in a row, this one included; 0 when it must be a safe mode
    instead. power: the power came on (after a power cut, or the reset button), not a crash: the
    boot before it did not fail. A safe mode clears the count, so that the boot after it tries
    the application again, and adds one to the safe modes since commissioning (NVS
    "safe_modes")."""
    n = 1 if power else (store.load(_FAILS) or 0) + 1
    if n > _SAFE_MODE_AFTER:
        store.save(_SAFE_MODES, (store.load(_SAFE_MODES) or 0) + 1)
        n = 0
    store.save(_FAILS, n)
    return n


def report(store, cause, failures, power):
    """The boot frame's fields (fPort 13 / 23, sent first by DeviceApp), or None when there is
    nothing to tell: a power-on (power) after healthy boots, every safe mode reported. Any other
    reset is news for the operator: the watchdog, a crash, a reboot command, the end of a safe
    mode. A safe mode stays flagged until a boot frame that carries it is acknowledged (told()),
    so one lost frame, or a power cut before it went out, does not hide it."""
    safe = store.load(_SAFE_MODES) or 0
    new = safe != (store.load(_TOLD) or 0)
    if power and failures <= 1 and not new:
        return None
    return {"reset_cause": cause if 0 <= cause <= 5 else 0, "failed_boots": failures - 1,
            "safe_modes": safe, "events": 1 if new else 0}


def told(store, safe_modes):
    """The network acknowledged a boot frame that reported safe_modes."""
    if store.load(_TOLD) != safe_modes:
        store.save(_TOLD, safe_modes)


def passed(store, esp32, faults=()):
    """This boot is healthy: the count back to 0, and a new MicroPython firmware that got this
    far is kept (ESP32 OTA: without this its bootloader rolls back at the next reset). An app
    on trial (A/B slots, /app_slots.mpy from `streetgrid-field deploy`) is kept too if its
    self-test passes: joined or resumed with an uplink sent (what brought us here) and no
    driver that failed at boot (faults). -> False when it failed: the caller resets, and the
    board goes back to the good slot."""
    store.save(_FAILS, 0)
    part = getattr(esp32, "Partition", None)
    if part is not None:
        part.mark_app_valid_cancel_rollback()
    import sys

    try:
        import app_slots
    except ImportError:
        return True  # no A/B slots on this board
    try:
        if not app_slots.on_trial():
            return True
        if faults:
            print("main: the app on trial failed its self-test (%s): back to the good slot"
                  % "; ".join(faults))
            return False
        app_slots.keep_trial()
        return True
    finally:
        sys.modules.pop("app_slots", None)

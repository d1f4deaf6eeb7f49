"""The board's LoRa transceiver: the register-level model of the chip its `board` profile names
(sim/devices/sx1276.py or sx1262.py), on the SPI bus and pins of that profile.

Why from the firmware's own table (firmware/radio_board.py): the driver the firmware builds and
the chip the simulator solders on must sit on the same pins, or a wrong pin map in the table
would pass every test. `link` is the chip's antenna: sim.sim_radio.SimRadio on CPython, its
proxy to the host on the MicroPython VM. MicroPython-compatible (mounted into the VM).
"""


def attach_radio(machine, cfg, link, clock, fault=None):
    """Build the model of cfg's board (None for a Modbus-only meter), attach it on `machine`
    (the board's fake module) and return it. fault: a wiring fault to emulate, "absent" (no chip
    on the bus: reads 0xFF), "dead" (an SX1276 whose version register reads 0x00) or
    "busy_stuck" (an SX1262 whose BUSY never falls)."""
    from firmware import config, radio_board

    full = config.defaults(cfg.get("kind", "pole"))
    full.update(cfg)
    if not radio_board.uses_radio(full):
        return None
    p = radio_board.profile(full["board"])
    machine.set_mcu(p["mcu"])
    if fault == "absent":
        return None
    if p["chip"] == "sx1276":
        from sim.devices.sx1276 import SX1276

        pins = {"cs": p["cs"], "reset": p["reset"], "dio0": p["irq"], "dio1": None}
        model = SX1276(machine, pins, link, clock, version=0 if fault == "dead" else 0x12,
                       pa_pin="boost" if p["pa_boost"] else "rfo")
    else:
        from sim.devices.sx1262 import SX1262

        pins = {"cs": p["cs"], "reset": p["reset"], "busy": p["busy"], "dio1": p["irq"]}
        model = SX1262(machine, pins, link, clock, tcxo_mv=p["tcxo_mv"],
                       dio2_rf_switch=p["dio2_rf_switch"], stuck_busy=fault == "busy_stuck")
    machine.spi(p["spi_id"]).attach(p["cs"], model)
    return model

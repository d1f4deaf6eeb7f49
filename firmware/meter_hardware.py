"""Wiring of the streetgrid meter board: its drivers built on whatever `machine` / `esp32` is
given (build_meter); the pole's is firmware/pole_hardware.py, which a meter never loads.

A meter whose ATM90E32 does not answer still boots (meter_error; the committed energy is still
served over Modbus) and tries the chip every step.
"""


class MeterHardware:
    """What MeterApp and the Modbus slave drive: the ATM90E32 (an object even when it did not
    answer at boot: it is tried again every step), the EnergyRegister, the disconnect relay
    Pin, the RS-485 UART and DE Pin (None with interfaces "lorawan"), NVS namespaces, RTC,
    reset, and the radio for the MAC (None with interfaces "modbus"). No methods, as
    firmware.pole_hardware.PoleHardware (and for the same reason)."""

    chip = register = relay = uart = de = None
    nvs = None  # esp32.NVS("lorawan"): MAC counters and session (None: Modbus only)
    app_nvs = None  # esp32.NVS("meter"): settings, relay state, alarm count
    energy_nvs = None  # esp32.NVS("energy"): the EnergyRegister's slots
    modbus_nvs = None  # esp32.NVS("modbus"): address, baud, parity written over Modbus
    rtc = reset = radio = sleep_ms = None
    faults = ()  # build_meter() gives each board its own list


def build_meter(machine, esp32, cfg, radio, sleep_ms):
    from firmware.drivers.atm90e32 import ATM90E32
    from firmware.energy_register import EnergyRegister
    from firmware.nvs_store import NvsStore

    hw = MeterHardware()
    hw.faults = []
    hw.radio = radio
    hw.sleep_ms = sleep_ms
    hw.app_nvs = esp32.NVS("meter")
    if cfg["relay_pin"] is not None:
        # the relay as the network or the load limit last left it (meter_app RELAY_*): a power
        # cut must not reconnect a disconnected customer; closed when never set
        state = NvsStore(hw.app_nvs).load("relay")
        hw.relay = machine.Pin(cfg["relay_pin"], machine.Pin.OUT, value=0 if state in (0, 2) else 1)
    spi = machine.SPI(cfg["spi_id"], 200000, polarity=1, phase=1, sck=machine.Pin(cfg["spi_sck"]),
                      mosi=machine.Pin(cfg["spi_mosi"]), miso=machine.Pin(cfg["spi_miso"]))
    chip_cfg = dict(cfg["calibration"])
    chip_cfg["phases"] = cfg["phases"]
    hw.chip = ATM90E32(spi, machine.Pin(cfg["chip_cs_pin"], machine.Pin.OUT), chip_cfg)
    try:
        hw.chip.configure()
    except Exception as e:  # absent (OSError ENODEV): meter_error, and tried again each step
        hw.faults.append("ATM90E32: %s" % e)
    hw.energy_nvs = esp32.NVS("energy")
    hw.register = EnergyRegister(hw.energy_nvs, step_mwh=cfg["energy_step_wh"] * 1000,
                                 period_ms=cfg["energy_period_s"] * 1000)
    if cfg["interfaces"] != "lorawan":
        hw.uart = machine.UART(cfg["rs485_uart_id"], cfg["modbus_baud"], tx=cfg["rs485_tx"],
                               rx=cfg["rs485_rx"])
        hw.de = machine.Pin(cfg["rs485_de_pin"], machine.Pin.OUT, value=0)
        hw.modbus_nvs = esp32.NVS("modbus")
    if cfg["interfaces"] != "modbus":
        hw.nvs = esp32.NVS("lorawan")
    hw.rtc = machine.RTC()
    hw.reset = machine.reset
    return hw

"""Wiring of the streetgrid pole and meter boards: drivers built on whatever `machine` /
`esp32` is given (build_pole, build_meter).

On the device those are MicroPython's own modules; in the simulator they are per-board fakes
(sim/fakes) with chip models attached at the pins and addresses of the config. Nothing here
keeps state beyond the driver objects.

A sensor that does not answer at boot is left as None and named in `faults` rather than
stopping the boot: the lamp must work without its light sensor (it then stays on, the safe
side) and the report says what is missing. A meter whose ATM90E32 does not answer still boots
(meter_error; the committed energy is still served over Modbus) and tries the chip every step.
"""



class PoleHardware:
    """What PoleApp drives: dimmer, door, light / climate / tilt sensors (or None), meter and
    energy accumulator, NVS namespaces, RTC, reset, and the radio for the MAC.

    No methods, on purpose: build_pole() fills an instance, and once the device is built
    firmware.main drops this module (a method would keep the builders' module alive)."""

    dimmer = door = light = climate = accel = meter = energy = None
    nvs = None  # esp32.NVS("lorawan"): MAC counters and session
    app_nvs = None  # esp32.NVS("pole"): energy total and settings
    rtc = reset = radio = sleep_ms = None
    faults = ()  # build_pole() gives each board its own list


def _try(hw, name, fn):
    try:
        return fn()
    except Exception as e:  # absent chip (OSError ENODEV), wrong chip, bad checksum
        hw.faults.append("%s: %s" % (name, e))
        return None


def build_pole(machine, esp32, cfg, radio, sleep_ms):
    # the pole's drivers are imported here, not at module level: a meter never loads them
    from firmware.drivers.bl0942 import BL0942, EnergyAccumulator
    from firmware.drivers.dimmer import Dimmer
    from firmware.drivers.door import Door
    from firmware.drivers.lis3dh import LIS3DH
    from firmware.drivers.sht3x import SHT3x
    from firmware.drivers.veml7700 import GAIN_1, VEML7700

    hw = PoleHardware()
    hw.faults = []
    hw.energy = EnergyAccumulator()
    hw.radio = radio
    hw.sleep_ms = sleep_ms
    relay = None
    if cfg["relay_pin"] is not None:
        relay = machine.Pin(cfg["relay_pin"], machine.Pin.OUT, value=0)
    pwm = machine.PWM(machine.Pin(cfg["dimmer_pin"], machine.Pin.OUT), freq=cfg["dimmer_freq"],
                      duty_u16=65535 if cfg["dimmer_invert"] else 0)
    hw.dimmer = Dimmer(pwm, relay, cfg["dimmer_invert"])
    door_pin = machine.Pin(cfg["door_pin"], machine.Pin.IN, machine.Pin.PULL_UP)
    hw.door = Door(door_pin, cfg["door_debounce_ms"], open_level=1)
    i2c = machine.I2C(cfg["i2c_id"], scl=machine.Pin(cfg["i2c_scl"]), sda=machine.Pin(cfg["i2c_sda"]),
                      freq=400000)

    def light():
        s = VEML7700(i2c, cfg["veml7700_addr"], sleep_ms)
        s.configure(GAIN_1, 100)  # 0.058 lx/count: photocell thresholds of a few lux resolve
        return s

    hw.light = _try(hw, "VEML7700", light)
    hw.climate = _try(hw, "SHT3x", lambda: SHT3x(i2c, cfg["sht3x_addr"], sleep_ms))
    hw.accel = _try(hw, "LIS3DH", lambda: LIS3DH(i2c, cfg["lis3dh_addr"]))
    uart = machine.UART(cfg["uart_id"], 4800, tx=cfg["uart_tx"], rx=cfg["uart_rx"], timeout=200)

    def meter():
        m = BL0942(uart)
        m.configure()
        return m

    hw.meter = _try(hw, "BL0942", meter)
    if hw.meter is None:
        hw.meter = BL0942(uart)  # keep trying at each sample; the chip may come up later
    hw.nvs = esp32.NVS("lorawan")
    hw.app_nvs = esp32.NVS("pole")
    hw.rtc = machine.RTC()
    hw.reset = machine.reset
    return hw


class MeterHardware:
    """What MeterApp and the Modbus slave drive: the ATM90E32 (an object even when it did not
    answer at boot: it is tried again every step), the EnergyRegister, the disconnect relay
    Pin, the RS-485 UART and DE Pin (None with interfaces "lorawan"), NVS namespaces, RTC,
    reset, and the radio for the MAC (None with interfaces "modbus"). No methods, as
    PoleHardware."""

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
    _try(hw, "ATM90E32", hw.chip.configure)  # absent: meter_error, and tried again each step
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

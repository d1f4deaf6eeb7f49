"""Wiring of the streetgrid pole board: its drivers built on whatever `machine` / `esp32` is
given (build_pole). A meter never loads this module, nor the meter wiring a pole
(firmware/meter_hardware.py): each name in here would be one more qstr on the other's heap.

On the device those are MicroPython's own modules; in the simulator they are per-board fakes
(sim/fakes) with chip models attached at the pins and addresses of the config. Nothing here
keeps state beyond the driver objects.

A sensor that does not answer at boot is left as None and named in `faults` rather than
stopping the boot: the lamp must work without its light sensor (it then stays on, the safe
side) and the report says what is missing.
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

"""The pole's own configuration keys (firmware.config adds the common ones) and their check
beyond type and range. Apart from firmware/config.py so that a meter never interns these names
(see there); dropped after boot with it.
"""

from firmware.config import ConfigError

DEFAULTS = {
    "sample_interval_s": 60,
    "default_level": 100,  # lamp level (%) at boot and when nothing else decides
    "default_fade_ms": 0,
    "photocell_on_lux": 20,  # lamp on when darker than this (dusk)
    "photocell_off_lux": 50,  # lamp off when brighter than this (dawn)
    "day_burner_lux": 500,  # "bright daylight" for the day-burner alarm
    "tilt_threshold_cdeg": 1000,  # 10.00 deg
    "lamp_fail_ma": 30,  # a lamp commanded on drawing less than this has failed
    "lamp_settle_s": 30,  # a lit lamp settles this long after a change: alarms judge and frames report it only then
    "lamp_rated_w": 60,  # the luminaire's power at 100 %; 0 = no power alarms
    "power_low_pct": 50,  # power_low under this % of rated x level (half its LEDs dark)
    "power_high_pct": 130,  # power_high over this % of rated x level
    "latitude": None,  # degrees; with longitude, enables the solar calculation
    "longitude": None,
    # board wiring
    "i2c_id": 0,
    "i2c_scl": 22,
    "i2c_sda": 21,
    "uart_id": 2,
    "uart_tx": 17,
    "uart_rx": 16,
    "dimmer_pin": 25,
    "dimmer_freq": 1000,
    "dimmer_invert": False,
    "door_pin": 27,
    "door_debounce_ms": 50,
    "veml7700_addr": 0x10,
    "sht3x_addr": 0x44,
    "lis3dh_addr": 0x18,
}

RANGES = {
    "sample_interval_s": (1, 86400), "default_level": (0, 100), "photocell_on_lux": (0, 100000),
    "photocell_off_lux": (0, 100000), "lamp_rated_w": (0, 100000), "power_low_pct": (0, 100),
    "power_high_pct": (100, 1000), "latitude": (-90, 90), "longitude": (-180, 180),
}
OPTIONAL = ("latitude", "longitude")  # null: no position, no solar calculation
BOOLS = ("dimmer_invert",)
FLOATS = ("latitude", "longitude")


def check(cfg):
    """What firmware.config's type and range checks cannot see."""
    if cfg["photocell_on_lux"] > cfg["photocell_off_lux"]:
        raise ConfigError("config photocell_on_lux must not exceed photocell_off_lux "
                          "(hysteresis)")

"""The meter's own configuration keys (firmware.config adds the common ones), the ATM90E32
calibration keys, and their checks. Apart from firmware/config.py so that a pole never interns
these names (see there); dropped after boot with it.
"""

from firmware.config import ConfigError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x

DEFAULTS = {
    "interfaces": "both",  # "modbus" (RS-485 only) | "lorawan" (radio only) | "both"
    "phases": 3,  # 1 | 3
    "calibration": {},  # ATM90E32 calibration from commissioning (keys: _CALIBRATION_KEYS)
    "energy_step_wh": 50,  # EnergyRegister: commit when a total is this far ahead ...
    "energy_period_s": 3600,  # ... or energy waited this long uncommitted
    "load_limit_w": 0,  # the relay opens above this net import; 0 = no limit
    "modbus_address": 1,  # provisioned; a Modbus write (kept in NVS) wins afterwards
    "modbus_baud": 9600,
    "serial_number": 0,  # 0 = the low 32 bits of dev_eui
    # board wiring
    "spi_id": 2,
    "spi_sck": 18,
    "spi_mosi": 23,
    "spi_miso": 19,
    "chip_cs_pin": 5,
    "rs485_uart_id": 1,
    "rs485_tx": 17,
    "rs485_rx": 16,
    "rs485_de_pin": 4,
}

_CALIBRATION_KEYS = const(("meter_constant", "ugain", "igain", "uoffset", "ioffset", "pqgain", "mmode0",
                    "mmode1", "max_power_w"))
_INTERFACES = const(("both", "modbus", "lorawan"))
RANGES = {
    "phases": (1, 3), "energy_step_wh": (1, 1000000), "energy_period_s": (1, 86400),
    "load_limit_w": (0, 65534), "modbus_address": (1, 247), "serial_number": (0, 0xFFFFFFFF),
    "spi_id": (1, 2), "rs485_uart_id": (0, 2),
}
OPTIONAL = BOOLS = FLOATS = ()


def check(cfg):
    """What firmware.config's type and range checks cannot see: interfaces, phases, baud, and
    the calibration."""
    triples = ("ugain", "igain", "uoffset", "ioffset", "pqgain")  # one value per phase
    if cfg["interfaces"] not in _INTERFACES:
        raise ConfigError("config interfaces: want one of %s, got %r"
                          % (", ".join(_INTERFACES), cfg["interfaces"]))
    if cfg["phases"] not in (1, 3):
        raise ConfigError("config phases: want 1 or 3, got %r" % (cfg["phases"],))
    from protocol.modbus.line import BAUD_RATES  # not the map: a radio-only meter never loads it

    if cfg["modbus_baud"] not in BAUD_RATES:
        raise ConfigError("config modbus_baud: %r is not one of %s" % (
            cfg["modbus_baud"], ", ".join("%d" % b for b in BAUD_RATES)))
    cal = cfg["calibration"]
    unknown = [k for k in cal if k not in _CALIBRATION_KEYS]
    if unknown:
        raise ConfigError("config calibration: unknown key(s) %s (known: %s)"
                          % (", ".join(sorted(unknown)), ", ".join(_CALIBRATION_KEYS)))
    for k in cal:
        v = cal[k]
        if k in triples:
            ok = isinstance(v, list) and len(v) == 3 and all(_is_int(x) and -32768 <= x <= 65535
                                                               for x in v)
            if not ok:
                raise ConfigError("config calibration %s: want 3 integers (phases A, B, C), got %r"
                                  % (k, v))
        elif not _is_int(v) or not 0 <= v <= (450000000 if k == "meter_constant" else 0xFFFF
                                              if k.startswith("mmode") else 10000000):
            raise ConfigError("config calibration %s: want a non-negative integer in range, got %r"
                              % (k, v))
    if cal.get("meter_constant") == 0 or cal.get("max_power_w") == 0:
        raise ConfigError("config calibration: meter_constant and max_power_w must be positive")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)

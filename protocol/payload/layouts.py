"""Payload v1 layouts: the one table from which the Python codec, the TS013 JavaScript codecs,
the SenML mapping and the docs are all derived, so the device and every decoder agree byte for
byte.

Each layout is one fPort. Byte 0 of every frame is the codec version (1) and is not listed.
Fields follow in order, little endian like the rest of LoRaWAN. A field is a dict:

  name   SenML record name and key in decoded dicts
  type   u8 u16 u24 u32 i8 i16 i24 i32
  unit   SenML unit (None for counts-less flags, enums, sequence numbers)
  lwm2m  uCIFI / IPSO object/instance/resource path with the same meaning and unit, if any
  mul, div, add   engineering value = raw * mul / div + add   (defaults 1, 1, 0)
  min, max        engineering range accepted by the encoder (default: what the raw type holds)
  na     raw value meaning "not available" (uplinks) or "leave unchanged" (downlinks); decodes
         to None, and a missing or None input encodes to it
  wrap   a cumulative counter sent modulo 2^bits: the encoder reduces, never clamps
  bits   bitmap: [bit, name, lwm2m]; decoded as the raw int plus "<name>/<bit name>" booleans
  enum   list of names indexed by the raw code; decoded as the name
  float  "e4m12": u16 = 4-bit exponent e | 12-bit mantissa m, raw value m << e (log-ish range)
  default  value used when an encoder input omits the field (downlink fields without default
           or na are required)

A layout with "repeat" ends with 0..max entries of the listed fields (the schedule).
"""

VERSION = 1

# Pole status, sent in every report and alarm: the state a dashboard shows.
POLE_STATUS = [
    [0, "lamp_on", None],
    [1, "override", "3416/0/54"],
    [2, "dark", "3419/0/3"],
    [3, "door_open", None],
    [4, "tilted", "3429/0/6"],
    [5, "lamp_failure", "3416/0/5"],
    [6, "day_burner", "3416/0/10"],
    [7, "alarm", None],
]

POLE_ALARMS = [
    [0, "lamp_failure", "3416/0/5"],
    [1, "gear_failure", "3416/0/7"],
    [2, "relay_failure", "3416/0/9"],
    [3, "day_burner", "3416/0/10"],
    [4, "cycling", "3416/0/11"],
    [5, "gear_comm_failure", "3416/0/12"],
    [6, "thermal_derating", "3416/0/22"],
    [7, "door_open", None],
    [8, "tilted", "3429/0/6"],
    [9, "supply_loss", None],
    [10, "voltage_low", "3418/0/21"],
    [11, "voltage_high", "3418/0/23"],
    [12, "power_low", "3418/0/12"],
    [13, "power_high", "3418/0/15"],
    [14, "light_sensor_failure", None],
    [15, "meter_failure", None],
]

METER_STATUS = [
    [0, "relay_closed", None],
    [1, "cover_open", None],
    [2, "magnetic_tamper", None],
    [3, "voltage_low", "3421/0/3"],
    [4, "voltage_high", "3421/0/5"],
    [5, "load_limited", None],
    [6, "meter_error", None],
    [7, "alarm", None],
]

METER_ALARMS = [
    [0, "power_failure", "3421/0/53"],
    [1, "voltage_low", "3421/0/3"],
    [2, "voltage_high", "3421/0/5"],
    [3, "current_high", "3421/0/10"],
    [4, "cover_open", None],
    [5, "magnetic_tamper", None],
    [6, "reverse_energy", None],
    [7, "current_imbalance", None],
    [8, "relay_failure", None],
    [9, "load_limit", None],
    [10, "meter_error", None],
    [11, "counter_reset", None],
    [12, "pf_low", "3421/0/15"],
]

# machine.reset_cause() of MicroPython (ports/esp32), indexed by its code
RESET_CAUSES = ["unknown", "power_on", "hard", "watchdog", "deep_sleep", "soft"]

BOOT_EVENTS = [
    [0, "safe_mode", None],
]

ACK_RESULTS = ["ok", "unknown_port", "bad_version", "bad_length", "bad_value", "failed"]

# Shared field definitions (the same name means the same quantity on every fPort of a kind).
_TEMPERATURE = {"name": "temperature", "type": "u8", "unit": "Cel", "lwm2m": "3303/0/5700",
                "div": 2, "add": -40, "na": 255}
_DIM_LEVEL = {"name": "dim_level", "type": "u8", "unit": "/100", "lwm2m": "3416/0/3", "max": 100}
_LAMP_POWER = {"name": "lamp_power", "type": "u16", "unit": "W", "lwm2m": "3418/0/4", "div": 10}
_ALARM_COUNT = {"name": "alarm_count", "type": "u16", "unit": "count", "wrap": True,
                "doc": "alarm transitions (raised or cleared) since commissioning"}
_METER_VOLTAGE = {"name": "voltage", "type": "u16", "unit": "V", "lwm2m": "3421/0/1", "div": 10,
                  "na": 65535}
_ACTIVE_POWER = {"name": "active_power", "type": "i16", "unit": "W", "lwm2m": "3421/0/23",
                 "doc": "net active power, positive = import"}
_ACK = [
    {"name": "port", "type": "u8", "doc": "fPort of the downlink acknowledged"},
    {"name": "seq", "type": "u8", "doc": "sequence number of that downlink"},
    {"name": "result", "type": "u8", "enum": ACK_RESULTS},
]
# The boot frame: sent first after a boot that was not a plain power-on, or after a safe mode
# not reported yet (firmware/boot_health.py); the same fields on both kinds.
_BOOT = [
    {"name": "reset_cause", "type": "u8", "enum": RESET_CAUSES,
     "doc": "what reset the board (soft: machine.reset(), after a crash, a reboot command or a "
            "safe mode)"},
    {"name": "failed_boots", "type": "u8", "unit": "count",
     "doc": "boots in a row before this one that crashed, hung until the watchdog or failed "
            "their self-test"},
    {"name": "safe_modes", "type": "u16", "unit": "count", "wrap": True,
     "doc": "safe modes since commissioning"},
    {"name": "events", "type": "u8", "bits": BOOT_EVENTS,
     "doc": "safe_mode: a safe mode happened that no acknowledged boot frame reported yet"},
]
_SEQ = {"name": "seq", "type": "u8", "default": 0, "doc": "echoed by the ack"}
_FADE = {"name": "fade", "type": "u16", "unit": "s", "div": 10, "default": 0}
_LUX = {"type": "u16", "unit": "lx", "float": "e4m12", "div": 10, "na": 65535}

LAYOUTS = [
    # ---- pole uplinks -------------------------------------------------------------------
    {"port": 10, "kind": "pole", "dir": "up", "name": "report", "fields": [
        {"name": "status", "type": "u8", "bits": POLE_STATUS},
        _DIM_LEVEL,
        _LAMP_POWER,
        {"name": "lamp_energy", "type": "u24", "unit": "Wh", "lwm2m": "3418/0/6", "wrap": True,
         "doc": "cumulative, modulo 2^24"},
        dict(_LUX, name="ambient_light", lwm2m="3301/0/5700"),
        _TEMPERATURE,
        {"name": "humidity", "type": "u8", "unit": "%RH", "lwm2m": "3304/0/5700", "div": 2,
         "max": 100, "na": 255},
    ]},
    {"port": 11, "kind": "pole", "dir": "up", "name": "alarm", "fields": [
        {"name": "alarms", "type": "u16", "bits": POLE_ALARMS},
        _ALARM_COUNT,
        {"name": "status", "type": "u8", "bits": POLE_STATUS},
        _DIM_LEVEL,
        {"name": "tilt_angle", "type": "u8", "unit": "rad", "lwm2m": "3429/0/1", "div": 100,
         "na": 255},
        {"name": "supply_voltage", "type": "u16", "unit": "V", "lwm2m": "3418/0/1", "div": 10},
        {"name": "lamp_current", "type": "u16", "unit": "A", "lwm2m": "3418/0/2", "div": 1000},
        _LAMP_POWER,
        _TEMPERATURE,
    ]},
    {"port": 12, "kind": "pole", "dir": "up", "name": "ack", "fields": _ACK},
    {"port": 13, "kind": "pole", "dir": "up", "name": "boot", "fields": _BOOT},
    # ---- meter uplinks ------------------------------------------------------------------
    {"port": 20, "kind": "meter", "dir": "up", "name": "report", "fields": [
        {"name": "status", "type": "u8", "bits": METER_STATUS},
        {"name": "import_energy", "type": "u32", "unit": "Wh", "lwm2m": "3421/0/25", "wrap": True,
         "doc": "cumulative, modulo 2^32"},
        {"name": "export_energy", "type": "u32", "unit": "Wh", "lwm2m": "3421/0/26", "wrap": True,
         "doc": "cumulative, modulo 2^32"},
        _ACTIVE_POWER,
        _METER_VOLTAGE,
        {"name": "power_factor", "type": "i8", "unit": "/", "lwm2m": "3421/0/13", "div": 100,
         "min": -1, "max": 1, "na": -128},
        {"name": "frequency", "type": "u8", "unit": "Hz", "lwm2m": "3421/0/11", "div": 10,
         "add": 40, "na": 255},
    ]},
    {"port": 21, "kind": "meter", "dir": "up", "name": "alarm", "fields": [
        {"name": "alarms", "type": "u16", "bits": METER_ALARMS},
        _ALARM_COUNT,
        {"name": "status", "type": "u8", "bits": METER_STATUS},
        _METER_VOLTAGE,
        dict(_METER_VOLTAGE, name="voltage_min", lwm2m=None, doc="lowest since the last report"),
        dict(_METER_VOLTAGE, name="voltage_max", lwm2m=None, doc="highest since the last report"),
        {"name": "current", "type": "u16", "unit": "A", "lwm2m": "3421/0/6", "div": 100,
         "na": 65535},
        _ACTIVE_POWER,
    ]},
    {"port": 22, "kind": "meter", "dir": "up", "name": "ack", "fields": _ACK},
    {"port": 23, "kind": "meter", "dir": "up", "name": "boot", "fields": _BOOT},
    # ---- pole downlinks -----------------------------------------------------------------
    {"port": 50, "kind": "pole", "dir": "down", "name": "dim", "fields": [
        _SEQ,
        {"name": "level", "type": "u8", "unit": "/100", "lwm2m": "3416/0/1", "max": 100},
        _FADE,
    ]},
    {"port": 51, "kind": "pole", "dir": "down", "name": "schedule", "fields": [_SEQ],
     "repeat": {"name": "entries", "max": 12, "fields": [
         {"name": "anchor", "type": "u8", "enum": ["fixed", "sunset", "sunrise"]},
         {"name": "minute", "type": "i16", "unit": "min", "min": -1439, "max": 1439,
          "doc": "minute of the day (fixed) or offset from sunset / sunrise"},
         {"name": "level", "type": "u8", "unit": "/100", "max": 100},
     ]}},
    {"port": 52, "kind": "pole", "dir": "down", "name": "override", "fields": [
        _SEQ,
        {"name": "level", "type": "u8", "unit": "/100", "lwm2m": "3416/0/1", "max": 100},
        {"name": "duration", "type": "u16", "unit": "min", "na": 65535, "required": True,
         "doc": "0 ends the override now; None holds it until cancelled"},
        _FADE,
    ]},
    {"port": 53, "kind": "pole", "dir": "down", "name": "pole_config", "fields": [
        _SEQ,
        {"name": "default_level", "type": "u8", "unit": "/100", "lwm2m": "3416/0/4", "max": 100,
         "na": 255},
        dict(_LUX, name="photocell_on", lwm2m="3419/0/1"),
        dict(_LUX, name="photocell_off", lwm2m="3419/0/2"),
        {"name": "tilt_threshold", "type": "u8", "unit": "rad", "lwm2m": "3429/0/5", "div": 100,
         "na": 255},
        {"name": "latitude", "type": "i16", "unit": "lat", "div": 100, "min": -90, "max": 90,
         "na": -32768},
        {"name": "longitude", "type": "i16", "unit": "lon", "div": 100, "min": -180, "max": 180,
         "na": -32768},
        {"name": "default_fade", "type": "u16", "unit": "s", "lwm2m": "3416/0/49", "div": 10,
         "na": 65535},
    ]},
    # ---- downlinks common to both kinds -------------------------------------------------
    {"port": 60, "kind": "any", "dir": "down", "name": "reboot", "fields": [
        _SEQ,
        {"name": "delay", "type": "u8", "unit": "s", "default": 0,
         "doc": "wait after sending the ack"},
    ]},
    {"port": 61, "kind": "any", "dir": "down", "name": "config", "fields": [
        _SEQ,
        {"name": "report_interval", "type": "u16", "unit": "s", "na": 65535,
         "doc": "0 stops periodic reports"},
        {"name": "alarm_repeat", "type": "u16", "unit": "s", "na": 65535,
         "doc": "resend interval while an alarm is active and unacknowledged; 0 never"},
        {"name": "utc_offset", "type": "i8", "unit": "min", "mul": 15, "min": -720, "max": 840,
         "na": -128, "doc": "local time offset for fixed schedule times"},
    ]},
    # ---- meter downlinks ----------------------------------------------------------------
    {"port": 70, "kind": "meter", "dir": "down", "name": "relay", "fields": [
        _SEQ,
        {"name": "action", "type": "u8", "enum": ["open", "close"]},
    ]},
    {"port": 71, "kind": "meter", "dir": "down", "name": "meter_config", "fields": [
        _SEQ,
        {"name": "voltage_low", "type": "u16", "unit": "V", "lwm2m": "3421/0/41", "div": 10,
         "na": 65535},
        {"name": "voltage_high", "type": "u16", "unit": "V", "lwm2m": "3421/0/46", "div": 10,
         "na": 65535},
        {"name": "load_limit", "type": "u16", "unit": "W", "na": 65535,
         "doc": "the relay opens above it; 0 disables"},
    ]},
]

"""Device configuration: DEFAULTS, overridden by /config.json, validated once at boot.

Every key the firmware reads is listed in DEFAULTS, so a typo in config.json is an error at
boot (with the key named), not a silently ignored setting. merge(overrides) is what both
load() and main.create() use, so the simulator may pass a partial dict.

Each `kind` has its own keys: COMMON (LoRaWAN identity and radio, reports, alarms, supply
thresholds) plus POLE or METER ones, so a pole's config is what it always was and a meter's
needs no pole pins. DEFAULTS is the pole's (the kind a config without "kind" is);
defaults(kind) gives either. A key of the other kind is refused like a typo.

Pin and bus numbers are the streetgrid boards' (the pole board per the spine contract, the
meter board per issue #4's contract); the simulator attaches its chip models at whatever the
config says. Thresholds that the network can change later (pole_config, meter_config, config
downlinks) start from here.
"""

COMMON = {
    "kind": "pole",
    # the board (firmware/radio_board.py): a name of radio_board.BOARDS or a dict of custom pins
    "board": "streetgrid-sx1276",
    # LoRaWAN identity and radio
    "dev_eui": "0000000000000000",
    "join_eui": "0000000000000000",
    "app_key": "00000000000000000000000000000000",
    "region": "EU868",
    "data_rate": 5,
    "tx_power_dbm": 14,
    "channels": None,  # None: the region's default channels; else a list of Hz
    "confirmed_retries": 8,  # transmissions of a confirmed uplink before it is reported failed
    "uplink_queue": 4,  # bounded queue of waiting uplinks (each kind)
    "rejoin_after_failures": 4,  # consecutive failed confirmed uplinks; 0 = never rejoin
    "join_backoff_min_s": 15,
    "join_backoff_max_s": 3600,
    "join_jitter_s": 10,  # random delay before the first join (a city-wide power cut)
    "first_uplink_jitter_s": 60,  # random delay of the first uplink after a join / resumed session
    "keep_session": True,  # resume the LoRaWAN session from NVS after a reboot
    "fcnt_step": 256,  # FCnt values reserved per flash write
    "devnonce_step": 16,
    # application
    "report_interval_s": 900,
    "report_jitter_s": 60,  # each report interval +- this (at most half of it); 0 = none
    "confirmed_report_every": 24,  # every Nth report confirmed (a lost session shows up); 0 = never
    "alarm_repeat_s": 3600,
    "utc_offset_min": 0,
    "voltage_low_v": 207,  # supply alarms: 230 V -10 % / +10 % (EN 50160)
    "voltage_high_v": 253,
    "relay_pin": 26,  # pole: the lamp relay (None: none); meter: the disconnect relay (1 = closed)
}

POLE = {
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

METER = {
    "interfaces": "both",  # "modbus" (RS-485 only) | "lorawan" (radio only) | "both"
    "phases": 3,  # 1 | 3
    "calibration": {},  # ATM90E32 calibration from commissioning (keys: CALIBRATION_KEYS)
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

CALIBRATION_KEYS = ("meter_constant", "ugain", "igain", "uoffset", "ioffset", "pqgain", "mmode0",
                    "mmode1", "max_power_w")
INTERFACES = ("both", "modbus", "lorawan")


def defaults(kind="pole"):
    """The default config of a device kind ("pole" | "meter"), as a new dict."""
    d = dict(COMMON)
    if kind == "meter":
        d.update(METER)
    elif kind == "pole":
        d.update(POLE)
    else:
        raise ConfigError("config kind: want \"pole\" or \"meter\", got %r" % (kind,))
    d["kind"] = kind
    return d

class ConfigError(ValueError):
    pass


DEFAULTS = defaults("pole")


def _check(cfg):
    # Tables inside the function: the config is checked once per boot and the module is then
    # dropped (main._forget); locals leave no names behind in RAM.
    hex_len = {"dev_eui": 16, "join_eui": 16, "app_key": 32}
    optional = ("channels", "relay_pin", "latitude", "longitude")
    bools = ("keep_session", "dimmer_invert")
    floats = ("latitude", "longitude")
    ranges = {
        "data_rate": (0, 15), "tx_power_dbm": (-10, 30), "confirmed_retries": (1, 15),
        "uplink_queue": (1, 32), "confirmed_report_every": (0, 65535),
        "rejoin_after_failures": (0, 1000), "report_interval_s": (0, 65535),
        "report_jitter_s": (0, 32767), "first_uplink_jitter_s": (0, 3600),
        "sample_interval_s": (1, 86400), "alarm_repeat_s": (0, 65535), "utc_offset_min": (-720, 840),
        "default_level": (0, 100), "photocell_on_lux": (0, 100000), "photocell_off_lux": (0, 100000),
        "voltage_low_v": (0, 1000), "voltage_high_v": (1, 1000), "lamp_rated_w": (0, 100000),
        "power_low_pct": (0, 100), "power_high_pct": (100, 1000),
        "fcnt_step": (1, 65536), "devnonce_step": (1, 1024), "latitude": (-90, 90),
        "longitude": (-180, 180),
        "phases": (1, 3), "energy_step_wh": (1, 1000000), "energy_period_s": (1, 86400),
        "load_limit_w": (0, 65534), "modbus_address": (1, 247), "serial_number": (0, 0xFFFFFFFF),
        "spi_id": (1, 2), "rs485_uart_id": (0, 2),
    }
    kind = cfg["kind"]
    base = defaults(kind)
    for key in base:
        v = cfg[key]
        if (v is None and key in optional) or key == "board":  # board: radio_board.check()
            continue
        want = type(base[key])
        if key in hex_len:
            ok = isinstance(v, str) and len(v) == hex_len[key]
            if ok:
                try:
                    int(v, 16)
                except ValueError:
                    ok = False
            if not ok:
                raise ConfigError("config %s: want %d hex characters, got %r" % (key, hex_len[key], v))
        elif key == "channels":
            if not isinstance(v, list) or not v or not all(isinstance(f, int) for f in v):
                raise ConfigError("config channels: want null or a list of frequencies in Hz")
        elif key in bools:
            if v is not True and v is not False:
                raise ConfigError("config %s: want true or false, got %r" % (key, v))
        elif key in floats:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError("config %s: want a number, got %r" % (key, v))
        elif want is int or key in optional:
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError("config %s: want an integer, got %r" % (key, v))
        elif not isinstance(v, want):
            raise ConfigError("config %s: want %s, got %r" % (key, want.__name__, v))
        r = ranges.get(key)
        if r is not None and not r[0] <= v <= r[1]:
            raise ConfigError("config %s: %r outside %d..%d" % (key, v, r[0], r[1]))
    from protocol.lorawan import region as _region

    key = "region"
    try:
        reg = _region.region(cfg["region"])
        key = "data_rate"
        reg.data_rate(cfg["data_rate"])
    except _region.RegionError as e:
        raise ConfigError("config %s: %s" % (key, e))
    for f in cfg["channels"] or ():
        if not reg.channel_ok(f):
            raise ConfigError("config channels: %d Hz is not a %s channel" % (f, reg.name))
    if cfg["voltage_low_v"] >= cfg["voltage_high_v"]:
        raise ConfigError("config voltage_low_v must be below voltage_high_v")
    from firmware import radio_board

    radio_board.check(cfg)
    if kind == "pole":
        if cfg["photocell_on_lux"] > cfg["photocell_off_lux"]:
            raise ConfigError("config photocell_on_lux must not exceed photocell_off_lux "
                              "(hysteresis)")
    else:
        _check_meter(cfg)


def _check_meter(cfg):
    triples = ("ugain", "igain", "uoffset", "ioffset", "pqgain")  # one value per phase
    if cfg["interfaces"] not in INTERFACES:
        raise ConfigError("config interfaces: want one of %s, got %r"
                          % (", ".join(INTERFACES), cfg["interfaces"]))
    if cfg["phases"] not in (1, 3):
        raise ConfigError("config phases: want 1 or 3, got %r" % (cfg["phases"],))
    from protocol.modbus.line import BAUD_RATES  # not the map: a radio-only meter never loads it

    if cfg["modbus_baud"] not in BAUD_RATES:
        raise ConfigError("config modbus_baud: %r is not one of %s" % (
            cfg["modbus_baud"], ", ".join("%d" % b for b in BAUD_RATES)))
    cal = cfg["calibration"]
    unknown = [k for k in cal if k not in CALIBRATION_KEYS]
    if unknown:
        raise ConfigError("config calibration: unknown key(s) %s (known: %s)"
                          % (", ".join(sorted(unknown)), ", ".join(CALIBRATION_KEYS)))
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


def merge(overrides=None):
    """The defaults of overrides' kind (pole when not given) updated with overrides (unknown
    keys rejected), validated -> new dict."""
    kind = (overrides or {}).get("kind", "pole")
    cfg = defaults(kind)
    if overrides:
        unknown = [k for k in overrides if k not in cfg]
        if unknown:
            raise ConfigError("config: unknown key(s) %s for kind %s" % (", ".join(sorted(unknown)),
                                                                          kind))
        cfg.update(overrides)
    _check(cfg)
    return cfg


def load(path="/config.json"):
    """merge() of the JSON object in path; a missing file gives DEFAULTS (the lamp still works:
    boot-safe level and photocell, no network until provisioned)."""
    import json

    try:
        f = open(path)
    except OSError:
        return merge(None)
    try:
        try:
            data = json.load(f)
        except ValueError as e:
            raise ConfigError("config %s: not valid JSON (%s)" % (path, e))
    finally:
        f.close()
    if not isinstance(data, dict):
        raise ConfigError("config %s: want a JSON object" % path)
    return merge(data)

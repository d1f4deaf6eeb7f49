"""Device configuration: the defaults of a kind, overridden by /config.json, validated once at
boot.

Every key the firmware reads has a default (defaults(kind)), so a typo in config.json is an error at
boot (with the key named), not a silently ignored setting. merge(overrides) is what both
load() and main.create() use, so the simulator may pass a partial dict.

Each `kind` has its own keys: COMMON (LoRaWAN identity and radio, reports, alarms, supply
thresholds) plus the kind's, in firmware/pole_config.py or firmware/meter_config.py (with
their own checks), so a pole's config is what it always was and a meter's needs no pole pins.
Apart because every short key is a qstr, interned for good once its module is loaded: a meter
would keep the pole's pin names in RAM (and a pole the meter's). A config without "kind" is a
pole's. A key of the other kind is
refused like a typo.

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

def defaults(kind="pole"):
    """The default config of a device kind ("pole" | "meter"), as a new dict."""
    if kind != "pole" and kind != "meter":
        raise ConfigError("config kind: want \"pole\" or \"meter\", got %r" % (kind,))
    d = dict(COMMON)
    d.update(_kind_rules(kind).DEFAULTS)
    d["kind"] = kind
    return d


def _kind_rules(kind):
    """firmware.pole_config or firmware.meter_config: imported by a name built here, so that
    neither name is a string of this module (one qstr each, for good, on the other device)."""
    name = "firmware.%s_config" % kind
    __import__(name)
    import sys

    return sys.modules[name]


class ConfigError(ValueError):
    pass


def _check(cfg):
    # Tables inside the function: the config is checked once per boot and the module is then
    # dropped (main.unload); locals leave no names behind in RAM.
    hex_len = {"dev_eui": 16, "join_eui": 16, "app_key": 32}
    ranges = {
        "data_rate": (0, 15), "tx_power_dbm": (-10, 30), "confirmed_retries": (1, 15),
        "uplink_queue": (1, 32), "confirmed_report_every": (0, 65535),
        "rejoin_after_failures": (0, 1000), "report_interval_s": (0, 65535),
        "report_jitter_s": (0, 32767), "first_uplink_jitter_s": (0, 3600),
        "alarm_repeat_s": (0, 65535), "utc_offset_min": (-720, 840),
        "voltage_low_v": (0, 1000), "voltage_high_v": (1, 1000),
        "fcnt_step": (1, 65536), "devnonce_step": (1, 1024),
    }
    own = _kind_rules(cfg["kind"])
    ranges.update(own.RANGES)
    optional = ("channels", "relay_pin") + own.OPTIONAL  # may be null
    bools = ("keep_session",) + own.BOOLS
    floats = own.FLOATS
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
    own.check(cfg)


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
    """merge() of the JSON object in path; a missing file gives a pole's defaults (the lamp still works:
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

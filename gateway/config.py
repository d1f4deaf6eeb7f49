"""The gateway's TOML configuration file, validated before anything starts.

Format (stdlib ``tomllib``; every key but ``gateway.id``, ``gateway.site`` and
``gateway.lorawan.registry`` has the default shown)::

    [gateway]
    id          = "gw-1"            # MQTT topic part and batch gateway_id
    site        = "block-a"         # MQTT topic part
    region      = "EU868"           # "EU868" | "KR920"
    net_id      = 0x000013          # 24-bit NetID (DevAddr prefix: net_id & 0x7F)
    data_dir    = "var/<id>"        # sessions.db, queue.db, stats.json
    registry    = "devices.toml"    # device registry (gateway/lorawan/registry.py)
    time_source = "forwarder"       # record time: the best copy's rxpk "time", else the
                                    # gateway clock; "gateway": always the gateway clock
    [udp]
    host = "127.0.0.1"              # packet-forwarder (GWMP) socket; port 0 = any free port
    port = 1700
    rcvbuf_bytes = 4194304          # UDP receive buffer asked for (capped by net.core.rmem_max)
    [dedup]
    window_ms = 200                 # how long copies of one frame are collected
    [downlink]
    rx1_margin_ms = 200             # send in RX2 when less than this is left before RX1
    [mqtt]
    url = "mqtt://127.0.0.1:1883"   # mqtt://host[:port], or mqtts://host[:port] for TLS (8883)
    ca_file = ""                    # mqtts: CA bundle the broker's certificate must chain to
                                    # ("" = the system's CAs)
    cert_file = ""                  # mqtts: client certificate and key (mTLS), both or neither
    key_file = ""
    username = ""                   # broker credentials; the password is read from
    password_file = ""              # password_file (first line), or given as password = "..."
    protocol = "3.1.1"              # "3.1.1" | "5" (MQTT 5: refusals are reported per publish)
    topic_prefix = "streetgrid/"
    client_id = "streetgrid-<id>"   # persistent session id (QoS 1)
    max_batch_bytes = 16384
    max_batch_records = 500
    max_batch_age_s = 1.0
    [queue]
    max_bytes = 67108864            # durable queue bound (gateway/backhaul/store.py)
    backlog_records = 10000         # in-memory hold while the durable queue is full
    [commands]
    key_file = ""                   # HMAC-SHA256 key (hex, >= 32 bytes) commands are signed
                                    # with (gateway/commands/auth.py); "" = none
    allow_unsigned = false          # run unsigned commands other than relay (a lab bench)
    max_skew_s = 300                # a signed command's ts must be this close to our clock
    ttl_s = 86400                   # a command not acknowledged this long after it is
                                    # accepted expires
    [chirpstack]                    # ChirpStack v4 as an uplink source (docs/city-scale.md)
    url = ""                        # its MQTT broker, mqtt:// or mqtts://; "" = off
    application_id = "+"            # the application(s) to take events of ("+" = all)
    ca_file = ""                    # TLS and credentials as [mqtt]
    cert_file = ""
    key_file = ""
    username = ""
    password_file = ""
    protocol = "3.1.1"
    client_id = "streetgrid-<id>-chirpstack"
    [http]
    listen = "127.0.0.1:9600"       # /metrics, /healthz, /readyz (gateway/operations/http_server.py);
                                    # "" = off, port 0 = any free port
    [[modbus.bus]]                  # Modbus meter buses, none by default: gateway/modbus/config.py
    [log]
    level = "INFO"                  # DEBUG | INFO | WARNING | ERROR
    format = "text"                 # "text" | "json" (one JSON object per line)
    stats_interval_s = 10           # stats line in the log + <data_dir>/stats.json

Relative paths (``data_dir``, ``registry``) are resolved against the directory of the config
file, not the working directory, so a service manager can start the gateway from anywhere.

Error policy (as gateway/lorawan/registry.py): the whole file is checked and **every** problem is
collected into one :class:`ConfigError`; unknown sections and keys are errors (typos of
optional keys would otherwise be silently ignored).  The gateway refuses to start on any.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gateway.commands.auth import load_key
from gateway.log_format import FORMATS as LOG_FORMATS
from gateway.modbus.config import parse_buses
from gateway.backhaul.mqtt_link import PROTOCOLS as MQTT_PROTOCOLS
from gateway.backhaul.mqtt_link import LinkError, MqttLink, parse_broker_url
from gateway.toml_file import read_toml
from protocol.lorawan.region import REGIONS

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "parse_mqtt_url"]

TIME_SOURCES = ("forwarder", "gateway")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """The config file is unusable; ``errors`` lists every problem found."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = list(errors)
        n = len(self.errors)
        super().__init__(f"config {path!r}: {n} error{'s' if n != 1 else ''}:\n  "
                         + "\n  ".join(self.errors))


@dataclass(frozen=True, slots=True)
class Config:
    path: str  # absolute path of the file it came from
    gateway_id: str
    site: str
    region: str
    net_id: int
    data_dir: str  # absolute
    registry: str  # absolute
    time_source: str
    udp_host: str
    udp_port: int
    udp_rcvbuf_bytes: int
    dedup_window_s: float
    rx1_margin_s: float
    mqtt: MqttLink
    topic_prefix: str
    client_id: str
    max_batch_bytes: int
    max_batch_records: int
    max_batch_age_s: float
    queue_max_bytes: int
    backlog_records: int
    log_level: str
    stats_interval_s: float
    log_format: str = "text"  # gateway/log_format.py
    http_host: str | None = "127.0.0.1"  # None: no operator HTTP endpoint
    http_port: int = 9600
    modbus_buses: tuple = ()  # gateway.modbus.poller.BusConfig per [[modbus.bus]] (gateway.modbus.config)
    command_key: bytes | None = field(default=None, repr=False)  # [commands] key_file's key
    command_key_file: str = ""
    commands_allow_unsigned: bool = False
    commands_max_skew_s: float = 300.0
    commands_ttl_s: float = 86400.0
    chirpstack: MqttLink | None = None  # [chirpstack] url's broker; None: off
    chirpstack_application: str = "+"
    chirpstack_client_id: str = ""

    @property
    def mqtt_url(self) -> str:
        return self.mqtt.url


def parse_mqtt_url(url: object) -> tuple[str, int]:
    """``mqtt://host[:port]`` -> (host, port), for tools that speak plain MQTT only (TLS is
    the gateway's, via [mqtt] and gateway.backhaul.mqtt_link). ValueError if unusable."""
    tls, host, port = parse_broker_url(url)
    if tls:
        raise ValueError(f"{url!r}: scheme must be 'mqtt' here (no TLS settings)")
    return host, port


def _listen(v: str) -> tuple[str, int] | None:
    """"host:port" -> (host, port), None if malformed."""
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    return host.strip("[]"), int(port)


def _is_int(v: object) -> bool:
    return type(v) is int


def _is_num(v: object) -> bool:
    return type(v) in (int, float) and v == v and v not in (float("inf"), float("-inf"))


def rel_to(base_dir: str, path: object) -> str:
    """A config path made absolute against the config file's directory ("" stays "")."""
    return os.path.normpath(os.path.join(base_dir, path)) if isinstance(path, str) and path else ""


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _name_ok(v: object) -> bool:
    return isinstance(v, str) and bool(v) and not any(c in v for c in "/+#\0")


# section -> key -> (default, check, description of what is expected); default None = required
_REQ = object()
# how a broker is reached ([mqtt] and [chirpstack]; gateway/backhaul/mqtt_link.py)
_LINK_KEYS = {
        "ca_file": ("", _is_str, "a path (\"\" = none)"),
        "cert_file": ("", _is_str, "a path (\"\" = none)"),
        "key_file": ("", _is_str, "a path (\"\" = none)"),
        "username": ("", _is_str, "a string"),
        "password": ("", _is_str, "a string"),
        "password_file": ("", _is_str, "a path (\"\" = none)"),
        "protocol": ("3.1.1", lambda v: v in MQTT_PROTOCOLS, "one of " + ", ".join(MQTT_PROTOCOLS)),
}

_SCHEMA: dict[str, dict[str, tuple]] = {
    "gateway": {
        "id": (_REQ, _name_ok, "a non-empty string without '/', '+', '#'"),
        "site": (_REQ, _name_ok, "a non-empty string without '/', '+', '#'"),
        "region": ("EU868", lambda v: isinstance(v, str) and v in REGIONS, "one of " + ", ".join(sorted(REGIONS))),
        "net_id": (0x000013, lambda v: _is_int(v) and 0 <= v <= 0xFFFFFF, "an integer 0..0xFFFFFF"),
        "data_dir": (None, lambda v: isinstance(v, str) and bool(v), "a non-empty path"),
        "registry": (_REQ, lambda v: isinstance(v, str) and bool(v), "a non-empty path"),
        "time_source": ("forwarder", lambda v: isinstance(v, str) and v in TIME_SOURCES, "one of " + ", ".join(TIME_SOURCES)),
    },
    "udp": {
        "host": ("127.0.0.1", lambda v: isinstance(v, str) and bool(v), "a host name or address"),
        "port": (1700, lambda v: _is_int(v) and 0 <= v <= 65535, "an integer 0..65535"),
        "rcvbuf_bytes": (4 * 1024 * 1024, lambda v: _is_int(v) and 0 <= v <= 1 << 30,
                         "an integer 0..2**30 (0: OS default)"),
    },
    "dedup": {
        "window_ms": (200, lambda v: _is_num(v) and 0 < v <= 10_000, "a number of ms in (0, 10000]"),
    },
    "downlink": {
        "rx1_margin_ms": (200, lambda v: _is_num(v) and 0 <= v < 1000, "a number of ms in [0, 1000)"),
    },
    "mqtt": {
        "url": ("mqtt://127.0.0.1:1883", None, ""),
        **_LINK_KEYS,
        "topic_prefix": ("streetgrid/", lambda v: isinstance(v, str) and not any(c in v for c in "+#\0"),
                         "a string without '+', '#'"),
        "client_id": (None, lambda v: isinstance(v, str) and 0 < len(v) <= 64, "1..64 characters"),
        "max_batch_bytes": (16384, lambda v: _is_int(v) and 256 <= v <= 256 * 1024 * 1024,
                            "an integer >= 256"),
        "max_batch_records": (500, lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "max_batch_age_s": (1.0, lambda v: _is_num(v) and 0 <= v <= 3600, "seconds in [0, 3600]"),
    },
    "queue": {
        "max_bytes": (64 * 1024 * 1024, lambda v: _is_int(v) and v >= 4096, "an integer >= 4096"),
        "backlog_records": (10_000, lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    },
    "commands": {
        "key_file": ("", _is_str, "a path (\"\" = none)"),
        "allow_unsigned": (False, lambda v: type(v) is bool, "true or false"),
        "max_skew_s": (300, lambda v: _is_num(v) and 1 <= v <= 86400, "seconds in [1, 86400]"),
        "ttl_s": (86400, lambda v: _is_num(v) and 1 <= v <= 30 * 86400,
                  "seconds in [1, 2592000] (30 days)"),
    },
    "chirpstack": {
        "url": ("", _is_str, "mqtt://host[:port], mqtts://host[:port] or \"\" for off"),
        "application_id": ("+", lambda v: isinstance(v, str) and 0 < len(v) <= 64
                           and not any(c in v for c in "/#\0") and (v == "+" or "+" not in v),
                           "an application id (UUID) or \"+\""),
        **_LINK_KEYS,
        "client_id": (None, lambda v: isinstance(v, str) and 0 < len(v) <= 64, "1..64 characters"),
    },
    "http": {
        "listen": ("127.0.0.1:9600", lambda v: isinstance(v, str) and (v == "" or _listen(v)),
                   "\"host:port\" (port 0..65535) or \"\" for off"),
    },
    "log": {
        "level": ("INFO", lambda v: isinstance(v, str) and v.upper() in LOG_LEVELS,
                  "one of " + ", ".join(LOG_LEVELS)),
        "format": ("text", lambda v: isinstance(v, str) and v in LOG_FORMATS,
                   "one of " + ", ".join(LOG_FORMATS)),
        "stats_interval_s": (10, lambda v: _is_num(v) and 0 < v <= 86400, "seconds in (0, 86400]"),
    },
}


def parse_config(data: object, path: str = "<memory>", base_dir: str | None = None) -> Config:
    """Validate an already-parsed TOML document -> Config, or raise ConfigError (all errors)."""
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(path)) if path != "<memory>" else os.getcwd()
    errors: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(path, ["top level is not a table"])
    vals: dict[str, dict[str, object]] = {}
    for section in data:
        if section not in _SCHEMA and section != "modbus":
            errors.append(f"unknown section [{section}] (expected "
                          + ", ".join(f"[{s}]" for s in _SCHEMA) + ")")
    for section, keys in _SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            errors.append(f"[{section}] must be a table")
            table = {}
        for key in table:
            if key not in keys:
                errors.append(f"[{section}] unknown key {key!r}")
        got: dict[str, object] = {}
        for key, (default, check, expected) in keys.items():
            if key not in table:
                if default is _REQ:
                    errors.append(f"[{section}] missing key {key!r}")
                got[key] = None if default is _REQ else default
                continue
            v = table[key]
            if check is not None and not check(v):
                errors.append(f"[{section}] {key} = {v!r}: expected {expected}")
                got[key] = None
            else:
                got[key] = v
        vals[section] = got
    modbus_buses = parse_buses(data.get("modbus"), errors)
    m = vals["mqtt"]
    link = _link(m, "mqtt", base_dir, errors)
    cs = vals["chirpstack"]
    cs_link = _link(cs, "chirpstack", base_dir, errors) if cs["url"] else None
    cmds = vals["commands"]
    key, key_file = None, rel_to(base_dir, cmds["key_file"])
    if key_file:
        try:
            key = load_key(key_file)
        except ValueError as exc:
            errors.append(f"[commands] key_file {exc}")
    if errors:
        raise ConfigError(path, errors)
    g = vals["gateway"]
    listen = vals["http"]["listen"]
    data_dir = g["data_dir"] or os.path.join("var", str(g["id"]))
    return Config(
        path=os.path.abspath(path) if path != "<memory>" else path,
        gateway_id=g["id"], site=g["site"], region=g["region"], net_id=g["net_id"],
        data_dir=os.path.normpath(os.path.join(base_dir, data_dir)),
        registry=os.path.normpath(os.path.join(base_dir, g["registry"])),
        time_source=g["time_source"],
        udp_host=vals["udp"]["host"], udp_port=vals["udp"]["port"],
        udp_rcvbuf_bytes=vals["udp"]["rcvbuf_bytes"],
        dedup_window_s=vals["dedup"]["window_ms"] / 1000.0,
        rx1_margin_s=vals["downlink"]["rx1_margin_ms"] / 1000.0,
        mqtt=link, topic_prefix=m["topic_prefix"],
        client_id=m["client_id"] or f"streetgrid-{g['id']}",
        max_batch_bytes=m["max_batch_bytes"], max_batch_records=m["max_batch_records"],
        max_batch_age_s=float(m["max_batch_age_s"]),
        queue_max_bytes=vals["queue"]["max_bytes"], backlog_records=vals["queue"]["backlog_records"],
        log_level=vals["log"]["level"].upper(), stats_interval_s=float(vals["log"]["stats_interval_s"]),
        modbus_buses=tuple(modbus_buses), log_format=vals["log"]["format"],
        http_host=_listen(listen)[0] if listen else None,
        http_port=_listen(listen)[1] if listen else 0,
        command_key=key, command_key_file=key_file,
        commands_allow_unsigned=cmds["allow_unsigned"],
        commands_max_skew_s=float(cmds["max_skew_s"]), commands_ttl_s=float(cmds["ttl_s"]),
        chirpstack=cs_link, chirpstack_application=cs["application_id"] or "+",
        chirpstack_client_id=cs["client_id"] or f"streetgrid-{g['id']}-chirpstack",
    )


def _link(v: dict, section: str, base_dir: str, errors: list[str]) -> MqttLink | None:
    """The section's broker link (files read now), or None with its problems in errors.  A bad
    value was reported by the schema already and is taken here as absent."""
    def rel(key: str) -> str:
        return rel_to(base_dir, v[key])
    try:
        return MqttLink.build(v["url"], ca_file=rel("ca_file"), cert_file=rel("cert_file"),
                              key_file=rel("key_file"), username=v["username"] or "",
                              password=v["password"] or "", password_file=rel("password_file"),
                              protocol=v["protocol"] or "3.1.1")
    except LinkError as exc:
        errors.extend(f"[{section}] {e}" for e in exc.errors)
        return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem."""
    p, data = read_toml(path, ConfigError)
    return parse_config(data, p, os.path.dirname(os.path.abspath(p)))

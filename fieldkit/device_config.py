"""A device's /config.json, built and checked on the host with the firmware's own rules.

Why the firmware's rules: a key the technician misspells, or a pin the board lacks, must be
refused here, by name, before anything is written to a board; firmware.config.merge() is what
the device runs at boot, so the host cannot accept what the board would refuse. The file holds
only what differs from the defaults of the device's kind, as the technician guide shows.
"""

import json

from firmware import config


class DeviceConfigError(ValueError):
    """The config the technician asked for would not boot; the message names the key."""


def parse_setting(text):
    """"key=value" from the command line -> (key, value); the value is JSON when it parses
    ("report_interval_s=300", "latitude=52.37", "dimmer_invert=true"), else a string
    ("region=EU868")."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DeviceConfigError("setting %r: want key=value" % text)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def build(kind, dev_eui, join_eui, app_key, board=None, settings=()):
    """The config dict to write (only what differs from the kind's defaults), checked by
    firmware.config.merge(); raises DeviceConfigError naming the bad key."""
    cfg = {"kind": kind, "dev_eui": dev_eui.upper(), "join_eui": join_eui.upper(),
           "app_key": app_key.upper()}
    if board is not None:
        cfg["board"] = board
    for key, value in settings:
        if key in ("kind", "dev_eui", "join_eui", "app_key"):
            raise DeviceConfigError("config %s: give it as --%s, not as a setting"
                                    % (key, key.replace("_", "-")))
        cfg[key] = value
    try:
        full = config.merge(cfg)
    except config.ConfigError as e:
        raise DeviceConfigError(str(e)) from None
    defaults = config.defaults(kind)
    return dict((k, v) for k, v in cfg.items() if k == "kind" or full[k] != defaults[k])


def to_json(cfg):
    """The bytes of /config.json: stable key order, so a re-provisioned board whose config did
    not change gets byte-identical content (and deploy-style hash checks skip it)."""
    return (json.dumps(cfg, sort_keys=True, indent=1) + "\n").encode()

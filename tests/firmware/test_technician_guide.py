"""The provision commands a technician copies from docs/technician-guide.md must give configs that
boot a pole and a meter."""

import json
import os
import re

import pytest

from firmware import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guide_commands(kind):
    """The `streetgrid-field provision --kind KIND` commands in the guide's code blocks, parsed
    by the tool's own parser."""
    import shlex

    from fieldkit.cli import build_parser

    with open(os.path.join(ROOT, "docs", "technician-guide.md")) as f:
        text = f.read()
    found = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            argv = shlex.split(line.strip())
            if argv[:2] == ["streetgrid-field", "provision"] and "--kind" in argv \
                    and argv[argv.index("--kind") + 1] == kind:
                found.append(build_parser().parse_args(argv[1:]))
    assert found, "no provision command for a %s in the guide" % kind
    return found


def guide_config(kind):
    """What the guide's fullest provision command for KIND writes as /config.json (the tool's
    own build, with a fresh AppKey) and its settings."""
    from fieldkit import device_config
    from fieldkit.provision import NO_JOIN_SERVER, new_app_key

    commands = guide_commands(kind)
    for args in commands:  # every one of them is a config the board would boot
        device_config.build(kind, args.dev_eui, args.join_eui or NO_JOIN_SERVER, new_app_key(),
                            args.board, [device_config.parse_setting(s) for s in args.settings])
    args = max(commands, key=lambda a: len(a.settings))  # the full example
    settings = [device_config.parse_setting(s) for s in args.settings]
    cfg = device_config.build(kind, args.dev_eui, args.join_eui or NO_JOIN_SERVER, new_app_key(),
                              args.board, settings)
    return cfg, dict(settings)


def test_the_guide_pole_command_is_valid_and_overrides_the_defaults():
    cfg, settings = guide_config("pole")
    merged = config.merge(cfg)
    for key, value in settings.items():
        assert merged[key] == value
    assert set(cfg) <= set(config.defaults(cfg.get("kind", "pole")))


def test_a_typo_in_the_guide_pole_command_would_be_refused():
    from fieldkit import device_config

    cfg, settings = guide_config("pole")
    settings["lamp_ratedw"] = settings.pop("lamp_rated_w")
    with pytest.raises(device_config.DeviceConfigError, match="lamp_ratedw"):
        device_config.build("pole", cfg["dev_eui"], cfg["join_eui"], cfg["app_key"],
                            cfg.get("board"), list(settings.items()))


def test_the_guide_meter_command_is_a_valid_meter_config():
    cfg, settings = guide_config("meter")
    merged = config.merge(cfg)
    assert merged["kind"] == "meter"
    for key, value in settings.items():
        assert merged[key] == value
    assert merged["calibration"]["meter_constant"] == 3200
    bad = dict(cfg, calibration=dict(cfg["calibration"], ugain_a=1))
    with pytest.raises(config.ConfigError, match="ugain_a"):
        config.merge(bad)

"""The /config.json files a technician copies from docs/technician-guide.md must boot a pole
and a meter."""

import json
import os
import re

import pytest

from firmware import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guide_config(heading="**`/config.json`**"):
    """The JSON of the first code block after `heading` in the guide."""
    with open(os.path.join(ROOT, "docs", "technician-guide.md")) as f:
        text = f.read()
    block = re.search(re.escape(heading) + r".*?```\n(.*?)```", text, re.S).group(1)
    return json.loads(block)


def test_the_guide_config_is_valid_and_overrides_the_defaults():
    cfg = guide_config()
    merged = config.merge(cfg)
    for key, value in cfg.items():
        assert merged[key] == value
    assert set(cfg) <= set(config.DEFAULTS)


def test_a_typo_in_the_guide_config_would_be_refused():
    cfg = guide_config()
    cfg["report_intervall_s"] = cfg.pop("report_interval_s")
    with pytest.raises(config.ConfigError, match="report_intervall_s"):
        config.merge(cfg)


def test_the_guide_meter_config_is_a_valid_meter_config():
    cfg = guide_config("**`/config.json` of a meter**")
    merged = config.merge(cfg)
    assert merged["kind"] == "meter"
    for key, value in cfg.items():
        assert merged[key] == value
    bad = dict(cfg, calibration=dict(cfg["calibration"], ugain_a=1))
    with pytest.raises(config.ConfigError, match="ugain_a"):
        config.merge(bad)

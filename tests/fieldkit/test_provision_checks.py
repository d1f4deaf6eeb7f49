"""The host-side checks of `provision`: the config is refused by the firmware's own rules, the
registry entry by the gateway's own loader, and the label's QR code says what TR005 says, as an
independent decoder (zbarimg) reads it from the PNG."""

import json
import os
import shutil
import subprocess
import tomllib

import pytest
from hypothesis import given, strategies as st

from fieldkit import device_config, label, registry_file
from firmware import config
from gateway.lorawan.registry import RegistryError, load_registry

KEY = "2B7E151628AED2A6ABF7158809CF4F3C"
EUI = "70B3D57ED0001234"
JOIN = "70B3D57ED0000000"


def test_config_holds_only_what_differs_and_boots_as_given():
    cfg = device_config.build("pole", EUI.lower(), JOIN, KEY, "heltec-wifi-lora-32-v2",
                              [("report_interval_s", 300), ("region", "EU868"),
                               ("door_pin", 13), ("relay_pin", 12)])
    assert cfg == {"kind": "pole", "dev_eui": EUI, "join_eui": JOIN, "app_key": KEY,
                   "board": "heltec-wifi-lora-32-v2", "report_interval_s": 300,
                   "door_pin": 13, "relay_pin": 12}  # region EU868 is the default: left out
    full = config.merge(json.loads(device_config.to_json(cfg)))  # what the board will run
    assert full["report_interval_s"] == 300 and full["dev_eui"] == EUI


@pytest.mark.parametrize("kind, settings, board, names", [
    ("pole", [("report_intervall_s", 300)], None, "report_intervall_s"),  # a typo
    ("pole", [("data_rate", 9)], None, "data_rate"),  # out of range for the region
    ("pole", [("modbus_address", 3)], None, "modbus_address"),  # a meter's key on a pole
    ("meter", [], "no-such-board", "no-such-board"),
    ("pole", [], "heltec-wifi-lora-32-v2", "door_pin"),  # pole pin 27 is that board's MOSI
])
def test_a_config_the_board_would_refuse_is_refused_on_the_host_by_name(kind, settings, board,
                                                                       names):
    with pytest.raises(device_config.DeviceConfigError) as e:
        device_config.build(kind, EUI, JOIN, KEY, board, settings)
    assert names in str(e.value)
    with pytest.raises(config.ConfigError):  # and the firmware agrees
        cfg = {"kind": kind, "dev_eui": EUI, "join_eui": JOIN, "app_key": KEY}
        cfg.update(settings)
        if board:
            cfg["board"] = board
        config.merge(cfg)


def test_identity_keys_are_not_settings():
    with pytest.raises(device_config.DeviceConfigError, match="--app-key"):
        device_config.build("pole", EUI, JOIN, KEY, None, [("app_key", KEY)])


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
       st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                 st.text(alphabet="abcXYZ019_.", max_size=10)))
def test_parse_setting_reads_json_values_and_plain_strings(key, value):
    key = key.replace("=", "").strip()
    text = "%s=%s" % (key, value if isinstance(value, str) else json.dumps(value))
    if not key:
        with pytest.raises(device_config.DeviceConfigError):
            device_config.parse_setting(text)
        return
    k, v = device_config.parse_setting(text)
    assert k == key
    if isinstance(value, str):
        try:
            assert v == json.loads(value)
        except ValueError:
            assert v == value
    else:
        assert v == value


def _entry(name, eui):
    return registry_file.entry_text(name, 'harbour "east"', "pole", eui, JOIN, KEY)


def test_registry_entry_is_appended_and_loads_with_the_gateway_loader(tmp_path):
    path = str(tmp_path / "devices.toml")
    with open(path, "w") as f:
        f.write("# streetgrid devices: keep this comment\n")
    registry_file.commit(path, registry_file.prepare(path, _entry("pole-1", EUI)))
    registry_file.commit(path, registry_file.prepare(path, _entry("pole-2", "70B3D57ED0001235")))
    reg = load_registry(path)
    assert [d.name for d in reg] == ["pole-1", "pole-2"]
    assert reg.get(EUI).site == 'harbour "east"' and reg.get(EUI).app_key == bytes.fromhex(KEY)
    assert open(path).read().startswith("# streetgrid devices: keep this comment\n")
    assert registry_file.find(path, EUI).name == "pole-1"
    assert registry_file.find(path, "00" * 8) is None
    assert registry_file.find(str(tmp_path / "none.toml"), EUI) is None


def test_duplicate_dev_eui_is_refused_and_the_file_is_untouched(tmp_path):
    path = str(tmp_path / "devices.toml")
    registry_file.commit(path, registry_file.prepare(path, _entry("pole-1", EUI)))
    before = open(path).read()
    with pytest.raises(RegistryError, match="duplicate DevEUI 70B3D57ED0001234"):
        registry_file.prepare(path, _entry("pole-1-again", EUI.lower()))
    assert open(path).read() == before


def test_a_broken_registry_file_is_not_made_worse(tmp_path):
    path = str(tmp_path / "devices.toml")
    with open(path, "w") as f:
        f.write("[[device]]\nname = 1\n")
    with pytest.raises(RegistryError):
        registry_file.prepare(path, _entry("pole-1", EUI))


@given(st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and "\x00" not in s))
def test_any_name_round_trips_through_the_toml_entry(name):
    text = registry_file.entry_text(name, "site", "meter", EUI, JOIN, KEY)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        # control characters TOML cannot hold in a basic string must be refused, not mangled
        assert any(ord(c) < 32 or ord(c) == 127 for c in name)
        return
    assert doc["device"][0]["name"] == name


def test_tr005_text():
    assert label.tr005(JOIN, EUI.lower(), "00000001") == "LW:D0:%s:%s:00000001" % (JOIN, EUI)
    assert label.tr005(JOIN, EUI, "00000002", serial="M42").endswith(":00000002:SM42")
    for bad in (("70B3", EUI, "00000001"), (JOIN, EUI, "0001"), (JOIN, "zz" * 8, "00000001")):
        with pytest.raises(ValueError):
            label.tr005(*bad)


@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbarimg (zbar-tools) missing")
def test_the_label_png_scans_as_the_tr005_text(tmp_path):
    text, qr = label.make(JOIN, EUI, "meter")
    png = str(tmp_path / "label.png")
    label.save(qr, png, EUI, "meter-1")
    got = subprocess.run(["zbarimg", "--raw", "-q", png], capture_output=True, text=True)
    assert got.stdout.strip() == text == "LW:D0:%s:%s:00000002" % (JOIN, EUI)


def test_the_svg_label_carries_deveui_and_name(tmp_path):
    _, qr = label.make(JOIN, EUI, "pole")
    svg = str(tmp_path / "label.svg")
    label.save(qr, svg, EUI, "pole <7>")
    body = open(svg).read()
    assert body.startswith("<svg") and "DevEUI %s" % EUI in body and "pole &lt;7&gt;" in body
    assert os.path.getsize(svg) > 1000  # the code's path is in it
    term = label.terminal_text(qr, EUI, "pole-7")
    assert term.endswith("DevEUI %s\npole-7\n" % EUI) and "\u2588" in term or "\u2580" in term

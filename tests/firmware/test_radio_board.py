"""Board profiles (firmware/radio_board.py): the `board` key picks a vendor pin map or takes
custom pins, and every pin of the device is checked against the board at boot, with the key
named in the error."""

import pytest
from hypothesis import given, settings, strategies as st

from firmware import config, radio_board
from firmware.config import ConfigError

# free pins of an ESP32-S3 board for the pole's own peripherals (GPIO 22-25 do not exist there)
S3_POLE = {"i2c_scl": 17, "i2c_sda": 18, "uart_tx": 43, "uart_rx": 44, "dimmer_pin": 45,
           "door_pin": 46, "relay_pin": 47}


def pole(board, **kw):
    cfg = {"board": board}
    cfg.update(kw)
    return config.merge(cfg)


@pytest.mark.parametrize("name", sorted(radio_board.BOARDS))
def test_every_listed_board_resolves_and_validates_with_free_pins(name):
    p = radio_board.profile(name)
    assert p["chip"] in radio_board.CHIPS and p["mcu"] in ("esp32", "esp32s3")
    assert (p["busy"] is None) == (p["chip"] == "sx1276")
    radio_pins = {p[k] for k in ("sck", "mosi", "miso", "cs", "reset", "irq", "busy")} - {None}
    free = dict(S3_POLE) if p["mcu"] == "esp32s3" else {}
    if p["mcu"] == "esp32":  # the vendor boards use pins the streetgrid pole board also uses
        free = {"i2c_scl": 22, "i2c_sda": 21, "uart_tx": 17, "uart_rx": 16, "dimmer_pin": 25,
                "door_pin": 4, "relay_pin": 2}
    assert not radio_pins & set(free.values())
    cfg = pole(name, **free)
    assert radio_board.check(cfg)["name"] == name


def test_the_default_board_fits_the_default_pole_and_meter():
    assert config.merge({})["board"] == radio_board.DEFAULT
    assert radio_board.check(config.merge({}))["chip"] == "sx1276"
    assert radio_board.check(config.merge({"kind": "meter"}))["spi_id"] == 1
    assert radio_board.check(config.merge({"kind": "meter", "board": "streetgrid-sx1262"}))


def test_a_pin_used_twice_names_both_keys():
    with pytest.raises(ConfigError) as e:
        pole("heltec-wifi-lora-32-v2")  # its MOSI is GPIO 27, the pole board's door switch
    assert str(e.value) == ("config board.mosi: GPIO 27 is already door_pin on the board "
                            "heltec-wifi-lora-32-v2 (esp32)")
    with pytest.raises(ConfigError, match="config relay_pin: GPIO 2 is already dimmer_pin"):
        pole("streetgrid-sx1276", dimmer_pin=2, relay_pin=2)


def test_a_pin_the_mcu_lacks_or_cannot_drive_is_refused_by_key():
    with pytest.raises(ConfigError, match=r"config i2c_scl: GPIO 22 does not exist on the board "
                                          r"heltec-wifi-lora-32-v3 \(esp32s3\)"):
        pole("heltec-wifi-lora-32-v3")
    with pytest.raises(ConfigError, match="config dimmer_pin: GPIO 36 is input-only"):
        pole("streetgrid-sx1276", dimmer_pin=36)
    custom = {"chip": "sx1276", "sck": 5, "mosi": 27, "miso": 19, "cs": 35, "reset": 14}
    with pytest.raises(ConfigError, match="config board.cs: GPIO 35 is input-only"):
        pole(custom, door_pin=4)


def test_custom_boards_name_the_field_in_every_error():
    good = {"chip": "sx1262", "mcu": "esp32s3", "sck": 9, "mosi": 10, "miso": 11, "cs": 8,
            "reset": 12, "busy": 13, "dio1": 14, "tcxo_mv": 3300, "dio2_rf_switch": False}
    p = radio_board.check(pole(good, **S3_POLE))
    assert (p["irq"], p["busy"], p["tcxo_mv"], p["dio2_rf_switch"]) == (14, 13, 3300, False)
    cases = [
        (dict(good, chip="sx1280"), "config board.chip: want one of sx1276, sx1262"),
        ({k: v for k, v in good.items() if k != "busy"}, "config board.busy: missing"),
        (dict(good, dio0=3), "config board.dio0: not a field of a custom sx1262 board"),
        (dict(good, tcxo_mv=1900), "config board.tcxo_mv: want one of"),
        (dict(good, cs="8"), "config board.cs: want a GPIO number"),
        (dict(good, mcu="esp8266"), "config board.mcu"),
        (dict(good, dio2_rf_switch=1), "config board.dio2_rf_switch: want true or false"),
        (dict(good, spi_id=3), "config board.spi_id: want 1 or 2"),
    ]
    for board, msg in cases:
        with pytest.raises(ConfigError) as e:
            pole(board, **S3_POLE)
        assert str(e.value).startswith(msg), (board, str(e.value))
    with pytest.raises(ConfigError, match="config board: unknown board 'heltec-v9'"):
        pole("heltec-v9")
    with pytest.raises(ConfigError, match="config board: want a board name or a dict"):
        pole(7)


def test_the_radio_and_the_metering_chip_need_their_own_spi_buses():
    with pytest.raises(ConfigError, match="config spi_id: SPI bus 1 is the radio's"):
        config.merge({"kind": "meter", "spi_id": 1})
    # a Modbus-only meter has no radio: its bus and pins are free, its board still validated
    cfg = config.merge({"kind": "meter", "interfaces": "modbus", "spi_id": 1, "rs485_de_pin": 15})
    assert radio_board.check(cfg) is None
    with pytest.raises(ConfigError, match="config board: unknown board"):
        config.merge({"kind": "meter", "interfaces": "modbus", "board": "nope"})


_pin = st.one_of(st.none(), st.integers(-2, 50), st.text(max_size=2), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["chip", "mcu", "spi_id", "sck", "mosi", "miso", "cs",
                                        "reset", "busy", "dio0", "dio1", "tcxo_mv", "pa_boost",
                                        "dio2_rf_switch", "x"]),
                       st.one_of(_pin, st.sampled_from(["sx1276", "sx1262", "esp32", "esp32s3"])),
                       max_size=14))
def test_any_custom_board_is_accepted_or_refused_by_key(board):
    try:
        cfg = pole(board, **S3_POLE) if board.get("mcu") == "esp32s3" else pole(board)
    except ConfigError as e:
        assert str(e).startswith("config "), str(e)
        return
    p = radio_board.check(cfg)
    for k in ("sck", "mosi", "miso", "cs", "reset"):
        assert p[k] == board[k]


def test_the_technician_guide_table_is_the_firmware_table():
    """One source of truth: the guide's supported-boards table lists exactly BOARDS' pins."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "technician-guide.md")) as f:
        text = f.read()
    rows = re.findall(r"^\| `([a-z0-9.-]+)` \| (ESP32(?:-S3)?) \| (SX12\d\d)[^|]* \| (\d+) \| (\d+) "
                      r"\| (\d+) \| (\d+) \| (\d+) \| (\d+) \(DIO[01]\) \| (\d+|-) \|", text, re.M)
    assert sorted(r[0] for r in rows) == sorted(radio_board.BOARDS)
    for name, mcu, chip, *pins in rows:
        p = radio_board.profile(name)
        assert mcu.lower().replace("-", "") == p["mcu"] and chip.lower() == p["chip"]
        want = [p[k] for k in ("sck", "mosi", "miso", "cs", "reset", "irq")]
        assert [int(x) for x in pins[:6]] == want, name
        assert pins[6] == ("-" if p["busy"] is None else str(p["busy"])), name

"""Board profiles: which LoRa chip a board carries and how it is wired to the ESP32, chosen by
one config key, `board`, and turned into a driver at boot (build_radio).

Why a table: a technician names the board printed on the PCB ("heltec-wifi-lora-32-v3") and
gets the vendor's pin map, instead of typing seven pin numbers per device; a board not listed
takes the same fields as a dict ({"chip": "sx1276", "cs": 18, ...}). check() validates either
at boot, with the key named in the error: a pin the MCU lacks, an output on an input-only pin,
two functions on one pin, the radio on the metering chip's SPI bus. The simulator attaches its
chip models from the same profile (sim/devices/radio_chip.py), so the pins cannot drift apart.

Pins are from the vendors' schematics and pinout diagrams (the Meshtastic and RadioLib board
definitions agree with them); the "streetgrid-*" boards are this project's pole/meter board
with an RFM95W (SX1276) or a Wio-SX1262-class module (TCXO on DIO3, RF switch on DIO2).
"""

from firmware.config import ConfigError

# The board table as bytes and a string (flash, not RAM: a device reads it once, at boot). Row i
# of _ROWS is board i of _NAMES: mcu (0 esp32, 1 esp32s3), chip (index of CHIPS), spi_id, sck,
# mosi, miso, cs, reset, irq, busy, option; 0xFF = none.
#   irq: the interrupt line (SX1276 DIO0: TxDone/RxDone; SX1262 DIO1), none = poll the chip
#   busy: SX1262 BUSY (none on SX1276)
#   option: SX1276 -> 1 when the antenna is on PA_BOOST (0: RFO); SX1262 -> TCXO supply in
#           100 mV on DIO3 (0: crystal); every SX1262 board listed drives its RF switch from DIO2
_NAMES = ("streetgrid-sx1276 streetgrid-sx1262 heltec-wifi-lora-32-v2 ttgo-lora32-v2.1 "
          "heltec-wifi-lora-32-v3 lilygo-t3-s3-sx1262 xiao-esp32s3-wio-sx1262")
_ROWS = (
    b"\x00\x00\x01\x0e\x0d\x27\x0f\x21\x20\xff\x01"  # streetgrid-sx1276
    b"\x00\x01\x01\x0e\x0d\x27\x0f\x21\x20\x22\x12"  # streetgrid-sx1262
    b"\x00\x00\x01\x05\x1b\x13\x12\x0e\x1a\xff\x01"  # heltec-wifi-lora-32-v2
    b"\x00\x00\x01\x05\x1b\x13\x12\x17\x1a\xff\x01"  # ttgo-lora32-v2.1
    b"\x01\x01\x01\x09\x0a\x0b\x08\x0c\x0e\x0d\x12"  # heltec-wifi-lora-32-v3
    b"\x01\x01\x01\x05\x06\x03\x07\x08\x21\x22\x12"  # lilygo-t3-s3-sx1262
    b"\x01\x01\x01\x07\x09\x08\x29\x2a\x27\x28\x12"  # xiao-esp32s3-wio-sx1262
)
DEFAULT = "streetgrid-sx1276"
CHIPS = ("sx1276", "sx1262")
TCXO_MV = (0, 1600, 1700, 1800, 2200, 2400, 2700, 3000, 3300)

# custom board fields per chip (in CHIPS order), and which are required; pins are GPIO numbers
_CUSTOM = ("chip mcu spi_id sck mosi miso cs reset dio0 pa_boost",
           "chip mcu spi_id sck mosi miso cs reset busy dio1 tcxo_mv dio2_rf_switch")
_REQUIRED = (b"\x01\x00\x00\x01\x01\x01\x01\x01\x00\x00",
             b"\x01\x00\x00\x01\x01\x01\x01\x01\x01\x00\x00\x00")


def _board(name):
    """The row of board `name` as a tuple (mcu, chip, spi_id, sck, mosi, miso, cs, reset, irq,
    busy, option), or None."""
    names = _NAMES.split()
    if name not in names:
        return None
    r = _ROWS[11 * names.index(name):11 * names.index(name) + 11]
    v = [None if x == 0xFF else x for x in r]
    v[0] = "esp32s3" if r[0] else "esp32"
    v[1] = CHIPS[r[1]]
    v[10] = r[10] * 100 if r[1] else r[10]
    return tuple(v)


def __getattr__(name):
    """BOARDS: name -> (mcu, chip, spi_id, sck, mosi, miso, cs, reset, irq, busy, option), a new
    dict (for tests and tools; option is the TCXO supply in mV on an SX1262)."""
    if name == "BOARDS":
        return {n: _board(n) for n in _NAMES.split()}
    raise AttributeError(name)


def _gpio_ok(mcu, pin):
    """0 = no such GPIO on the MCU, 1 = input only, 2 = input and output."""
    if mcu == "esp32s3":
        return 2 if 0 <= pin <= 21 or 26 <= pin <= 48 else 0
    if pin < 0 or pin > 39 or pin in (20, 24, 28, 29, 30, 31):
        return 0
    return 1 if pin >= 34 else 2


# the application's pins by kind: config keys, and which are outputs
_POLE_PINS = ("i2c_scl i2c_sda uart_tx uart_rx dimmer_pin door_pin relay_pin",
              b"\x01\x01\x01\x00\x01\x00\x01")
_METER_PINS = ("spi_sck spi_mosi spi_miso chip_cs_pin relay_pin", b"\x01\x01\x00\x01\x01")
_RS485_PINS = ("rs485_tx rs485_rx rs485_de_pin", b"\x01\x00\x01")


def _pins(table):
    """[(config key, is an output)] of a pin table."""
    return list(zip(table[0].split(), table[1]))


def profile(board):
    """The wiring of `board` (a name of BOARDS or a custom dict) as a dict: mcu, chip, spi_id,
    sck, mosi, miso, cs, reset, irq, busy, pa_boost (SX1276), tcxo_mv and dio2_rf_switch
    (SX1262). Raises ConfigError naming the key."""
    if isinstance(board, str):
        t = _board(board)
        if t is None:
            raise ConfigError("config board: unknown board %r (known: %s, or a dict of custom pins)"
                              % (board, ", ".join(sorted(_NAMES.split()))))
        p = {"name": board, "mcu": t[0], "chip": t[1], "spi_id": t[2], "sck": t[3],
             "mosi": t[4], "miso": t[5], "cs": t[6], "reset": t[7], "irq": t[8], "busy": t[9]}
        if t[1] == "sx1276":
            p["pa_boost"] = bool(t[10])
        else:
            p["tcxo_mv"] = t[10]
            p["dio2_rf_switch"] = True
        return p
    if not isinstance(board, dict):
        raise ConfigError("config board: want a board name or a dict of custom pins, got %r"
                          % (board,))
    return _custom(board)


def _custom(b):
    chip = b.get("chip")
    if chip not in CHIPS:
        raise ConfigError("config board.chip: want one of %s, got %r" % (", ".join(CHIPS), chip))
    i = CHIPS.index(chip)
    fields = list(zip(_CUSTOM[i].split(), _REQUIRED[i]))
    names = [f[0] for f in fields]
    for k in b:
        if k not in names:
            raise ConfigError("config board.%s: not a field of a custom %s board (fields: %s)"
                              % (k, chip, ", ".join(names)))
    for name, required in fields:
        if required and name not in b:
            raise ConfigError("config board.%s: missing (a custom %s board needs %s)"
                              % (name, chip, ", ".join(f[0] for f in fields if f[1])))
    p = {"name": "custom", "mcu": b.get("mcu", "esp32"), "chip": chip,
         "spi_id": b.get("spi_id", 1)}
    if p["mcu"] not in ("esp32", "esp32s3"):
        raise ConfigError("config board.mcu: want \"esp32\" or \"esp32s3\", got %r" % (p["mcu"],))
    if p["spi_id"] not in (1, 2):
        raise ConfigError("config board.spi_id: want 1 or 2, got %r" % (p["spi_id"],))
    for k in ("sck", "mosi", "miso", "cs", "reset", "busy"):
        if k in b:
            p[k] = _pin_value("board." + k, b[k], False)
    p.setdefault("busy", None)
    p["irq"] = _pin_value("board.dio0" if chip == "sx1276" else "board.dio1",
                          b.get("dio0" if chip == "sx1276" else "dio1"), True)
    if chip == "sx1276":
        p["pa_boost"] = _bool("board.pa_boost", b.get("pa_boost", True))
    else:
        mv = b.get("tcxo_mv", 1800)
        if mv not in TCXO_MV or isinstance(mv, bool):
            raise ConfigError("config board.tcxo_mv: want one of %s (0 = crystal), got %r"
                              % (", ".join("%d" % v for v in TCXO_MV), mv))
        p["tcxo_mv"] = mv
        p["dio2_rf_switch"] = _bool("board.dio2_rf_switch", b.get("dio2_rf_switch", True))
    return p


def _pin_value(key, v, optional):
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError("config %s: want a GPIO number, got %r" % (key, v))
    return v


def _bool(key, v):
    if v is not True and v is not False:
        raise ConfigError("config %s: want true or false, got %r" % (key, v))
    return v


def uses_radio(cfg):
    return cfg["kind"] != "meter" or cfg["interfaces"] != "modbus"


def check(cfg):
    """Validate cfg's board and every pin of the application against it (see the module
    docstring); returns the profile, or None when the device has no radio (a Modbus-only
    meter), whose board is still validated."""
    p = profile(cfg["board"])
    used = {}  # pin -> config key
    pins = _pins(_POLE_PINS if cfg["kind"] == "pole" else _METER_PINS)
    if cfg["kind"] == "meter" and cfg["interfaces"] != "lorawan":
        pins += _pins(_RS485_PINS)
    entries = [(k, cfg[k], out) for k, out in pins]
    radio = uses_radio(cfg)
    if radio:
        irq = "board.dio0" if p["chip"] == "sx1276" else "board.dio1"
        entries += [("board.sck", p["sck"], 1), ("board.mosi", p["mosi"], 1),
                    ("board.miso", p["miso"], 0), ("board.cs", p["cs"], 1),
                    ("board.reset", p["reset"], 1), (irq, p["irq"], 0),
                    ("board.busy", p["busy"], 0)]
    where = "board %s (%s)" % (p["name"], p["mcu"])
    for key, pin, out in entries:
        if pin is None:
            continue
        ok = _gpio_ok(p["mcu"], pin)
        if not ok:
            raise ConfigError("config %s: GPIO %d does not exist on the %s" % (key, pin, where))
        if out and ok == 1:
            raise ConfigError("config %s: GPIO %d is input-only on the %s, and %s drives it"
                              % (key, pin, where, key))
        if pin in used:
            raise ConfigError("config %s: GPIO %d is already %s on the %s"
                              % (key, pin, used[pin], where))
        used[pin] = key
    if radio and cfg["kind"] == "meter" and cfg["spi_id"] == p["spi_id"]:
        raise ConfigError("config spi_id: SPI bus %d is the radio's on the %s; give the "
                          "metering chip the other bus" % (p["spi_id"], where))
    return p if radio else None


def build_radio(machine, cfg, sleep_ms):
    """The board's LoRa driver, on `machine` (MicroPython's, or a simulator's fake). A chip that
    does not answer raises RadioError naming the pins to check."""
    p = profile(cfg["board"])
    Pin = machine.Pin
    spi = machine.SPI(p["spi_id"], 8000000, polarity=0, phase=0, sck=Pin(p["sck"]),
                      mosi=Pin(p["mosi"]), miso=Pin(p["miso"]))
    cs = Pin(p["cs"], Pin.OUT, value=1)
    reset = Pin(p["reset"], Pin.OUT, value=1)
    irq = None if p["irq"] is None else Pin(p["irq"], Pin.IN)
    pins = {"cs": p["cs"], "reset": p["reset"], "sck": p["sck"], "mosi": p["mosi"],
            "miso": p["miso"]}
    if p["chip"] == "sx1276":
        from firmware.drivers.sx127x import SX127x

        pins["dio0"] = p["irq"]
        return SX127x(spi, cs, reset, irq, sleep_ms, pa_boost=p["pa_boost"], pins=pins)
    from firmware.drivers.sx126x import SX126x

    pins["busy"] = p["busy"]
    pins["dio1"] = p["irq"]
    return SX126x(spi, cs, reset, Pin(p["busy"], Pin.IN), irq, sleep_ms, tcxo_mv=p["tcxo_mv"],
                  dio2_rf_switch=p["dio2_rf_switch"], pins=pins)

"""Board profiles: which LoRa chip a board carries and how it is wired to the ESP32, chosen by
one config key, `board`, and turned into a driver at boot (build_radio).

Why a table: a technician names the board printed on the PCB ("heltec-wifi-lora-32-v3") and
gets the vendor's pin map, instead of typing seven pin numbers per device; a board not listed
takes the same fields as a dict ({"chip": "sx1276", "cs": 18, ...}). check() validates either
at boot, with the key named in the error: a pin the MCU lacks, an output on an input-only pin,
two functions on one pin, the radio on the metering chip's SPI bus. The simulator attaches its
chip models from the same profile (sim/devices/pole_board.py attach_radio), so the pins cannot
drift apart.

Pins are from the vendors' schematics and pinout diagrams (the Meshtastic and RadioLib board
definitions agree with them); the "streetgrid-*" boards are this project's pole/meter board
with an RFM95W (SX1276) or a Wio-SX1262-class module (TCXO on DIO3, RF switch on DIO2).
"""

from firmware.config import ConfigError

# name: (mcu, chip, spi_id, sck, mosi, miso, cs, reset, irq, busy, option)
#   irq: the interrupt line (SX1276 DIO0: TxDone/RxDone; SX1262 DIO1), None = poll the chip
#   busy: SX1262 BUSY (None on SX1276)
#   option: SX1276 -> 1 when the antenna is on PA_BOOST (0: RFO); SX1262 -> TCXO supply in mV on
#           DIO3 (0: crystal); every SX1262 board listed drives its RF switch from DIO2
BOARDS = {
    "streetgrid-sx1276": ("esp32", "sx1276", 1, 14, 13, 39, 15, 33, 32, None, 1),
    "streetgrid-sx1262": ("esp32", "sx1262", 1, 14, 13, 39, 15, 33, 32, 34, 1800),
    "heltec-wifi-lora-32-v2": ("esp32", "sx1276", 1, 5, 27, 19, 18, 14, 26, None, 1),
    "ttgo-lora32-v2.1": ("esp32", "sx1276", 1, 5, 27, 19, 18, 23, 26, None, 1),
    "heltec-wifi-lora-32-v3": ("esp32s3", "sx1262", 1, 9, 10, 11, 8, 12, 14, 13, 1800),
    "lilygo-t3-s3-sx1262": ("esp32s3", "sx1262", 1, 5, 6, 3, 7, 8, 33, 34, 1800),
    "xiao-esp32s3-wio-sx1262": ("esp32s3", "sx1262", 1, 7, 9, 8, 41, 42, 39, 40, 1800),
}
DEFAULT = "streetgrid-sx1276"
CHIPS = ("sx1276", "sx1262")
TCXO_MV = (0, 1600, 1700, 1800, 2200, 2400, 2700, 3000, 3300)

def _gpio_ok(mcu, pin):
    """0 = no such GPIO on the MCU, 1 = input only, 2 = input and output."""
    if mcu == "esp32s3":
        return 2 if 0 <= pin <= 21 or 26 <= pin <= 48 else 0
    if pin < 0 or pin > 39 or pin in (20, 24, 28, 29, 30, 31):
        return 0
    return 1 if pin >= 34 else 2


def profile(board):
    """The wiring of `board` (a name of BOARDS or a custom dict) as a dict: mcu, chip, spi_id,
    sck, mosi, miso, cs, reset, irq, busy, pa_boost (SX1276), tcxo_mv and dio2_rf_switch
    (SX1262). Raises ConfigError naming the key."""
    if isinstance(board, str):
        t = BOARDS.get(board)
        if t is None:
            raise ConfigError("config board: unknown board %r (known: %s, or a dict of custom pins)"
                              % (board, ", ".join(sorted(BOARDS))))
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
    # custom board fields: (name, required); pins are GPIO numbers. Tables inside the functions
    # that use them: this module only runs at boot, and a local costs no name in RAM afterwards
    fields = {
        "sx1276": (("chip", 1), ("mcu", 0), ("spi_id", 0), ("sck", 1), ("mosi", 1), ("miso", 1),
                   ("cs", 1), ("reset", 1), ("dio0", 0), ("pa_boost", 0)),
        "sx1262": (("chip", 1), ("mcu", 0), ("spi_id", 0), ("sck", 1), ("mosi", 1), ("miso", 1),
                   ("cs", 1), ("reset", 1), ("busy", 1), ("dio1", 0), ("tcxo_mv", 0),
                   ("dio2_rf_switch", 0)),
    }[chip]
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
    irq = "dio0" if chip == "sx1276" else "dio1"
    p["irq"] = _pin_value("board." + irq, b.get(irq), True)
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
    # the application's pins by kind: (config key, is an output)
    pole_pins = (("i2c_scl", 1), ("i2c_sda", 1), ("uart_tx", 1), ("uart_rx", 0),
                 ("dimmer_pin", 1), ("door_pin", 0), ("relay_pin", 1))
    meter_pins = (("spi_sck", 1), ("spi_mosi", 1), ("spi_miso", 0), ("chip_cs_pin", 1),
                  ("relay_pin", 1))
    rs485_pins = (("rs485_tx", 1), ("rs485_rx", 0), ("rs485_de_pin", 1))
    used = {}  # pin -> config key
    pins = list(pole_pins) if cfg["kind"] == "pole" else list(meter_pins)
    if cfg["kind"] == "meter" and cfg["interfaces"] != "lorawan":
        pins += rs485_pins
    entries = [(k, cfg[k], out) for k, out in pins]
    radio = uses_radio(cfg)
    if radio:
        irq = "dio0" if p["chip"] == "sx1276" else "dio1"  # what the board's schematic calls it
        for k, out in (("sck", 1), ("mosi", 1), ("miso", 0), ("cs", 1), ("reset", 1),
                       ("irq", 0), ("busy", 0)):
            entries.append(("board." + (irq if k == "irq" else k), p[k], out))
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

"""Every simulated device drives its board's chip model through the firmware's real driver, and
the models catch a mis-driven chip: the whole firmware (MAC, application, driver) on a board of
each chip joins a network stand-in, and each mis-drive below keeps it from joining.

The mis-drives are made on the wire, between the real driver and the model (MisDrive rewrites
what the driver clocked out), so they are exactly "the driver wrote this register wrong",
whatever the driver's code looks like: a wrong Frf, RX IQ not inverted, a wrong sync word. The
late RX window delays the driver's receive() by a few ms of board time.
"""

import pytest

from sim.board import LocalBoard
from sim.forwarder import EU868_CHANNELS
from tests.sim.test_vmboard import APP_KEY, DEV_EUI, JOIN_EUI, NetworkServer

BOARDS = ("streetgrid-sx1276", "streetgrid-sx1262")
CFG = {"kind": "pole", "dev_eui": DEV_EUI.hex(), "join_eui": JOIN_EUI.hex(),
       "app_key": APP_KEY.hex(), "join_jitter_s": 0, "report_interval_s": 300}


class Gateway(NetworkServer):
    """NetworkServer that hears only what a LoRaWAN concentrator demodulates: frames the chip
    sent LoRaWAN-compatible (public sync word, IQ normal, CRC, explicit header) within a quarter
    bandwidth of one of its channels; it answers on the channel's frequency, as a forwarder
    reports it."""

    def __init__(self, board):
        NetworkServer.__init__(self, board)
        self.heard = 0
        self.unheard = []

    def take(self):
        for f in self.board.radio.pending_frames():
            chan = [c for c in EU868_CHANNELS if abs(c - f["freq_hz"]) <= f["bw_hz"] // 4]
            if not f["lorawan"] or not chan:
                self.unheard.append(f)
                continue
            self.heard += 1
            self.on_tx((f["start_ms"], chan[0], f["sf"], f["bw_hz"], f["power_dbm"], f["phy"]))


def join(board, until_ms=40000):
    gw = Gateway(board)
    t = 0
    board.boot(t)
    while t < until_ms and not getattr(board.app.mac, "joined", False):
        gw.take()
        gw.offer_downlink()
        t = board.next_wake_ms()
        board.poll(t)
    gw.take()
    return gw


class MisDrive:
    """Sits between the driver and the chip model on the SPI bus and rewrites bytes the driver
    sends: rules(frame_prefix, index, byte) -> byte, where frame_prefix is what this NSS frame
    carried so far (its first byte: the SX1276 register address | 0x80 for a write, or the
    SX1262 opcode)."""

    def __init__(self, model, rule):
        self.model = model
        self.rule = rule
        self.frame = bytearray()
        self.hits = 0

    def spi_select(self, selected):
        self.frame = bytearray()
        self.model.spi_select(selected)

    def spi_transfer(self, mosi):
        out = bytearray(mosi)
        for i, b in enumerate(mosi):
            nb = self.rule(self.frame, len(self.frame), b)
            if nb != b:
                self.hits += 1
            out[i] = nb
            self.frame.append(b)
        return self.model.spi_transfer(bytes(out))

    def __getattr__(self, name):  # counters, refused, advance(), ... are the model's
        return getattr(self.model, name)


def _sx1276_reg(frame, i, reg):
    """Writing SX1276 register `reg` at byte i of this frame (burst writes auto-increment)."""
    return i >= 1 and frame[0] & 0x80 and (frame[0] & 0x7F) + i - 1 == reg


def wrong_frf(chip):
    if chip == "sx1276":  # RegFrfMid + 0x10 (61.035 Hz x 256 each): 250 kHz off the channel
        return lambda f, i, b: (b + 0x10) & 0xFF if _sx1276_reg(f, i, 0x07) else b
    # SetRfFrequency (0x86): Frf bits 23..16 + 4 (0.954 Hz x 65536 each): 250 kHz off
    return lambda f, i, b: (b + 4) & 0xFF if i == 2 and f[:1] == b"\x86" else b


def iq_not_inverted(chip):
    if chip == "sx1276":  # RegInvertIQ / RegInvertIQ2 always written as for normal IQ
        def rule(f, i, b):
            if _sx1276_reg(f, i, 0x33):
                return 0x27
            if _sx1276_reg(f, i, 0x3B):
                return 0x1D
            return b
        return rule
    # SetPacketParams (0x8C): byte 6 of its parameters is InvertIQ
    return lambda f, i, b: 0 if f[:1] == b"\x8c" and i == 6 else b


def wrong_sync_word(chip):
    if chip == "sx1276":  # RegSyncWord: 0x12, the private-network value
        return lambda f, i, b: 0x12 if _sx1276_reg(f, i, 0x39) else b

    def rule(f, i, b):  # WriteRegister (0x0D) of 0x0740/0x0741: 0x1424, the private value
        if f[:1] == b"\x0d" and len(f) >= 3 and i >= 3:
            reg = (f[1] << 8 | f[2]) + i - 3
            if reg == 0x0740:
                return 0x14
            if reg == 0x0741:
                return 0x24
        return b
    return rule


@pytest.fixture(params=BOARDS)
def board(request):
    return LocalBoard("p", DEV_EUI.hex(), dict(CFG, board=request.param), strict=True)


def test_a_pole_of_either_chip_joins_and_reports_through_its_driver(board):
    chip = "sx1276" if board.cfg["board"].endswith("sx1276") else "sx1262"
    assert type(board.radio_chip).__name__ == chip.upper()
    gw = join(board)
    assert board.app.mac.joined, "no join within 40 s"
    assert type(board.app.mac.radio).__module__ == "firmware.drivers.%s" % (
        "sx127x" if chip == "sx1276" else "sx126x")
    t = board.now_ms
    while len(gw.uplinks) < 2 and t < 15 * 60 * 1000:
        gw.take()
        t = board.next_wake_ms()
        board.poll(t)
    gw.take()
    assert len(gw.uplinks) >= 2 and all(u.mic_ok for u in gw.uplinks)
    assert board.radio_chip.refused == []
    assert board.radio_chip.counters["tx"] >= 3 and board.radio_chip.counters["rx_done"] >= 1


@pytest.mark.parametrize("misdrive", [wrong_frf, iq_not_inverted, wrong_sync_word])
def test_a_mis_driven_chip_never_joins(board, misdrive):
    chip = "sx1276" if board.cfg["board"].endswith("sx1276") else "sx1262"
    bus = board.machine.spi(1)
    cs = [k for k, v in bus.devices.items() if v is board.radio_chip][0]
    wire = MisDrive(board.radio_chip, misdrive(chip))
    bus.devices[cs] = wire
    gw = join(board, until_ms=60000)
    assert wire.hits > 0, "the mis-drive never applied: the test would prove nothing"
    assert not board.app.mac.joined
    assert board.app.mac.join_attempts >= 2
    if misdrive is iq_not_inverted:  # the uplink is fine; only the downlink is never heard
        assert gw.heard >= 2 and len(gw.join_requests) >= 2
    else:  # the concentrator never demodulates the join-request
        assert gw.heard == 0 and len(gw.unheard) >= 2


def test_an_rx_window_opened_too_late_misses_the_join_accept(board):
    radio = board  # the driver exists only after boot: wrap its receive() then
    gw = Gateway(board)
    board.boot(0)
    drv = board.app.mac.radio
    real_receive = drv.receive

    def late_receive(*a):
        board.sleep_ms(40)  # 40 ms of board time: past the accept's preamble at SF7
        return real_receive(*a)

    drv.receive = late_receive
    t = 0
    while t < 60000 and not board.app.mac.joined:
        gw.take()
        gw.offer_downlink()
        t = radio.next_wake_ms()
        board.poll(t)
    assert len(gw.join_requests) >= 2 and not board.app.mac.joined
    drv.receive = real_receive  # the same board on time joins at its next attempt
    while t < 200000 and not board.app.mac.joined:
        gw.take()
        gw.offer_downlink()
        t = radio.next_wake_ms()
        board.poll(t)
    assert board.app.mac.joined


@pytest.mark.parametrize("board_name,fault,wiring", [
    ("streetgrid-sx1276", "absent", "NSS"),
    ("streetgrid-sx1276", "dead", "0x00"),
    ("streetgrid-sx1262", "absent", "NSS"),
    ("streetgrid-sx1262", "busy_stuck", "BUSY"),
])
def test_a_chip_that_does_not_answer_is_a_boot_error_and_the_lamp_stays_safe(board_name, fault,
                                                                            wiring):
    b = LocalBoard("p", DEV_EUI.hex(), dict(CFG, board=board_name), strict=True,
                   radio_fault=fault)
    b.apply_env({"lux": 20000.0})
    b.boot(0)
    assert b.app is not None and b.app.mac is None
    assert wiring in b.app.radio_error
    assert any(f.startswith("radio: ") for f in b.app.hw.faults)
    assert b.outputs()["dimmer_duty_u16"] == 65535  # 100 %: the safe state until it samples
    for t in range(1000, 130000, 1000):
        b.poll(t)
    assert b.counters["crashes"] == 0  # it runs on, lamp on its photocell (daylight: off)
    assert b.outputs()["dimmer_duty_u16"] == 0

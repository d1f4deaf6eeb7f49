"""The SX126x driver (firmware/drivers/sx126x.py) against the SX1262 chip model
(sim/devices/sx1262.py) on the fake SPI bus and pins, with a SimRadio as the model's antenna.

The tests play the hub's side of the link (pending_frames, catches, deliver) and check what the
chip put on the air; driver variants that skip a step the datasheet requires must fail.
"""

import itertools
import json

import pytest
from hypothesis import given, settings, strategies as st

import sim.mpvm
from firmware.drivers import sx126x
from firmware.drivers.radio import RadioError
from firmware.drivers.sx126x import SX126x
from protocol.lorawan import airtime
from sim.board import load_fake
from sim.devices import sx1262
from sim.devices.sx1262 import SX1262
from sim.sim_radio import SimRadio

PINS = {"cs": 15, "reset": 33, "busy": 34, "dio1": 32}  # the streetgrid-sx1262 profile
EU868 = [868100000, 868300000, 868500000] + [867100000 + 200000 * i for i in range(5)]
KR920 = [920900000 + 200000 * i for i in range(7)]
_tags = itertools.count()


class Rig:
    """One board: fake machine, the chip model on SPI 1, a SimRadio link and the driver."""

    def __init__(self, dio1=True, driver=SX126x, model_opts=None, warm=None, **driver_opts):
        self.machine = m = load_fake("machine", "sx126x%d" % next(_tags))
        self.now = 0
        m.set_clock(lambda: self.now)
        self.link = SimRadio("t")
        pins = dict(PINS, dio1=PINS["dio1"] if dio1 else None)
        self.model = SX1262(m, pins, self.link, lambda: self.now, **(model_opts or {}))
        self.bus = m.spi(1)
        self.bus.attach(PINS["cs"], self.model)
        P = m.Pin
        self.spi = m.SPI(1, 8000000, polarity=0, phase=0, sck=P(14), mosi=P(13), miso=P(39))
        self.radio = None
        if driver is not None:
            self.radio = driver(self.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1),
                                P(34, P.IN), P(32, P.IN) if dio1 else None, self.sleep_ms,
                                pins=dict(PINS), **driver_opts)
        if warm:  # calibrate the band's image first (1 ms of BUSY), so calls act at once
            self.radio.rssi(warm)

    def sleep_ms(self, ms):
        self.at(self.now + ms)

    def at(self, ms):
        self.now = ms
        self.link.now_ms = ms
        self.model.advance()

    def run_until_event(self, limit_ms=20000):
        """Poll every ms (as the MAC does between wake-ups) until an event; (ms, event, SPI
        transfers made by the polls before the one that returned it)."""
        quiet = 0
        for t in range(self.now, self.now + limit_ms):
            self.at(t)
            before = self.bus.transfers
            ev = self.radio.poll()
            if ev is not None:
                return t, ev, quiet
            quiet += self.bus.transfers - before
        return None, None, quiet

    def play_downlink(self, phy, freq, sf, bw, start_ms, rssi=-70, snr=7.5):
        """The hub: a downlink starting at start_ms reaches this board if its window catches it."""
        toa = airtime.time_on_air_us(len(phy), sf, bw, crc=False)
        if not self.link.catches(freq, sf, bw, start_ms * 1000, toa):
            return False
        self.link.deliver(phy, rssi, snr, start_ms + -(-toa // 1000))
        return True


def frames(rig):
    return rig.link.pending_frames()


# ---- encoders ----------------------------------------------------------------------------

@given(st.integers(150000000, 960000000))
def test_frf_is_the_datasheet_word_and_the_model_decodes_it_back(freq):
    w = sx126x.frf(freq)
    assert w == round(freq * 2 ** 25 / 32000000)
    assert sx1262.frf_hz(w) == freq


# ---- TX ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(freq=st.sampled_from(EU868 + KR920), sf=st.integers(7, 12),
       data=st.binary(min_size=1, max_size=60), power=st.integers(-9, 22), dio1=st.booleans())
def test_uplink_goes_on_air_as_lorawan_and_tx_done_comes_once_at_its_end(freq, sf, data, power,
                                                                         dio1):
    rig = Rig(dio1=dio1)
    called = rig.now
    rig.radio.transmit(freq, sf, 125000, power, data)
    [f] = frames(rig)
    start = f["start_ms"]
    assert called <= start <= called + 1  # the band's first use waits out CalibrateImage
    toa = airtime.time_on_air_us(len(data), sf, 125000)
    assert (f["freq_hz"], f["sf"], f["bw_hz"], f["power_dbm"], f["phy"]) == \
        (freq, sf, 125000, power, data)
    assert f["airtime_us"] == toa and f["lorawan"] is True
    t, ev, quiet = rig.run_until_event()
    assert ev == ("tx_done",)
    assert t == start + -(-toa // 1000)
    if dio1:
        assert quiet == 0  # no SPI traffic until DIO1 rose
    else:
        assert quiet > 0  # polling reads GetIrqStatus
    for _ in range(30):
        rig.sleep_ms(1)
        assert rig.radio.poll() is None
    assert rig.model.mode == 2 and rig.model.refused == []


def test_image_calibration_runs_once_per_band_and_later_frames_start_at_once():
    rig = Rig()
    rig.radio.transmit(868100000, 7, 125000, 14, b"a")
    assert rig.model.image == 0xD7DB
    frames(rig)
    for freq in (867500000, 868300000):
        t, _, _ = rig.run_until_event()
        rig.radio.transmit(freq, 7, 125000, 14, b"b")
        assert frames(rig)[0]["start_ms"] == t  # same band: no calibration, no wait
    rig.run_until_event()
    rig.radio.receive(923300000, 7, 125000, 20)
    assert rig.model.image == 0xE1E9 and rig.model.refused == []


def test_bw500_uplink_with_errata_is_lorawan_without_it_is_not():
    rig = Rig()
    rig.radio.transmit(923300000, 8, 500000, 20, b"\x40" * 20)
    [f] = frames(rig)
    assert f["bw_hz"] == 500000 and f["lorawan"] is True
    assert f["airtime_us"] == airtime.time_on_air_us(20, 8, 500000)
    assert not rig.model.regs[0x0889] & 0x04

    class NoBw500Errata(SX126x):
        def _set_reg_bit2(self, addr, on):
            if addr != 0x0889:
                SX126x._set_reg_bit2(self, addr, on)

    rig = Rig(driver=NoBw500Errata)
    rig.radio.transmit(923300000, 8, 500000, 20, b"\x40" * 20)
    assert frames(rig)[0]["lorawan"] is False


def test_sx1261_tops_out_at_15_dbm_and_an_sx1262_pa_config_is_refused():
    rig = Rig(sx1261=True, model_opts={"sx1261": True})
    rig.radio.transmit(868100000, 7, 125000, 20, b"x")
    assert frames(rig)[0]["power_dbm"] == 15 and rig.model.refused == []
    rig.sleep_ms(100)
    rig.radio.poll()
    rig.radio.transmit(868100000, 7, 125000, 10, b"x")
    assert frames(rig)[0]["power_dbm"] == 10
    rig = Rig(model_opts={"sx1261": True})  # an SX1262 driver on an SX1261 board
    rig.radio.transmit(868100000, 7, 125000, 22, b"x")
    assert any("SetPaConfig" in r for r in rig.model.refused)
    assert any("SetTxParams" in r for r in rig.model.refused)
    assert frames(rig)[0]["power_dbm"] <= 15


# ---- RX ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(phy=st.binary(min_size=1, max_size=64), rssi=st.integers(-139, -10),
       snr=st.floats(-32, 31.75), sf=st.integers(7, 12), dio1=st.booleans())
def test_downlink_comes_out_with_rssi_and_snr_through_the_chip_encoding(phy, rssi, snr, sf,
                                                                        dio1):
    rig = Rig(dio1=dio1)
    freq = 869525000
    rig.radio.receive(freq, sf, 125000, 50)
    start = rig.now + 2
    assert rig.play_downlink(phy, freq, sf, 125000, start, rssi, snr)
    t, ev, quiet = rig.run_until_event()
    assert ev[0] == "rx" and ev[1] == phy
    assert ev[2] == max(rssi, -127)  # RssiPkt is 8 bits of -2 * dBm: -127.5 dBm is the floor
    assert abs(ev[3] - snr) <= 0.125
    if dio1:
        assert quiet == 0
    assert rig.model.counters["rx_done"] == 1 and rig.model.refused == []
    rig.sleep_ms(5)
    assert rig.radio.poll() is None


@pytest.mark.parametrize("dio1", [True, False])
@pytest.mark.parametrize("timeout_ms", [9, 17, 250])
def test_no_downlink_times_out_at_the_programmed_timeout(dio1, timeout_ms):
    rig = Rig(dio1=dio1, warm=868100000)
    opened = rig.now
    rig.radio.receive(868100000, 9, 125000, timeout_ms)
    assert rig.link.rx_window()[3:] == (opened, opened + timeout_ms)
    t, ev, _ = rig.run_until_event()
    assert ev == ("rx_timeout",) and t == opened + timeout_ms
    assert rig.model.counters["rx_timeout"] == 1 and rig.model.mode == 2
    rig.sleep_ms(5)
    assert rig.radio.poll() is None


def test_rx1_after_tx_gets_the_downlink_and_no_command_is_ever_refused():
    rig = Rig()
    rig.radio.transmit(868300000, 7, 125000, 14, b"\x00" * 23)
    t, ev, _ = rig.run_until_event()
    assert ev == ("tx_done",)
    rig.at(t + 1000 - 1)
    rig.radio.receive(868300000, 7, 125000, 19)
    assert rig.play_downlink(b"\x20" * 17, 868300000, 7, 125000, t + 1000)
    _, ev, _ = rig.run_until_event()
    assert ev[0] == "rx" and ev[1] == b"\x20" * 17
    assert rig.model.refused == [] and rig.model.counters["refused"] == 0


def test_lbt_rssi_reads_the_channel_power_through_get_rssi_inst():
    rig = Rig()
    rig.link.channel_power = lambda f, t: -72 if f == 922100000 else -118
    assert rig.radio.rssi(922100000) == -72
    assert rig.radio.rssi(922300000) == -118
    assert rig.model.mode == 2 and rig.model.refused == []
    assert rig.link.rx_window() is None


# ---- BUSY, boot --------------------------------------------------------------------------

def test_boot_waits_out_busy_and_leaves_the_chip_configured():
    rig = Rig()
    m = rig.model
    assert m.refused == [] and m.mode == 2
    assert m.packet_type == 1 and m.sync_word() == 0x3444 and m.rf_switch
    assert m.tcxo_code == 2 and m.regulator == 1 and m.errors == 0
    assert m.dio1_mask & 0x0203 == 0x0203 and m.irq_mask & 0x0263 == 0x0263
    assert rig.now >= 1 + 4 + 4  # reset pulse, boot BUSY, calibration BUSY


def test_stuck_busy_raises_radio_error_naming_the_busy_pin_in_bounded_time():
    with pytest.raises(RadioError) as e:
        Rig(model_opts={"stuck_busy": True})
    assert "BUSY" in str(e.value) and "pin 34" in str(e.value)


def test_a_board_without_the_chip_names_the_spi_wiring():
    rig = Rig(driver=None)
    rig.bus.detach(PINS["cs"])
    P = rig.machine.Pin
    rig.machine.drive(34, 0)
    with pytest.raises(RadioError) as e:
        SX126x(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(34, P.IN), None,
               rig.sleep_ms, pins=dict(PINS))
    assert "0xFF" in str(e.value) and "pin 15" in str(e.value) and "pin 33" in str(e.value)


def test_stuck_busy_wait_is_bounded_in_virtual_time():
    rig = Rig(driver=None, model_opts={"stuck_busy": True})
    P = rig.machine.Pin
    with pytest.raises(RadioError):
        SX126x(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(34, P.IN), None,
               rig.sleep_ms, pins=dict(PINS))
    assert rig.now <= 30 and rig.model.counters["refused"] == 0


def test_a_driver_that_skips_the_busy_wait_gets_commands_refused():
    class NoBusyWait(SX126x):
        def _wait_busy(self):
            pass

    rig = Rig(driver=NoBusyWait)
    assert any("BUSY" in r for r in rig.model.refused)
    assert rig.model.counters["refused"] >= 1


def test_a_reset_pulse_returns_the_chip_to_its_reset_values():
    rig = Rig()
    assert rig.model.sync_word() == 0x3444
    rig.machine.Pin(33).value(0)
    assert rig.model.mode == 7 and rig.machine.Pin(34).value() == 1
    rig.machine.Pin(33).value(1)
    assert rig.model.sync_word() == 0x1424 and rig.model.packet_type == 0
    rig.sleep_ms(4)
    assert rig.machine.Pin(34).value() == 0


# ---- errata ------------------------------------------------------------------------------

def test_errata_registers_follow_bw_and_iq():
    rig = Rig()
    regs = rig.model.regs
    assert regs[0x08D8] & 0x1E == 0x1E and regs[0x08D8] & ~0x1E == 0xC8 & ~0x1E
    rig.radio.transmit(868100000, 7, 125000, 14, b"a")
    assert regs[0x0889] & 0x04 and regs[0x0736] & 0x04
    rig.radio.standby()
    rig.radio.transmit(923300000, 7, 500000, 14, b"a")
    assert not regs[0x0889] & 0x04
    rig.radio.standby()
    rig.radio.receive(869525000, 12, 125000, 300)
    assert not regs[0x0736] & 0x04 and rig.model.invert_iq == 1 and rig.model.crc == 0
    rig.radio.standby()
    rig.radio.transmit(868100000, 7, 125000, 14, b"a")
    assert regs[0x0736] & 0x04 and rig.model.invert_iq == 0


class NoIqErrata(SX126x):
    def _packet(self, length, crc, invert_iq):
        self._c(0x8C, 0, 8, 0, length, crc, invert_iq)


def test_a_driver_skipping_the_iq_errata_never_receives_the_downlink():
    rig = Rig(driver=NoIqErrata)
    rig.radio.transmit(868100000, 7, 125000, 14, b"a")  # leaves 0x0736 bit 2 at its reset 1
    rig.run_until_event()
    opened = rig.now
    rig.radio.receive(868100000, 7, 125000, 20)
    assert rig.link.rx_window() is None
    assert not rig.play_downlink(b"down", 868100000, 7, 125000, opened + 1)
    t, ev, _ = rig.run_until_event()
    assert ev == ("rx_timeout",) and t == opened + 20


# ---- board options -------------------------------------------------------------------------

@pytest.mark.parametrize("tcxo_mv", [0, 1600])
def test_tcxo_not_powered_enough_means_nothing_on_the_air(tcxo_mv):
    rig = Rig(tcxo_mv=tcxo_mv, model_opts={"tcxo_mv": 1800})
    rig.radio.transmit(868100000, 7, 125000, 14, b"hello")
    assert frames(rig) == []
    assert rig.model.errors & 0x20
    assert any("oscillator" in r for r in rig.model.refused)
    _, ev, _ = rig.run_until_event(limit_ms=200)
    assert ev is None


def test_a_crystal_board_needs_no_tcxo():
    rig = Rig(tcxo_mv=0, model_opts={"tcxo_mv": 0})
    rig.radio.transmit(868100000, 7, 125000, 14, b"hello")
    assert len(frames(rig)) == 1 and rig.model.refused == []


def test_without_the_rf_switch_the_frame_is_40_db_weaker():
    rig = Rig(dio2_rf_switch=False)
    rig.radio.transmit(868100000, 7, 125000, 14, b"hello")
    assert frames(rig)[0]["power_dbm"] == 14 - 40
    rig = Rig(dio2_rf_switch=False, model_opts={"dio2_rf_switch": False})
    rig.radio.transmit(868100000, 7, 125000, 14, b"hello")
    assert frames(rig)[0]["power_dbm"] == 14


# ---- mis-driven chips are caught -------------------------------------------------------------

def test_wrong_frequency_register_puts_the_frame_elsewhere_and_misses_downlinks(monkeypatch):
    monkeypatch.setattr(sx126x, "frf", lambda f: (f << 19) // 32000000)  # SX127x's formula
    rig = Rig()
    rig.radio.transmit(868100000, 7, 125000, 14, b"up")
    assert frames(rig)[0]["freq_hz"] != 868100000
    rig.run_until_event()
    rig.radio.receive(868100000, 7, 125000, 20)
    assert not rig.play_downlink(b"down", 868100000, 7, 125000, rig.now + 1)
    assert rig.run_until_event()[1] == ("rx_timeout",)


def test_rx_with_iq_not_inverted_never_receives():
    class NormalIqRx(SX126x):
        def receive(self, freq_hz, sf, bw_hz, timeout_ms):
            SX126x.receive(self, freq_hz, sf, bw_hz, timeout_ms)
            self._standby()
            self._packet(255, 0, 0)
            self._c(0x82, 0, 0, timeout_ms * 64)

    rig = Rig(driver=NormalIqRx, warm=868100000)
    opened = rig.now
    rig.radio.receive(868100000, 7, 125000, 3)
    assert rig.link.rx_window() is None
    assert not rig.play_downlink(b"down", 868100000, 7, 125000, opened)
    t, ev, _ = rig.run_until_event()
    assert ev == ("rx_timeout",) and t == opened + 3


def test_wrong_sync_word_is_not_lorawan_and_opens_no_window():
    class PrivateSync(SX126x):
        def _boot(self, tcxo_mv, rf_switch):
            SX126x._boot(self, tcxo_mv, rf_switch)
            self._c(0x0D, 0x07, 0x40, 0x14, 0x24)

    rig = Rig(driver=PrivateSync)
    rig.radio.transmit(868100000, 7, 125000, 14, b"up")
    assert frames(rig)[0]["lorawan"] is False
    rig.run_until_event()
    rig.radio.receive(868100000, 7, 125000, 20)
    assert rig.link.rx_window() is None
    assert rig.run_until_event()[1] == ("rx_timeout",)


@pytest.mark.parametrize("late_ms,caught", [(0, True), (5, True), (12, False), (40, False)])
def test_an_rx_window_opened_too_late_misses_the_downlink(late_ms, caught):
    rig = Rig(warm=868100000)
    rig.at(1000)
    down_start = 1000
    rig.at(down_start + late_ms)
    rig.radio.receive(868100000, 7, 125000, 19)
    assert rig.play_downlink(b"down", 868100000, 7, 125000, down_start) is caught
    ev = rig.run_until_event()[1]
    assert ev[0] == ("rx" if caught else "rx_timeout")


def test_model_refuses_modulation_before_packet_type_and_short_frames():
    rig = Rig(driver=None)
    rig.sleep_ms(5)
    cs = rig.machine.Pin(15, rig.machine.Pin.OUT, value=1)

    def cmd(b):
        cs(0)
        rig.spi.write(bytes(b))
        cs(1)

    cmd([0x8B, 7, 4, 1, 0])
    cmd([0x86, 0x36])
    cmd([0x42])
    assert rig.model.counters["refused"] == 3
    assert "before SetPacketType" in rig.model.refused[0]


def test_sleep_wakes_on_nss_and_refuses_the_command_it_carried():
    rig = Rig()
    rig.radio._c(0x84, 0x04)  # SetSleep, warm start
    assert rig.model.mode == 0 and rig.machine.Pin(34).value() == 1
    cs = rig.radio._cs
    cs(0)
    rig.spi.write(b"\x8a\x01")  # SetPacketType in sleep: lost, the edge only wakes the chip
    cs(1)
    assert rig.model.mode == 2 and any("in sleep" in r for r in rig.model.refused)
    rig.radio._c(0xC0, 0)  # waits out the wake-up BUSY
    assert rig.model.counters["refused"] == 1 and rig.model.sync_word() == 0x3444


def test_power_cut_forgets_the_configuration_and_the_driver_boots_again():
    rig = Rig()
    rig.radio.receive(869525000, 12, 125000, 300)
    assert rig.link.rx_window() is not None
    rig.machine.power_cut()
    rig.model.power_cut()
    assert rig.link.rx_window() is None and rig.model.sync_word() == 0x1424
    P = rig.machine.Pin
    radio = SX126x(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(34, P.IN), None,
                   rig.sleep_ms)
    radio.transmit(868100000, 7, 125000, 14, b"again")
    assert frames(rig)[0]["lorawan"] is True and rig.model.refused == []


# ---- the real MicroPython VM -------------------------------------------------------------------

VM_SCRIPT = """
import json
from sim.fakes import machine
from sim.devices.sx1262 import SX1262
from firmware.drivers.sx126x import SX126x
from protocol.lorawan import airtime

T = [0]
machine.set_clock(lambda: T[0])

class Link:  # the medium as the host's SimRadio would answer, reduced to one TX and one RX
    def __init__(self):
        self.tx = []
        self.ev = None
        self.window = None
    def transmit(self, f, sf, bw, p, data, airtime_us=None, lorawan=True):
        self.tx.append([T[0], f, sf, bw, p, list(data), airtime_us, lorawan])
        self.ev = (T[0] * 1000 + airtime_us + 999) // 1000, ("tx_done",)
    def receive(self, f, sf, bw, timeout_ms):
        self.window = [f, sf, bw, T[0], timeout_ms]
        self.ev = (T[0] + 3, ("rx", b"downlink!", -93, -4.75))
    def poll(self):
        if self.ev is not None and T[0] >= self.ev[0]:
            e = self.ev[1]
            self.ev = None
            return e
        return None
    def standby(self):
        self.ev = None
    def rssi(self, f):
        return -101
    def power_off(self):
        self.ev = None

link = Link()
model = SX1262(machine, {"cs": 15, "reset": 33, "busy": 34, "dio1": 32}, link, lambda: T[0])
machine.spi(1).attach(15, model)
def sleep_ms(ms):
    T[0] += ms
    model.advance()
P = machine.Pin
spi = machine.SPI(1, 8000000, sck=P(14), mosi=P(13), miso=P(39))
radio = SX126x(spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(34, P.IN), P(32, P.IN),
               sleep_ms, pins={"busy": 34})
out = {"boot_ms": T[0]}

def until_event():
    quiet = 0
    while T[0] < 5000:
        n = machine.spi(1).transfers
        e = radio.poll()
        if e is not None:
            return T[0], e, quiet
        quiet += machine.spi(1).transfers - n
        sleep_ms(1)

radio.transmit(868100000, 9, 125000, 16, b"uplink frame")
out["tx"] = link.tx
t, e, quiet = until_event()
out["tx_done"] = [t, e[0], quiet]
radio.receive(869525000, 12, 125000, 300)
out["window"] = link.window
t, e, quiet = until_event()
out["rx"] = [t, e[0], bytes(e[1]).decode(), e[2], e[3], quiet]
out["lbt"] = radio.rssi(868300000)
out["refused"] = model.refused
out["regs"] = [model.regs[0x08D8], model.regs[0x0736], model.regs[0x0889]]
try:
    model.stuck_busy = True
    SX126x(spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(34, P.IN), None,
           sleep_ms, pins={"busy": 34})
except OSError as exc:
    out["stuck"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_driver_and_model_on_micropython():
    mounts = ("protocol", "firmware", (sim.mpvm.ROOT + "/sim/fakes", "/lib/sim/fakes"),
              (sim.mpvm.ROOT + "/sim/devices", "/lib/sim/devices"))
    out = json.loads(sim.mpvm.run(VM_SCRIPT, mounts=mounts).strip().splitlines()[-1])
    [[start, f, sf, bw, p, data, toa, lorawan]] = out["tx"]
    assert (f, sf, bw, p, bytes(data), lorawan) == (868100000, 9, 125000, 16, b"uplink frame",
                                                   True)
    assert toa == airtime.time_on_air_us(12, 9, 125000)
    assert out["tx_done"] == [start + -(-toa // 1000), "tx_done", 0]
    assert out["window"][:3] == [869525000, 12, 125000] and out["window"][4] == 300
    assert out["rx"][1:] == ["rx", "downlink!", -93, -4.75, 0]
    assert out["lbt"] == -101
    assert out["refused"] == []
    assert out["regs"][0] & 0x1E == 0x1E and not out["regs"][1] & 0x04 and out["regs"][2] & 0x04
    assert "BUSY stuck high (pin 34)" in out["stuck"]

"""The SX127x driver (firmware/drivers/sx127x.py) against the SX1276 chip model
(sim/devices/sx1276.py) on the fake SPI bus and pins, with a SimRadio as the model's antenna.

The tests play the hub's side of the link (pending_frames, catches, deliver) and check what the
chip put on the air; driver variants that skip a step the datasheet requires must fail.
"""

import itertools
import json

import pytest
from hypothesis import given, settings, strategies as st

import sim.mpvm
from firmware.drivers import sx127x
from firmware.drivers.radio import RadioError
from firmware.drivers.sx127x import SX127x
from protocol.lorawan import airtime
from sim.board import load_fake
from sim.devices.sx1276 import SX1276
from sim.sim_radio import SimRadio

PINS = {"cs": 15, "reset": 33, "dio0": 32, "dio1": 35}  # streetgrid-sx1276, DIO1 optional
EU868 = [868100000, 868300000, 868500000] + [867100000 + 200000 * i for i in range(5)]
KR920 = [920900000 + 200000 * i for i in range(7)]
EU433 = [433175000, 433375000, 433575000]
_tags = itertools.count()


class Rig:
    """One board: fake machine, the chip model on SPI 1, a SimRadio link and the driver."""

    def __init__(self, dio0=True, dio1=False, driver=SX127x, model_opts=None, **driver_opts):
        self.machine = m = load_fake("machine", "sx127x%d" % next(_tags))
        self.now = 0
        m.set_clock(lambda: self.now)
        self.link = SimRadio("t")
        pins = dict(PINS, dio0=PINS["dio0"] if dio0 else None, dio1=PINS["dio1"] if dio1 else None)
        self.model = SX1276(m, pins, self.link, lambda: self.now, **(model_opts or {}))
        self.bus = m.spi(1)
        self.bus.attach(PINS["cs"], self.model)
        P = m.Pin
        self.spi = m.SPI(1, 8000000, polarity=0, phase=0, sck=P(14), mosi=P(13), miso=P(39))
        self.sleep_ms(10)  # power-on reset
        self.radio = None
        if driver is not None:
            self.radio = driver(self.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1),
                                P(32, P.IN) if dio0 else None, self.sleep_ms,
                                pins=dict(PINS), dio1=P(35, P.IN) if dio1 else None,
                                **driver_opts)

    def sleep_ms(self, ms):
        self.at(self.now + ms)

    def at(self, ms):
        self.now = ms
        self.link.now_ms = ms
        self.model.advance()

    def run_until_event(self, limit_ms=20000):
        """Poll every ms until an event; (ms, event, SPI transfers of the polls before it)."""
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
        toa = airtime.time_on_air_us(len(phy), sf, bw, crc=False)
        if not self.link.catches(freq, sf, bw, start_ms * 1000, toa):
            return False
        self.link.deliver(phy, rssi, snr, start_ms + -(-toa // 1000))
        return True


def frames(rig):
    return rig.link.pending_frames()


# ---- encoders ----------------------------------------------------------------------------

@given(st.integers(137000000, 1020000000))
def test_frf_is_the_datasheet_word_and_the_model_decodes_it_back(freq):
    w = sx127x.frf(freq)
    assert w == round(freq * 2 ** 19 / 32000000)
    model = SX1276.__new__(SX1276)
    model.regs = bytearray(0x80)
    model.regs[6], model.regs[7], model.regs[8] = w >> 16, (w >> 8) & 0xFF, w & 0xFF
    assert abs(model.freq_hz() - freq) <= 31  # 61.035 Hz steps


@given(st.integers(0, 20000), st.integers(7, 12), st.sampled_from([125000, 250000, 500000]))
def test_symbol_timeout_covers_the_window(timeout_ms, sf, bw):
    n = sx127x.symbols(timeout_ms, sf, bw)
    tsym_us = (1 << sf) * 1000000 // bw
    assert 4 <= n <= 1023
    if 4 < n < 1023:
        assert (n - 1) * tsym_us < timeout_ms * 1000 <= n * tsym_us


# ---- TX ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(freq=st.sampled_from(EU868 + KR920), sf=st.integers(7, 12),
       data=st.binary(min_size=1, max_size=60), power=st.integers(2, 20), dio0=st.booleans())
def test_uplink_goes_on_air_as_lorawan_and_tx_done_comes_once_at_its_end(freq, sf, data, power,
                                                                         dio0):
    rig = Rig(dio0=dio0)
    called = rig.now
    rig.radio.transmit(freq, sf, 125000, power, data)
    [f] = frames(rig)
    assert f["start_ms"] == called
    toa = airtime.time_on_air_us(len(data), sf, 125000)
    assert (f["sf"], f["bw_hz"], f["power_dbm"], f["phy"]) == (sf, 125000, power, data)
    assert abs(f["freq_hz"] - freq) <= 31
    assert f["airtime_us"] == toa and f["lorawan"] is True
    t, ev, quiet = rig.run_until_event()
    assert ev == ("tx_done",)
    assert t == called + -(-toa // 1000)
    if dio0:
        assert quiet == 0  # no SPI traffic until DIO0 rose
    else:
        assert quiet > 0  # polling reads RegIrqFlags
    for _ in range(30):
        rig.sleep_ms(1)
        assert rig.radio.poll() is None
    assert rig.model.mode == 1 and rig.model.refused == []


def test_pa_boost_and_rfo_power_and_a_profile_naming_the_wrong_pa():
    rig = Rig()
    rig.radio.transmit(868100000, 7, 125000, 20, b"x")
    assert frames(rig)[0]["power_dbm"] == 20 and rig.model.regs[0x4D] == 0x87
    rig.run_until_event()
    rig.radio.transmit(868100000, 7, 125000, 14, b"x")
    assert frames(rig)[0]["power_dbm"] == 14 and rig.model.regs[0x4D] == 0x84
    rig.run_until_event()
    rig = Rig(model_opts={"pa_boost": False}, pa_boost=False)
    rig.radio.transmit(868100000, 7, 125000, 14, b"x")
    assert frames(rig)[0]["power_dbm"] == 14 and not rig.model.regs[0x09] & 0x80
    rig = Rig(model_opts={"pa_boost": False}, pa_boost=True)  # profile says PA_BOOST, board RFO
    rig.radio.transmit(868100000, 7, 125000, 14, b"x")
    assert frames(rig)[0]["power_dbm"] == 14 - 40


def test_low_band_uses_the_lf_port():
    rig = Rig()
    rig.radio.transmit(EU433[0], 9, 125000, 10, b"low")
    [f] = frames(rig)
    assert abs(f["freq_hz"] - EU433[0]) <= 31 and rig.model.lf_port()
    assert rig.model.refused == []
    rig.run_until_event()
    rig.link.channel_power = lambda f, t: -100
    assert rig.radio.rssi(EU433[1]) == -100  # -164 + RegRssiValue on the LF port
    rig.radio.transmit(868100000, 9, 125000, 10, b"high")
    assert not rig.model.lf_port() and rig.model.refused == []


def test_long_range_frames_set_low_data_rate_optimize():
    rig = Rig()
    rig.radio.transmit(868100000, 12, 125000, 14, b"\x00" * 20)
    [f] = frames(rig)
    assert rig.model.regs[0x26] & 0x08
    assert f["airtime_us"] == airtime.time_on_air_us(20, 12, 125000, low_dr_optimize=True)
    rig.run_until_event()
    rig.radio.transmit(868100000, 7, 125000, 14, b"\x00" * 20)
    assert not rig.model.regs[0x26] & 0x08


# ---- RX ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(phy=st.binary(min_size=1, max_size=64), rssi=st.integers(-139, -20),
       snr=st.floats(-20, 12), sf=st.integers(7, 12), dio0=st.booleans(), dio1=st.booleans())
def test_downlink_comes_out_with_rssi_and_snr_through_the_chip_encoding(phy, rssi, snr, sf,
                                                                        dio0, dio1):
    rig = Rig(dio0=dio0, dio1=dio1)
    freq = 869525000
    rig.radio.receive(freq, sf, 125000, 50)
    assert rig.model.regs[0x33] & 0x40 and rig.model.regs[0x3B] == 0x19
    assert not rig.model.crc()  # downlinks carry no payload CRC
    start = rig.now + 2
    assert rig.play_downlink(phy, freq, sf, 125000, start, rssi, snr)
    t, ev, quiet = rig.run_until_event()
    assert ev[0] == "rx" and ev[1] == phy
    assert abs(ev[3] - snr) <= 0.125
    assert abs(ev[2] - rssi) <= 1  # 16/15 scaling above the noise floor
    if dio0 and dio1:
        assert quiet == 0
    assert rig.model.counters["rx_done"] == 1 and rig.model.refused == []
    rig.sleep_ms(5)
    assert rig.radio.poll() is None


@pytest.mark.parametrize("dio0,dio1", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("timeout_ms", [9, 17, 250])
def test_no_downlink_times_out_after_the_programmed_symbols(dio0, dio1, timeout_ms):
    rig = Rig(dio0=dio0, dio1=dio1)
    opened = rig.now
    rig.radio.receive(868100000, 9, 125000, timeout_ms)
    n = rig.model.symb_timeout()
    assert n == sx127x.symbols(timeout_ms, 9, 125000)
    close = opened + -(-n * 4096 // 1000)  # SF9/125 kHz: 4.096 ms per symbol
    assert rig.link.rx_window()[3:] == (opened, close)
    t, ev, quiet = rig.run_until_event()
    assert ev == ("rx_timeout",) and t == close
    if dio1:
        assert quiet == 0  # DIO1 carries RxTimeout
    assert rig.model.counters["rx_timeout"] == 1 and rig.model.mode == 1
    rig.sleep_ms(5)
    assert rig.radio.poll() is None


def test_a_crc_error_is_reported_as_a_lost_frame():
    rig = Rig(dio0=False)
    rig.radio.receive(868100000, 7, 125000, 20)
    rig.model.regs[0x12] |= 0x60  # RxDone | PayloadCrcError, as a corrupted frame leaves them
    assert rig.radio.poll() == ("rx_timeout",)
    assert rig.model.regs[0x12] == 0


def test_rx1_after_tx_gets_the_downlink_and_no_register_is_ever_refused():
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


def test_lbt_rssi_reads_the_channel_power_through_reg_rssi_value():
    rig = Rig()
    rig.link.channel_power = lambda f, t: -72 if abs(f - 922100000) < 100 else -118
    assert rig.radio.rssi(922100000) == -72
    assert rig.radio.rssi(922300000) == -118
    assert rig.model.mode == 1 and rig.model.refused == []
    assert rig.link.rx_window() is None


# ---- mis-driven chips ----------------------------------------------------------------------

def test_rx_with_iq_not_inverted_never_receives():
    class NormalIq(SX127x):
        def _tune(self, freq_hz, sf, bw_hz, crc, invert_iq):
            SX127x._tune(self, freq_hz, sf, bw_hz, crc, False)

    rig = Rig(driver=NormalIq)
    rig.radio.receive(869525000, 9, 125000, 50)
    assert rig.link.rx_window() is None  # the chip never hears a downlink
    assert not rig.play_downlink(b"\x60" * 12, 869525000, 9, 125000, rig.now + 2)
    _, ev, _ = rig.run_until_event()
    assert ev == ("rx_timeout",)


def test_wrong_sync_word_is_not_lorawan_and_opens_no_window():
    class PrivateSync(SX127x):
        def _boot(self):
            SX127x._boot(self)
            self._write(0x39, 0x12)

    rig = Rig(driver=PrivateSync)
    rig.radio.transmit(868100000, 7, 125000, 14, b"x" * 10)
    assert frames(rig)[0]["lorawan"] is False
    rig.run_until_event()
    rig.radio.receive(868100000, 7, 125000, 20)
    assert rig.link.rx_window() is None


@pytest.mark.parametrize("late_ms,caught", [(0, True), (3, True), (12, False)])
def test_an_rx_window_opened_too_late_misses_the_downlink(late_ms, caught):
    rig = Rig()
    start = 100
    rig.at(start + late_ms)
    rig.radio.receive(869525000, 7, 125000, 20)
    assert rig.play_downlink(b"\x60" * 12, 869525000, 7, 125000, start) is caught


# ---- boot, reset, refusals -----------------------------------------------------------------

def test_boot_leaves_the_chip_in_lora_standby_configured():
    rig = Rig()
    m = rig.model
    assert m.refused == [] and m.lora() and m.mode == 1
    assert m.sync_word() == 0x34 and m.preamble() == 8 and m.regs[0x26] & 0x04
    assert rig.now >= 10 + 1 + 5  # POR, the reset pulse, 5 ms before SPI


def test_a_dead_chip_names_the_version_register_and_the_wiring():
    with pytest.raises(RadioError) as e:
        Rig(model_opts={"version": 0})
    msg = str(e.value)
    assert "0x42 reads 0x00" in msg and "pin 15" in msg and "pin 33" in msg


def test_a_board_without_the_chip_names_the_spi_wiring():
    rig = Rig(driver=None)
    rig.bus.detach(PINS["cs"])
    P = rig.machine.Pin
    with pytest.raises(RadioError) as e:
        SX127x(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), None, rig.sleep_ms,
               pins=dict(PINS))
    assert "0xFF" in str(e.value) and "NSS (pin 15)" in str(e.value)


def test_the_lora_bit_outside_sleep_is_refused():
    class NoSleepFirst(SX127x):
        def _write(self, reg, value):
            if reg == 0x01 and value in (0x00, 0x80):
                value = 0x81 if value == 0x80 else 0x01  # straight from FSK standby
            SX127x._write(self, reg, value)

    with pytest.raises(RadioError) as e:
        Rig(driver=NoSleepFirst)
    assert "LoRa mode" in str(e.value)


def test_a_driver_that_does_not_wait_after_reset_is_refused():
    class Hasty(SX127x):
        def _boot(self):
            self._sleep_ms = lambda ms: None if ms == 6 else real(ms)
            SX127x._boot(self)

    real = None
    rig = Rig(driver=None)
    real = rig.sleep_ms
    P = rig.machine.Pin
    with pytest.raises(RadioError):
        Hasty(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), None, rig.sleep_ms,
              pins=dict(PINS))
    assert any("reset" in r for r in rig.model.refused)


def test_fifo_in_sleep_and_writes_to_read_only_registers_are_refused():
    rig = Rig()
    rig.radio._write(0x01, 0x80)  # LoRa sleep
    rig.radio._write_burst(0x00, b"abc")
    rig.radio._write(0x42, 0x99)
    assert rig.model.regs[0x42] == 0x12
    assert any("FIFO" in r for r in rig.model.refused)
    assert any("read-only" in r for r in rig.model.refused)


def test_power_cut_forgets_the_configuration_and_the_driver_boots_again():
    rig = Rig()
    rig.radio.transmit(868100000, 7, 125000, 14, b"x")
    frames(rig)
    rig.model.power_cut()
    assert not rig.model.lora() and rig.model.sync_word() == 0x12
    rig.sleep_ms(10)
    P = rig.machine.Pin
    radio = SX127x(rig.spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(32, P.IN),
                   rig.sleep_ms, pins=dict(PINS))
    radio.transmit(868100000, 7, 125000, 14, b"again")
    assert frames(rig)[0]["phy"] == b"again" and rig.model.refused == []


# ---- on the MicroPython VM -------------------------------------------------------------------

VM_SCRIPT = """
import json
from sim.fakes import machine
from sim.devices.sx1276 import SX1276
from firmware.drivers.sx127x import SX127x

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
model = SX1276(machine, {"cs": 15, "reset": 33, "dio0": 32}, link, lambda: T[0])
machine.spi(1).attach(15, model)
def sleep_ms(ms):
    T[0] += ms
    model.advance()
sleep_ms(10)
P = machine.Pin
spi = machine.SPI(1, 8000000, sck=P(14), mosi=P(13), miso=P(39))
radio = SX127x(spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), P(32, P.IN), sleep_ms,
               pins={"cs": 15, "reset": 33})
out = {}

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
out["rx"] = [t, e[0], bytes(e[1]).decode(), e[2], e[3]]
out["lbt"] = radio.rssi(868300000)
out["refused"] = model.refused
try:
    model.version = 0
    model.power_cut()
    sleep_ms(10)
    SX127x(spi, P(15, P.OUT, value=1), P(33, P.OUT, value=1), None, sleep_ms,
           pins={"cs": 15, "reset": 33})
except OSError as exc:
    out["dead"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_driver_and_model_on_micropython():
    mounts = ("protocol", "firmware", (sim.mpvm.ROOT + "/sim/fakes", "/lib/sim/fakes"),
              (sim.mpvm.ROOT + "/sim/devices", "/lib/sim/devices"))
    out = json.loads(sim.mpvm.run(VM_SCRIPT, mounts=mounts).strip().splitlines()[-1])
    [[start, f, sf, bw, p, data, toa, lorawan]] = out["tx"]
    assert (sf, bw, p, bytes(data), lorawan) == (9, 125000, 16, b"uplink frame", True)
    assert abs(f - 868100000) <= 31
    assert toa == airtime.time_on_air_us(12, 9, 125000)
    assert out["tx_done"] == [start + -(-toa // 1000), "tx_done", 0]
    w = out["window"]
    assert abs(w[0] - 869525000) <= 31 and w[1:3] == [12, 125000]
    assert w[4] >= 300  # whole symbols covering the 300 ms asked for
    assert out["rx"][1:3] == ["rx", "downlink!"] and abs(out["rx"][3] + 93) <= 1
    assert out["rx"][4] == -4.75
    assert out["lbt"] == -101
    assert out["refused"] == []
    assert "0x42 reads 0x00" in out["dead"]

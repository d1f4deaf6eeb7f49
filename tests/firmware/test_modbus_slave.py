"""The meter's Modbus RTU slave on virtual time: the fake UART wired to the paced RS-485 line
model, the DE pin watched at every poll. Requests are framed by protocol/ as any master would;
replies are checked byte for byte, with their wire timing (t3.5 before answering, DE around the
frame), exceptions, broadcast, config applied after the reply, the relay's arming, and fuzzing.
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.mpvm
from firmware.modbus_slave import ModbusSlave
from firmware.nvs_store import NvsStore
from firmware.ticks import TICKS_PERIOD
from protocol.modbus import pdu as P
from protocol.modbus import master as MA
from protocol.modbus import registers as M
from protocol.modbus import rtu as R
from sim.fakes import esp32, machine
from sim.rs485 import LineFaults, PacedLine

DE = 4
VMLIB = (sim.mpvm.ROOT + "/tests/firmware/vmlib", "/lib/vmlib")  # uart_line.Line on the VM
VALUES = {
    "voltage_l1": 231.5, "voltage_l2": 229.0, "voltage_l3": 232.25,
    "current_l1": 1.25, "current_l2": 0.5, "current_l3": 2.0,
    "power_l1": 270.5, "power_l2": 110.0, "power_l3": -436.0,
    "power_factor_l1": 0.5, "power_factor_l2": 0.75, "power_factor_l3": -0.875,
    "frequency": 49.98, "power": -55.5,
    "energy_import_wh": (1 << 40) + 12345,  # past float32's exact range on purpose
    "energy_export_wh": 987654321,
}


class Source:
    """The data-source interface as the meter application provides it."""

    def __init__(self, values=VALUES):
        self.values = dict(values)
        self.closed = True
        self.relay_calls = []

    def measurements(self):
        return self.values

    def relay_closed(self):
        return self.closed

    def set_relay(self, closed):
        self.relay_calls.append(closed)
        self.closed = closed


class Bench:
    """One slave on a paced line, in virtual microseconds (starting just before the 2**30 tick
    wrap, so every transaction also crosses it)."""

    def __init__(self, store=None, reply_delay_us=0, source=None, t0=TICKS_PERIOD - 200_000,
                 faults=None):
        self.t = t0
        self.source = source or Source()
        self.line = PacedLine(lambda: self.t, lambda: machine.level(DE) == 1,
                              lambda: (self.slave.line()[0], self.slave.char_bits), faults)
        machine.uart(1).attach(self.line)
        self.uart = machine.UART(1, 9600, tx=17, rx=16)
        self.slave = ModbusSlave(self.uart, machine.Pin(DE, machine.Pin.OUT), self.source,
                                 store=store, serial=20260042, firmware=(1, 2, 3),
                                 reply_delay_us=reply_delay_us)
        self.de_log = [(self.t, machine.level(DE))]
        self.rx = bytearray()
        self.rx_times = []
        self.wake = self.t
        self._poll()

    def _poll(self):
        wake = self.slave.poll(self.t % TICKS_PERIOD)
        d = ((wake - self.t + TICKS_PERIOD // 2) % TICKS_PERIOD) - TICKS_PERIOD // 2
        assert d >= 0
        self.wake = self.t + d
        lvl = machine.level(DE)
        if lvl != self.de_log[-1][1]:
            self.de_log.append((self.t, lvl))
        sent = self.line.take_sent(self.t)
        if sent:
            self.rx += sent
            self.rx_times.append(self.t)

    def run_until(self, t_end):
        while self.t < t_end:
            nxt = self.wake
            ev = self.line.next_event()
            if ev is not None and ev < nxt:
                nxt = ev
            self.t = max(self.t + 1, min(nxt, t_end))
            self._poll()

    def send(self, adu, gap_at=None, gap_us=0):
        """Put a frame on the line now (optionally with a pause of gap_us after gap_at bytes);
        returns the time its last byte arrives."""
        if gap_at is None:
            self.line.from_host(adu, self.t)
        else:
            self.line.from_host(adu[:gap_at], self.t)
            self.run_until(self.t + gap_at * self.slave.char_us + gap_us)
            self.line.from_host(adu[gap_at:], self.t)
        baud = self.slave.line()[0]
        return self.t + R.frame_time_us(len(adu) - (gap_at or 0), baud, self.slave.char_bits)

    def transact(self, adu, **kw):
        """Send a frame and run until the line is quiet again; returns the reply bytes."""
        self.rx = bytearray()
        end = self.send(adu, **kw)
        t35 = R.t35_us(self.slave.line()[0], self.slave.char_bits)
        self.run_until(end + t35 + self.slave.reply_delay_us + 10)
        while self.slave.busy() or self.line.next_event() is not None:
            self.run_until(self.t + self.slave.char_us)
        self.request_end = end
        return bytes(self.rx)


@pytest.fixture(autouse=True)
def fresh_board():
    machine.uart(1).detach()
    yield


def request(address, req):
    return R.encode_frame(address, MA.encode_request(req))


def reply(bench, address, req):
    adu = bench.transact(request(address, req))
    if not adu:
        return None
    a, pdu = R.decode_frame(adu)
    assert a == address
    return MA.decode_response(pdu, req)


# ---------------------------------------------------------------- reads


def test_reads_the_sdm630_float_block_exact_energy_and_identity():
    b = Bench()
    resp = reply(b, 1, P.ReadRequest(4, 0x0000, 80))
    got = M.decode_block(0, resp.registers)
    for name in ("voltage_l1", "current_l1", "power_l1", "power_l3", "power_factor_l3", "power"):
        assert got[name] == VALUES[name]
    assert got["frequency"] == pytest.approx(49.98, rel=1e-6)
    assert got["energy_import_kwh"] == pytest.approx(VALUES["energy_import_wh"] / 1000, rel=1e-6)
    energy = M.decode_block(0x1000, reply(b, 1, P.ReadRequest(4, 0x1000, 8)).registers)
    assert energy == {"energy_import_wh": VALUES["energy_import_wh"],
                      "energy_export_wh": VALUES["energy_export_wh"]}
    ident = M.decode_block(0x2000, reply(b, 1, P.ReadRequest(4, 0x2000, 7)).registers)
    assert ident == {"map_version": M.MAP_VERSION, "model": M.MODEL_AMI_METER,
                     "serial": 20260042, "firmware_major": 1, "firmware_minor": 2,
                     "firmware_patch": 3}
    cfg = reply(b, 1, P.ReadRequest(3, 0x3000, 5)).registers
    assert tuple(cfg) == (1, 96, 0, 0, 1)
    assert b.slave.requests == 4 and b.slave.responses == 4 and b.slave.exceptions == 0


@pytest.mark.parametrize("req, code", [
    (P.ReadRequest(4, 0x0001, 2), 2),  # splits a float
    (P.ReadRequest(4, 0x0000, 3), 2),
    (P.ReadRequest(4, 0x1001, 2), 2),  # splits the u64
    (P.ReadRequest(4, 0x5000, 2), 2),
    (P.ReadRequest(3, 0x0000, 2), 2),  # Eastron's holding floats are not ours
    (P.ReadRequest(4, 0x3000, 1), 2),  # config is holding, not input
    (P.WriteSingle(0x2000, 1), 2),  # identity is read-only
    (P.WriteSingle(0x3000, 0), 3),  # address 0
    (P.WriteSingle(0x3001, 9600), 3),  # baud is / 100
    (P.WriteSingle(0x3004, 1), 3),  # relay without arming
    (P.WriteMultiple(0x3003, [0xA55A, 1]), 3),  # arm and switch in one request
])
def test_exceptions(req, code):
    b = Bench()
    resp = reply(b, 1, req)
    assert resp == P.ExceptionResponse(req.function, code)
    assert b.slave.exceptions == 1 and b.slave.last_exception == code
    assert b.source.relay_calls == []


@pytest.mark.parametrize("pdu, code", [
    (bytes.fromhex("0500010000"), 1),  # write coil: not implemented
    (bytes.fromhex("2b0e0100"), 1),  # read device identification
    (bytes.fromhex("0400000000"), 3),  # quantity 0
    (bytes.fromhex("0400000080"), 3),  # quantity 128
    (bytes.fromhex("04FFFF0002"), 2),  # runs past 0xFFFF
])
def test_exceptions_from_the_pdu_codec(pdu, code):
    b = Bench()
    adu = b.transact(R.encode_frame(1, pdu))
    assert R.decode_frame(adu) == (1, bytes((pdu[0] | 0x80, code)))


def test_bad_crc_and_other_addresses_get_no_answer_and_are_counted():
    b = Bench()
    good = request(1, P.ReadRequest(4, 0, 2))
    bad = good[:-1] + bytes((good[-1] ^ 0x01,))
    assert b.transact(bad) == b""
    assert b.transact(request(2, P.ReadRequest(4, 0, 2))) == b""
    assert b.slave.bad_crc == 1 and b.slave.ignored == 1 and b.slave.requests == 0
    assert b.transact(good) != b""  # still serving


# ---------------------------------------------------------------- framing and DE timing


def test_a_request_glued_to_another_slaves_reply_is_still_served():
    b = Bench()
    other = R.encode_frame(7, P.encode_response(P.ReadResponse(4, [1, 2, 3])))
    req = request(1, P.ReadRequest(4, 0x2000, 7))
    adu = b.transact(other + req)  # the master did not leave t3.5 after slave 7's reply
    assert R.decode_frame(adu)[0] == 1
    assert (b.slave.bad_crc, b.slave.resynced, b.slave.responses) == (1, 1, 1)
    assert b.transact(other[:-1] + request(2, P.ReadRequest(4, 0, 2))) == b""  # not for us
    assert b.slave.resynced == 1


def test_reply_waits_t35_and_de_brackets_every_byte():
    b = Bench(reply_delay_us=5000)
    adu = b.transact(request(1, P.ReadRequest(4, 0, 80)))
    assert len(adu) == 5 + 160 and b.line.lost_de == 0
    tc = b.slave.char_us  # 8N1 at 9600: 10 bits
    assert tc == 1042
    first_start, _ = b.line.tx_log[0]
    _, last_end = b.line.tx_log[-1]
    t35 = R.t35_us(9600, 10)
    assert first_start >= b.request_end + t35 + 5000  # silence t3.5, then the turnaround
    (up, lvl1), (down, lvl0) = b.de_log[-2:]
    assert (lvl1, lvl0) == (1, 0)
    assert up <= first_start  # DE before the first start bit
    assert down >= last_end + tc  # ... and held one character after the last stop bit
    assert down <= last_end + 3 * tc  # not hogging the bus either
    for (s0, e0), (s1, e1) in zip(b.line.tx_log, b.line.tx_log[1:]):
        assert s1 == e0 and tc - 1 <= e1 - s1 <= tc  # back to back, paced at the baud


def test_a_gap_over_t15_inside_a_frame_spoils_it_and_t35_separates_frames():
    b = Bench()
    req = request(1, P.ReadRequest(4, 0, 2))
    tc = b.slave.char_us
    assert b.transact(req, gap_at=3, gap_us=2 * tc) == b""  # 2 characters of silence
    assert b.slave.counters()["gap_errors"] == 1
    assert b.transact(req, gap_at=3, gap_us=tc) != b""  # 1 character: still one frame
    # two requests back to back without t3.5 between them are one bad frame; only the second
    # is answered, found at its end (resync)
    assert R.decode_frame(b.transact(req + req))[0] == 1
    assert b.slave.bad_crc == 1 and b.slave.resynced == 1 and b.slave.responses == 2


def test_bytes_heard_while_transmitting_are_dropped():
    b = Bench()
    b.line.from_host(request(1, P.ReadRequest(4, 0, 80)), b.t)
    b.run_until(b.t + 30_000)  # the reply is on the line now
    assert machine.level(DE) == 1
    b.line.from_host(b"\x01\x02\x03", b.t)
    b.run_until(b.t + 400_000)
    assert b.slave.dropped_rx + b.line.lost_rx == 3
    assert b.slave.bad_crc == 0 and b.slave.frame_errors == 0


# ---------------------------------------------------------------- config, broadcast, relay


def test_address_change_applies_after_the_reply_and_persists():
    nvs = NvsStore(esp32.NVS("mbtest1"))
    b = Bench(store=nvs)
    req = P.WriteSingle(0x3000, 17)
    assert reply(b, 1, req) == req  # answered from the old address
    assert b.slave.address == 17
    assert b.transact(request(1, P.ReadRequest(4, 0, 2))) == b""
    assert reply(b, 17, P.ReadRequest(3, 0x3000, 1)).registers == (17,)
    again = Bench(store=NvsStore(esp32.NVS("mbtest1")))  # reboot
    assert again.slave.address == 17


def test_baud_change_answers_at_the_old_baud_then_switches():
    b = Bench(store=NvsStore(esp32.NVS("mbtest2")))
    req = P.WriteMultiple(0x3001, [192, 1])  # 19200 8E1
    assert reply(b, 1, req) == P.WriteMultipleResponse(0x3001, 2)
    start, end = b.line.tx_log[0][0], b.line.tx_log[-1][1]
    assert end - start == R.frame_time_us(8, 9600, 10)  # the reply went at 9600 8N1
    assert b.uart.baudrate == 19200 and b.slave.line() == (19200, "E", 1)
    assert b.slave.char_us == R.char_time_us(19200, 11)
    resp = reply(b, 1, P.ReadRequest(3, 0x3000, 3))
    assert resp.registers == (1, 192, 1)
    start, end = b.line.tx_log[-11][0], b.line.tx_log[-1][1]
    assert end - start == R.frame_time_us(11, 19200, 11)


def test_broadcast_writes_are_applied_silently():
    b = Bench()
    assert b.transact(request(0, P.WriteSingle(0x3003, M.RELAY_ARM_MAGIC))) == b""
    assert b.transact(request(0, P.WriteSingle(0x3004, 0))) == b""
    assert b.source.relay_calls == [False]
    assert b.transact(request(0, P.WriteSingle(0x3000, 9))) == b""  # same address for all: no
    assert b.slave.address == 1
    assert b.transact(request(0, P.WriteSingle(0x3001, 48))) == b""
    assert b.slave.line()[0] == 4800
    assert b.transact(request(0, P.ReadRequest(4, 0, 2))) == b""  # reads: nothing to answer
    assert b.slave.broadcasts == 5 and b.slave.responses == 0 and not b.line.tx_log


def test_relay_needs_the_arm_in_time_and_once():
    b = Bench()
    assert reply(b, 1, P.WriteSingle(0x3004, 0)) == P.ExceptionResponse(6, 3)
    assert reply(b, 1, P.WriteSingle(0x3003, M.RELAY_ARM_MAGIC)) is not None
    assert reply(b, 1, P.ReadRequest(3, 0x3003, 2)).registers == (1, 1)  # armed, closed
    assert reply(b, 1, P.WriteSingle(0x3004, 0)) == P.WriteSingle(0x3004, 0)
    assert b.source.relay_calls == [False]
    assert reply(b, 1, P.ReadRequest(3, 0x3003, 2)).registers == (0, 0)  # used up, open
    assert reply(b, 1, P.WriteSingle(0x3004, 1)) == P.ExceptionResponse(6, 3)
    reply(b, 1, P.WriteSingle(0x3003, M.RELAY_ARM_MAGIC))
    b.run_until(b.t + M.RELAY_ARM_WINDOW_S * 1_000_000)
    assert reply(b, 1, P.WriteMultiple(0x3004, [1])) == P.ExceptionResponse(16, 3)  # too late
    assert b.source.relay_calls == [False] and not b.source.closed


def test_a_failing_data_source_answers_device_failure():
    class Broken(Source):
        def measurements(self):
            raise OSError("metering chip not answering")

    b = Bench(source=Broken())
    assert reply(b, 1, P.ReadRequest(4, 0, 2)) == P.ExceptionResponse(4, P.DEVICE_FAILURE)
    assert reply(b, 1, P.ReadRequest(4, 0x1000, 4)) == P.ExceptionResponse(4, P.DEVICE_FAILURE)


# ---------------------------------------------------------------- the meter's own data source


def test_meter_source_serves_the_chip_readings_and_only_committed_energy():
    from firmware.drivers.atm90e32 import ATM90E32
    from firmware.energy_register import EnergyRegister
    from firmware.meter_source import MeterSource
    from sim.devices.atm90e32 import ATM90E32 as Chip

    model = machine.spi(2).attach(5, Chip(voltage=(230.0, 231.0, 232.0), current=(10.0, 0.0, 2.0),
                                          pf=(1.0, 1.0, -1.0)))
    try:
        chip = ATM90E32(machine.SPI(2, 200000, polarity=1, phase=1),
                        machine.Pin(5, machine.Pin.OUT), {"phases": 3})
        chip.configure()
        reg = EnergyRegister(esp32.NVS("mstest"))
        src = MeterSource(chip, reg, machine.Pin(26, machine.Pin.OUT, value=1))
        src.update(0)
        for k in range(1, 401):  # 400 s at 2300 W import on L1, 464 W export on L3
            model.advance(1.0)
            src.update(k * 1000)
        live_imp = reg.live()[0] // 1000
        assert 0 <= live_imp - reg.import_wh() < 50  # served = committed, one step behind at most
        b = Bench(source=src)
        energy = M.decode_block(0x1000, reply(b, 1, P.ReadRequest(4, 0x1000, 8)).registers)
        assert energy == {"energy_import_wh": reg.import_wh(), "energy_export_wh": reg.export_wh()}
        got = M.decode_block(0, reply(b, 1, P.ReadRequest(4, 0, 0x48)).registers)
        assert got["voltage_l1"] == pytest.approx(230.0) and got["frequency"] == pytest.approx(50.0)
        assert got["power_l1"] == pytest.approx(2300, rel=1e-3)
        assert got["power_l3"] == pytest.approx(-464, rel=1e-3) and got["power_factor_l3"] < 0
        reply(b, 1, P.WriteSingle(0x3003, M.RELAY_ARM_MAGIC))
        assert reply(b, 1, P.WriteSingle(0x3004, M.RELAY_OPEN)) == P.WriteSingle(0x3004, 0)
        assert machine.level(26) == 0 and not src.relay_closed()
    finally:
        machine.spi(2).detach(5)


# ---------------------------------------------------------------- injected line faults


def test_line_faults_noise_silence_garbage():
    req = request(1, P.ReadRequest(4, 0x2000, 7))
    noisy = Bench(faults=LineFaults(noise=1.0, seed=3))
    adu = noisy.transact(req)
    assert len(adu) == 5 + 14
    with pytest.raises(R.CrcError):
        R.decode_frame(adu)
    silent = Bench(faults=LineFaults(silence=1.0))
    assert silent.transact(req) == b"" and silent.slave.responses == 1
    garbled = Bench(faults=LineFaults(garbage=1.0, seed=1))
    adu = garbled.transact(req)
    good = Bench().transact(req)
    assert adu.startswith(good) and 1 <= len(adu) - len(good) <= 8
    gap = garbled.rx_times[-1] - garbled.line.tx_log[len(good) - 1][1]
    assert gap >= R.t35_us(9600, 10)  # a separate burst, after the reply's silence
    assert (noisy.line.faults.noisy, silent.line.faults.silenced, garbled.line.faults.garbled) \
        == (1, 1, 1)
    with pytest.raises(ValueError):
        LineFaults(noise=1.5)


# ---------------------------------------------------------------- fuzzing


def expected_reply(pdu):
    """What the slave must answer a good-CRC, addressed-to-it pdu with (no relay arming)."""
    try:
        req = P.decode_request(pdu)
    except P.ModbusError as e:
        exc = P.exception_for(pdu, e)
        return None if exc is None else P.encode_response(exc)
    if isinstance(req, P.ReadRequest):
        code = M.check_read(req.function, req.address, req.count)
        if code:
            return P.encode_response(P.ExceptionResponse(req.function, code))
        return "read"
    values = (req.value,) if isinstance(req, P.WriteSingle) else req.values
    code = M.check_write(req.address, values)
    if code == 0 and req.address <= M.RELAY_ADDRESS < req.address + len(values):
        code = 3
    if code:
        return P.encode_response(P.ExceptionResponse(req.function, code))
    return "write"


pdus = st.one_of(
    st.binary(min_size=1, max_size=20),
    st.tuples(st.sampled_from([3, 4]), st.integers(0, 0x3010), st.integers(0, 130)).map(
        lambda t: struct.pack(">BHH", *t)),
    st.tuples(st.integers(0x2FF0, 0x3008), st.integers(0, 0xFFFF)).map(
        lambda t: struct.pack(">BHH", 6, *t)),
    st.tuples(st.integers(0x2FFE, 0x3006), st.lists(st.integers(0, 260), min_size=1, max_size=6))
    .map(lambda t: struct.pack(">BHHB", 16, t[0], len(t[1]), 2 * len(t[1]))
         + struct.pack(">%dH" % len(t[1]), *t[1])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pdu=pdus)
def test_random_requests_get_the_right_answer(pdu):
    b = Bench()
    want = expected_reply(pdu)
    adu = b.transact(R.encode_frame(1, pdu))
    if want is None:
        assert adu == b""
        return
    address, got = R.decode_frame(adu)
    assert address == 1
    if want == "read":
        resp = MA.decode_response(got, P.decode_request(pdu))
        assert isinstance(resp, P.ReadResponse)
    elif want == "write":
        assert not got[0] & 0x80
    else:
        assert got == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, 6000)),
                       max_size=12))
def test_garbage_never_crashes_and_the_slave_keeps_serving(chunks):
    b = Bench()
    for data, pause in chunks:
        b.line.from_host(data, b.t)
        b.run_until(b.t + pause + len(data) * b.slave.char_us)
    b.run_until(b.t + 400_000)  # whatever it answered has left
    while b.slave.busy():
        b.run_until(b.t + 10_000)
    b.rx = bytearray()
    if b.slave.address != 1 or b.slave.line()[0] != 9600:
        return  # garbage that is a valid config write to us, or a broadcast one: fine
    assert b.transact(request(1, P.ReadRequest(4, 0x2000, 7))) != b""
    c = b.slave.counters()
    assert all(v >= 0 for v in c.values())


@settings(max_examples=100, deadline=None)
@given(pdu=st.binary(min_size=1, max_size=12), bit=st.integers(0, 200))
def test_any_bit_flip_is_silent_and_counted(pdu, bit):
    b = Bench()
    adu = bytearray(R.encode_frame(1, pdu))
    adu[bit // 8 % len(adu)] ^= 1 << (bit % 8)
    assert b.transact(bytes(adu)) == b""
    assert b.slave.bad_crc + b.slave.ignored == 1 or adu[0] == 0  # broadcast flip: silent too


# ---------------------------------------------------------------- on MicroPython


VM_SCRIPT = """
import binascii
from sim.fakes import machine
from firmware.modbus_slave import ModbusSlave

from vmlib.uart_line import Line

class Source:
    def measurements(self):
        return {"voltage_l1": 231.5, "energy_import_wh": %(wh)d, "energy_export_wh": 7}
    def relay_closed(self):
        return True
    def set_relay(self, closed):
        pass

line = machine.uart(1).attach(Line(lambda: machine.level(4)))
slave = ModbusSlave(machine.UART(1, 9600), machine.Pin(4, machine.Pin.OUT), Source(),
                    serial=123456, firmware=(1, 2, 3))
t = (1 << 30) - 3000
slave.poll(t)
for req in %(reqs)r:
    line.inbox = binascii.unhexlify(req)
    for i in range(400):
        t = slave.poll(t)
    print(binascii.hexlify(line.out).decode(), machine.level(4))
    line.out = b""
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_the_slave_runs_on_micropython():
    wh = (1 << 40) + 5
    reqs = [request(1, P.ReadRequest(4, 0x1000, 8)).hex(), request(1, P.ReadRequest(4, 0, 2)).hex(),
            request(1, P.ReadRequest(4, 0x2000, 7)).hex(), request(1, P.ReadRequest(4, 1, 2)).hex()]
    out = sim.mpvm.run(VM_SCRIPT % {"wh": wh, "reqs": reqs},
                       mounts=("protocol", "firmware",
                               (sim.mpvm.ROOT + "/sim/fakes", "/lib/sim/fakes"), VMLIB))
    lines = [ln.split() for ln in out.splitlines()]
    assert [de for _, de in lines] == ["0"] * 4
    got = [R.decode_frame(bytes.fromhex(h)) for h, _ in lines]
    assert M.decode_u64(MA.decode_response(got[0][1]).registers[:4]) == wh
    assert M.decode_float32(*MA.decode_response(got[1][1]).registers) == 231.5
    assert M.decode_block(0x2000, MA.decode_response(got[2][1]).registers)["serial"] == 123456
    assert MA.decode_response(got[3][1]) == P.ExceptionResponse(4, 2)


METER_VM_SCRIPT = """
import binascii
from sim.fakes import machine, esp32
from sim.devices.atm90e32 import ATM90E32 as Chip
from firmware.drivers.atm90e32 import ATM90E32
from firmware.energy_register import EnergyRegister
from firmware.meter_source import MeterSource
from firmware.modbus_slave import ModbusSlave

from vmlib.uart_line import Line

model = machine.spi(2).attach(5, Chip(voltage=(230.0, 230.0, 230.0), current=(10.0, 0.0, 0.0)))
chip = ATM90E32(machine.SPI(2, 200000, polarity=1, phase=1), machine.Pin(5, machine.Pin.OUT))
chip.configure()
reg = EnergyRegister(esp32.NVS("energy"))
src = MeterSource(chip, reg, machine.Pin(26, machine.Pin.OUT, value=1))
src.update(0)
for k in range(1, 121):
    model.advance(1.0)
    src.update(k * 1000)
line = machine.uart(1).attach(Line())
slave = ModbusSlave(machine.UART(1, 9600), machine.Pin(4, machine.Pin.OUT), src, serial=1)
t = 0
slave.poll(t)
line.inbox = binascii.unhexlify(%r)
for i in range(200):
    t = slave.poll(t)
print(binascii.hexlify(line.out).decode(), reg.import_wh(), reg.live()[0])
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_meter_source_and_slave_on_micropython():
    req = request(1, P.ReadRequest(4, 0x1000, 4))
    out = sim.mpvm.run(METER_VM_SCRIPT % req.hex(),
                       mounts=("protocol", "firmware",
                               (sim.mpvm.ROOT + "/sim/fakes", "/lib/sim/fakes"), VMLIB,
                               (sim.mpvm.ROOT + "/sim/devices", "/lib/sim/devices"))).split()
    served, live_mwh = int(out[1]), int(out[2])
    assert live_mwh == pytest.approx(2300 * 120 / 3.6, rel=0.01)  # 76.7 Wh in 120 s
    assert served == 50  # one 50 Wh step committed; the rest is not served yet
    address, pdu = R.decode_frame(bytes.fromhex(out[0]))
    assert M.decode_u64(MA.decode_response(pdu).registers) == served


def test_a_uart_that_never_reports_txdone_does_not_hold_de_for_ever():
    b = Bench()
    b.uart.txdone = lambda: False
    b.line.from_host(request(1, P.ReadRequest(4, 0, 2)), b.t)
    b.run_until(b.t + 60_000)
    assert machine.level(DE) == 1  # waiting for the UART
    b.run_until(b.t + 200_000)
    assert machine.level(DE) == 0 and not b.slave.busy()

"""HIL: the real gateway process polls emulated AMI meters (the meter firmware's Modbus slave
and metering chain, `python -m sim meter`) over pseudo-terminal RS-485 buses at 19200 baud and
publishes to a real mosquitto; and an independent Modbus master (minimalmodbus) reads a meter.

Bus 1: meters 1, 2, 3 in one meter process (one line model: each hears the others as on a real
bus), 3600, 4500 and 5400 W. Bus 2: meter 4 alone, 1800 W, a bit flipped in 15 % of its replies (line
noise). Two gateway runs, each with its own data dir and bus names so their records are told
apart:
- run "clean": polls buses 1 and 2 back to back for RUN_S, then a clean stop (SIGTERM). The
  final stats.json counts the polls per meter; what was still queued at the stop is published
  by a second start of the gateway on the same data dir without the buses (the durable
  queue's promise), so every poll must then be on MQTT exactly once.
- run "dead": polls bus 1 as 1, 9, 2, 3, where no meter answers 9, the same way.
Each test judges one aspect of these runs (one fixture: ~17 s for both).
"""

import os
import struct
import time

import pytest

from gateway.commands.auth import sign
from gateway.modbus.readings import meter_urn
from protocol.modbus import registers as regmap
from hil_tests.meter_bus_rig import (FREQUENCY_HZ, POWER_FACTOR, MeterBus, Truth, bus_toml,
                                     expected_records, polls, voltage)
from hil_tests.meter_bus_rig import lone_meter as rig_lone_meter
from hil_tests.rig import MOSQUITTO, Broker, HilGateway, Readings

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

BAUD = 19200
RUN_S = 6.0
POINTS = ["voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
          "power_l1", "power_l2", "power_l3", "power", "frequency", "energy_import_kwh",
          "energy_import_wh", "energy_export_wh"]
LIVE_W = {1: 3600.0, 2: 4500.0, 3: 5400.0}  # one process; loads of 1 to 1.5 Wh a second, so
LIVE = tuple(LIVE_W)  # the energy moves, and different ones so a mix-up of meters shows
NOISY = 4  # alone on a second bus, 1800 W, a bit flipped in 15 % of its replies
NOISY_W = 1800.0
DEAD = 9
CLEAN, NOISE, DEAD_BUS = "rs485-1", "rs485-2", "rs485-3"  # bus names: run "clean" polls the
# first two, run "dead" the first bus again (its meters 1-3 and the dead 9) under the third name
TIMEOUT_S = 0.2  # the buses' reply timeout (a reply of 40 registers takes 44 ms at 19200 baud)
DEAD_TIMEOUT_S = 0.3  # the dead meter's own timeout, larger so its cost stands out of jitter
RETRIES = 1
BACKOFF = (0.5, 2.0)  # the dead meter's back-off: 0.5 s doubling to 2 s
# margin on "a dead meter delays the others by no more than its timeout": the gateway's event
# loop shares 2 cores with the meter processes, the pty relay thread and mosquitto; a slow wake
# of any of them can stretch one poll by tens of ms beyond what the clean run happened to see
DELAY_MARGIN_S = 0.15


def _f32(x):
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _start_gateway(workdir, broker, buses):
    """The gateway process with these [[modbus.bus]] tables (and no LoRaWAN device);
    (the gateway, its config without the buses)."""
    os.makedirs(workdir)
    registry = os.path.join(workdir, "devices.toml")
    open(registry, "w").close()
    gw = HilGateway(workdir, registry, "mqtt://127.0.0.1:%d" % broker.port)
    with open(gw.config) as f:
        base = f.read()
    with open(gw.config, "w") as f:
        f.write(base + "".join(buses))
    gw.start()
    return gw, base


def _gateway_run(workdir, broker, readings, buses):
    """Start the gateway with these [[modbus.bus]] tables, let it poll RUN_S, stop it cleanly,
    then drain its queue; (polls of these buses on MQTT, the final stats.json, the logs)."""
    gw, base = _start_gateway(workdir, broker, buses)
    try:
        time.sleep(RUN_S)
    finally:
        rc = gw.stop()
    assert rc == 0, gw.all_logs()[-3000:]
    stats = gw.stats()  # the final snapshot, written at the clean stop
    for name, b in stats["modbus"].items():
        assert b["bus"]["pending_items"] == 0, (name, b)
    # what was still queued at the stop: a start on the same data dir without the buses
    # publishes it (the durable queue's promise), and nothing else
    with open(gw.config, "w") as f:
        f.write(base)
    gw.start()
    try:
        gw.stats_after(lambda s: s["queue"]["records"] == 0, 20, "the queue drained")
    finally:
        assert gw.stop() == 0
    time.sleep(0.3)  # the subscriber's last PUBLISH
    mine = tuple("urn:dev:modbus:%s." % name for name in stats["modbus"])
    return [p for p in polls(readings) if p["bn"].startswith(mine)], stats, gw.all_logs()


class Run:
    """One gateway run: the polls on MQTT of its buses, its final stats, its logs."""

    def __init__(self, workdir, broker, readings, buses):
        self.polls, self.stats, self.logs = _gateway_run(workdir, broker, readings, buses)

    def of(self, bus, address):
        bn = meter_urn(bus, address)
        return [p for p in self.polls if p["bn"] == bn]

    def meter_stats(self, bus, address):
        return self.stats["modbus"][bus]["meters"][str(address)]


@pytest.fixture(scope="module")
def mqtt(tmp_path_factory):
    """mosquitto and a subscriber for the module: (broker, readings)."""
    broker = Broker(tmp_path_factory.mktemp("meter-bus-broker")).start()
    try:
        readings = Readings(broker.port, client_id="hil-meter-bus")
        try:
            yield broker, readings
        finally:
            readings.stop()
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, mqtt):
    tmp = str(tmp_path_factory.mktemp("meter-bus"))
    broker, readings = mqtt
    main, noisy = MeterBus(2), MeterBus(2)
    out = {"offset": time.time() - time.monotonic()}
    try:
        main.start_meters(LIVE_W, BAUD, 1)
        noisy.start_meters({NOISY: NOISY_W}, BAUD, 1, "--noise", "0.15", "--seed", "7")
        out["meters"] = {**main.meters, **noisy.meters}
        live = [(a, POINTS, {}) for a in LIVE]
        common = dict(timeout_s=TIMEOUT_S, retries=RETRIES, poll_interval_s=0.0)
        out["clean"] = Run(os.path.join(tmp, "clean"), broker, readings, [
            bus_toml(CLEAN, main.master_path, BAUD, live, **common),
            bus_toml(NOISE, noisy.master_path, BAUD, [(NOISY, POINTS, {})], **common)])
        out["dead"] = Run(os.path.join(tmp, "dead"), broker, readings, [
            bus_toml(DEAD_BUS, main.master_path, BAUD,
                     [live[0], (DEAD, POINTS, {"timeout_s": DEAD_TIMEOUT_S})] + live[1:],
                     backoff_min_s=BACKOFF[0], backoff_max_s=BACKOFF[1], **common)])
        out["meter_counters"] = {**main.stop_meters(), **noisy.stop_meters()}
        yield out
    finally:
        main.close()
        noisy.close()


def _check_values(poll, truth, partial=False):
    """Every record of a poll against the meter's truth; returns {register name: value}."""
    want = expected_records(POINTS)
    got = poll["records"]
    names = [(n, u) for n, u, _ in want]
    if partial:  # a read lost to noise twice leaves its values out, the rest stays in order
        it = iter(names)
        assert all((n, u) in it for n, u, _ in got), (got, names)
    else:
        assert [(n, u) for n, u, _ in got] == names, got
    by = {}
    for (n, u, v) in got:
        reg = next(r for sn, su, r in want if (sn, su) == (n, u))
        by[reg.name] = v
    # one OBIS code per record, in record order
    regs = {r.name: r for _, _, r in want}
    assert poll["modbus"]["obis"] == [regs[name].obis for name in by], poll["modbus"]
    pw = truth.phase_power_w()
    for i in range(3):
        n = i + 1
        if "voltage_l%d" % n in by:
            assert by["voltage_l%d" % n] == _f32(voltage(i)), (poll["t"], by)
        if "current_l%d" % n in by:
            amps = pw / (voltage(i) * POWER_FACTOR)
            assert abs(by["current_l%d" % n] - amps) <= 0.0015, (n, amps, by)
        if "power_l%d" % n in by:
            assert abs(by["power_l%d" % n] - pw) <= 0.01, (n, pw, by)
    if "power" in by:
        assert abs(by["power"] - 3 * pw) <= 0.03, (3 * pw, by)
    if "frequency" in by:
        assert by["frequency"] == FREQUENCY_HZ, by
    if "energy_import_wh" in by:
        wh = by["energy_import_wh"]
        lo, hi = truth.import_wh_range(poll["t"])
        assert isinstance(wh, int) and lo <= wh <= hi, (wh, lo, hi, poll["t"])
        if "energy_import_kwh" in by:
            # the float kWh is the exact Wh / 1000, read one transaction earlier; reads of two
            # blocks are not one snapshot: one commit can fall between them
            k = round(by["energy_import_kwh"] * 1000)
            assert by["energy_import_kwh"] == _f32(k / 1000), by
            assert 0 <= wh - k <= truth.commit_jump_wh(), (wh, by)
    if "energy_export_wh" in by:  # the load only imports
        assert by["energy_export_wh"] == 0, by
    return by


def _check_meter(run, bus, address, rig, partial=False):
    """A meter's polls on MQTT: in time order, none twice, each with the meter's values, energy
    never going backwards and, over the run, going up."""
    ps = run.of(bus, address)
    assert ps, "no poll of meter %d reached MQTT" % address
    truth = Truth(rig["meters"][address], address, rig["offset"])
    times = [p["t"] for p in ps]
    assert len(set(times)) == len(times), "a poll of meter %d arrived twice" % address
    assert times == sorted(times), "meter %d polls out of order" % address
    energy = []
    for p in ps:
        assert p["modbus"]["bus"] == bus and p["modbus"]["address"] == address, p
        by = _check_values(p, truth, partial)
        if "energy_import_wh" in by:
            energy.append(by["energy_import_wh"])
    assert energy == sorted(energy), "energy went backwards on meter %d: %s" % (address, energy)
    if not partial:  # the load drew >= 3600 W x RUN_S: several Wh, committed every 1 Wh
        assert energy[-1] - energy[0] >= RUN_S * truth.phase_power_w() * 3 / 3600 - 3, energy
    return ps


def test_every_poll_of_several_meters_reaches_mqtt_once_with_the_meters_values(rig):
    """Meters 1, 2, 3 on one bus (and the noisy 4 on another): each poll the gateway counted
    is on MQTT exactly once, under the meter's URN, with the SenML names, units and OBIS codes
    of the register map, the board's voltages and frequency, the load's currents and powers,
    and import energy that never goes backwards, follows what the load drew, and no export."""
    for run, buses in ((rig["clean"], {CLEAN: LIVE, NOISE: (NOISY,)}),
                       (rig["dead"], {DEAD_BUS: LIVE})):
        assert set(run.stats["modbus"]) == set(buses)
        urns = set()
        for bus, addrs in buses.items():
            for a in addrs:
                ps = _check_meter(run, bus, a, rig, partial=(a == NOISY))
                st = run.meter_stats(bus, a)
                assert len(ps) == st["polls"], (bus, a, len(ps), st)  # none lost, none twice
                assert st["polls"] >= 8, (bus, a, st)
                urns.add(meter_urn(bus, a))
                if a != NOISY:  # a clean line: every request answered at the first attempt
                    assert st["retries"] == st["timeouts"] == st["crc_errors"] == 0, (bus, a, st)
            b = run.stats["modbus"][bus]["bus"]
            assert b["stored_items"] == len([p for p in run.polls if p["modbus"]["bus"] == bus])
            assert b["sink_errors"] == 0 and b["opens"] == 1 and b["port_lost"] == 0, b
        assert {p["bn"] for p in run.polls} == urns


def test_a_dead_meter_delays_the_others_by_no_more_than_its_timeout_and_backs_off(rig):
    """Meter 9 is configured between 1 and 2 but nobody answers it. The gap from meter 1's poll
    to meter 2's in the same cycle is meter 1's own poll in the clean run; with 9 between them
    it grows by at most 9's timeout x (retries + 1), only in the cycles where 9 was tried (its
    failed polls), and back-off spaces those out (0.5 s doubling to 2 s)."""
    def gaps(run, bus):
        t2 = [p["t"] for p in run.of(bus, 2)]
        out = []
        for a in (p["t"] for p in run.of(bus, 1)):  # meter 1's poll -> meter 2's next one
            nxt = [b for b in t2 if b > a]
            if nxt:
                out.append((a, nxt[0] - a))
        return out

    clean = sorted(g for _, g in gaps(rig["clean"], CLEAN))
    base = clean[len(clean) // 2]  # meter 1's poll: 4 reads at 19200 baud
    cost = DEAD_TIMEOUT_S * (RETRIES + 1)
    bound = base + cost + DELAY_MARGIN_S
    g_dead = gaps(rig["dead"], DEAD_BUS)
    slow = [(a, g) for a, g in g_dead if g > base + DEAD_TIMEOUT_S]  # the cycles 9 was tried
    st = rig["dead"].meter_stats(DEAD_BUS, DEAD)
    print("meter 1 -> 2 in a cycle: clean median %.3f s max %.3f s; with the dead meter tried "
          "%s s (bound %.3f s) in %d of %d cycles; dead meter %s"
          % (base, clean[-1], " ".join("%.3f" % g for _, g in slow), bound, len(slow),
             len(g_dead), st))
    assert max(g for _, g in g_dead) <= bound, (bound, sorted(g for _, g in g_dead)[-5:])
    # its cost is really in these gaps (else the bound above says nothing)
    assert slow and min(g for _, g in slow) >= base + cost - 0.02, slow
    # counted: each try is RETRIES + 1 timeouts and one failed poll, nothing else
    assert st["polls"] == 0 and st["transactions"] == 0
    assert st["timeouts"] == st["failed_polls"] * (RETRIES + 1), st
    assert st["retries"] == st["failed_polls"] * RETRIES, st
    assert st["crc_errors"] == 0 and st["garbled"] == 0 and st["exceptions"] == {}, st
    assert st["consecutive_failures"] == st["failed_polls"]
    # the slow cycles are the dead meter's tries (the last one may have been cut by the stop)
    assert st["failed_polls"] - 1 <= len(slow) <= st["failed_polls"], (slow, st)
    # and it backs off: tries spaced by at least the doubling back-off, so in few cycles
    wait = BACKOFF[0]
    for (a, _), (b, _) in zip(slow, slow[1:]):
        assert b - a >= wait, (slow, wait)
        wait = min(wait * 2, BACKOFF[1])
    assert len(slow) < len(g_dead) / 2, (len(slow), len(g_dead))
    # the timeouts are counted, not logged: no ERROR line or pymodbus frame dump per timeout
    noise = [ln for ln in rig["dead"].logs.splitlines() if " ERROR " in ln or ">>>>>" in ln]
    assert not noise, noise[:5]


def test_line_noise_is_counted_retried_and_never_published_as_a_value(rig):
    """Meter 4, alone on its bus, flips one bit in 15 % of its replies: the gateway counts each
    as a CRC error of meter 4, retries it, keeps publishing meter 4 (and every value it
    published matches the truth: the first test checks each one), and on the wire the counts
    add up. A bit flipped in the reply's address byte makes it a reply for nobody: a timeout."""
    run = rig["clean"]
    st = run.meter_stats(NOISE, NOISY)
    mc = rig["meter_counters"][NOISY]
    print("noisy meter: gateway %s; meter %s" % (st, mc))
    assert mc["injected_noise"] >= 3, mc
    # every reply meter 4 sent was taken or refused by the gateway, every noisy one refused;
    # the meter may count one more: the transaction on the wire when the gateway stopped
    bad = st["crc_errors"] + st["garbled"] + st["timeouts"]
    assert bad <= mc["injected_noise"] <= bad + 1 and st["crc_errors"] >= 0.75 * bad, (st, mc)
    assert mc["responses"] == mc["requests"], mc
    assert 0 <= mc["responses"] - (st["transactions"] + bad) <= 1, (st, mc)
    ps = run.of(NOISE, NOISY)
    # every bad reply is retried, except the last attempt of a read that failed them all,
    # which ends its poll: a failed poll, or a published one without that read's values
    partial = sum(1 for p in ps if len(p["records"]) < len(expected_records(POINTS)))
    assert st["retries"] == bad - st["failed_polls"] - partial, (st, partial)
    assert len(ps) == st["polls"] and partial <= len(ps) / 4, (st, partial)
    for a in LIVE:
        assert run.meter_stats(CLEAN, a)["crc_errors"] == 0, (a, run.meter_stats(CLEAN, a))


# ------------------------------------------------------------------ a standard Modbus master

LONE = 5  # a meter alone on its own pty pair, 2400 W (800 W a phase)
LONE_W = 2400.0


@pytest.fixture
def lone_meter():
    with rig_lone_meter(LONE, LONE_W, BAUD) as (path, proc):
        yield path, proc


def _instrument(path, address, baud=BAUD):
    import minimalmodbus

    ins = minimalmodbus.Instrument(path, address, close_port_after_each_call=False)
    ins.serial.baudrate = baud
    ins.serial.timeout = 0.3
    ins.clear_buffers_before_each_transaction = True
    return ins


def _slave_error(call):
    """The text of the Modbus exception the slave answered `call` with."""
    import minimalmodbus

    with pytest.raises(minimalmodbus.SlaveReportedException) as exc:
        call()
    return str(exc.value)


def _until(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, "no %s within %.1f s" % (what, timeout_s)
        time.sleep(0.1)


def test_a_standard_modbus_master_reads_writes_and_switches_our_meter(lone_meter):
    """minimalmodbus (not our code, not pymodbus) as an SDM630 tool would use it: the float32
    block (input registers, big-endian word order) with the board's values, the exact u64 Wh,
    identity, a config write (address, then baud: each answered with the old settings, then in
    force), the relay's arm + open (load gone from the readings) and close, and the exception
    codes for an illegal function, address and value."""
    import minimalmodbus

    path, proc = lone_meter
    ins = _instrument(path, LONE)
    try:
        f = {r.name: ins.read_float(r.address, functioncode=4) for r in
             regmap.INPUT_REGISTERS if r.type == "f32" and r.address < 0x50}
        pw = LONE_W / 3
        for i in range(3):
            n = i + 1
            assert f["voltage_l%d" % n] == _f32(voltage(i)), f
            assert abs(f["current_l%d" % n] - pw / (voltage(i) * POWER_FACTOR)) <= 0.0015, f
            assert abs(f["power_l%d" % n] - pw) <= 0.01, f
            assert abs(f["power_factor_l%d" % n] - POWER_FACTOR) <= 0.001, f
        assert abs(f["power"] - LONE_W) <= 0.03 and f["frequency"] == FREQUENCY_HZ, f
        assert ins.read_float(0x2C, functioncode=4) == 0.0  # not in our map: 0.0 as on an SDM630
        # the same block in one read of 80 registers (Eastron's limit), decoded here by hand
        regs = ins.read_registers(0x0000, 80, functioncode=4)
        block = regmap.decode_block(0x0000, regs)
        assert block["voltage_l2"] == f["voltage_l2"] and block["frequency"] == FREQUENCY_HZ
        # exact energy: u64 Wh, MSW first, and the float kWh is the same count
        wh = ins.read_long(0x1000, functioncode=4, number_of_registers=4)
        kwh = ins.read_float(0x48, functioncode=4)
        assert 0 <= wh - round(kwh * 1000) <= 2 and ins.read_long(
            0x1004, functioncode=4, number_of_registers=4) == 0
        lo, hi = Truth(proc, LONE, time.time() - time.monotonic()).import_wh_range(time.time())
        assert lo <= wh <= hi, (wh, lo, hi)
        wh2 = _until(lambda: (lambda w: w if w > wh else None)(
            ins.read_long(0x1000, functioncode=4, number_of_registers=4)), 5, "energy step")
        assert wh2 > wh
        # identity
        ident = ins.read_registers(0x2000, 7, functioncode=4)
        assert ident[:2] == [regmap.MAP_VERSION, regmap.MODEL_AMI_METER], ident
        assert ins.read_long(0x2002, functioncode=4) == 20260000 + LONE
        assert ident[4:] == [0, 4, 0], ident  # sim.meter.FIRMWARE_VERSION
        # exception codes
        assert "illegal data address" in _slave_error(
            lambda: ins.read_registers(0x0500, 2, functioncode=4))
        assert "illegal data address" in _slave_error(  # would split a float
            lambda: ins.read_registers(0x0001, 2, functioncode=4))
        assert "illegal data address" in _slave_error(  # would split the u64
            lambda: ins.read_registers(0x1000, 2, functioncode=4))
        assert "illegal function" in _slave_error(lambda: ins.read_bit(0, functioncode=1))
        assert "illegal function" in _slave_error(lambda: ins.read_bit(0, functioncode=2))
        assert "illegal data address" in _slave_error(  # Eastron's holding floats are not ours
            lambda: ins.write_register(0x0000, 1, functioncode=6))
        assert "illegal data value" in _slave_error(  # address 0 is broadcast
            lambda: ins.write_register(0x3000, 0, functioncode=6))
        assert "illegal data value" in _slave_error(  # not a baud rate
            lambda: ins.write_register(0x3001, 97, functioncode=6))
        # the relay: a switch without the arm is refused and changes nothing
        assert ins.read_registers(0x3003, 2, functioncode=3) == [0, regmap.RELAY_CLOSED]
        assert "illegal data value" in _slave_error(
            lambda: ins.write_register(0x3004, regmap.RELAY_OPEN, functioncode=6))
        assert "illegal data value" in _slave_error(  # arm and switch in one request
            lambda: ins.write_registers(0x3003, [regmap.RELAY_ARM_MAGIC, regmap.RELAY_OPEN]))
        assert ins.read_register(0x3004, functioncode=3) == regmap.RELAY_CLOSED
        ins.write_register(0x3003, regmap.RELAY_ARM_MAGIC, functioncode=6)
        assert ins.read_register(0x3003, functioncode=3) == 1  # armed
        ins.write_register(0x3004, regmap.RELAY_OPEN, functioncode=6)
        assert ins.read_registers(0x3003, 2, functioncode=3) == [0, regmap.RELAY_OPEN]
        _until(lambda: ins.read_float(0x34, functioncode=4) == 0.0, 3, "load disconnected")
        assert ins.read_float(0x06, functioncode=4) == 0.0  # no current on L1
        frozen = ins.read_long(0x1000, functioncode=4, number_of_registers=4)
        time.sleep(1.2)
        assert ins.read_long(0x1000, functioncode=4, number_of_registers=4) == frozen
        ins.write_registers(0x3003, [regmap.RELAY_ARM_MAGIC])  # FC 16 this time
        ins.write_registers(0x3004, [regmap.RELAY_CLOSED])
        _until(lambda: abs(ins.read_float(0x34, functioncode=4) - LONE_W) <= 0.03, 3,
               "load reconnected")
        # config: the new address answers, the old one is silent
        assert ins.read_registers(0x3000, 3, functioncode=3) == [LONE, BAUD // 100, 0]
        ins.write_register(0x3000, 7, functioncode=6)  # answered from the old address
        with pytest.raises(minimalmodbus.NoResponseError):
            ins.read_register(0x3000, functioncode=3)
        ins.address = 7
        assert ins.read_register(0x3000, functioncode=3) == 7
        # baud: answered at 19200, paced at 9600 from then on. A pty has no baud rate, so the
        # change shows in the reply's wire time: 80 registers are 165 bytes, 10 bits each,
        # 86 ms at 19200 and 172 ms at 9600 (a reply cannot come faster than its wire time)
        def read80_s():
            t = time.monotonic()
            ins.read_registers(0x0000, 80, functioncode=4)
            return time.monotonic() - t

        before = read80_s()
        ins.write_register(0x3001, 96, functioncode=16)
        ins.serial.baudrate = 9600
        assert ins.read_registers(0x3000, 3, functioncode=3) == [7, 96, 0]
        after = read80_s()
        print("80-register read: %.0f ms at 19200, %.0f ms at 9600" % (before * 1e3, after * 1e3))
        assert after >= 165 * 10 / 9600, (before, after)
        assert ins.read_float(0x0000, functioncode=4) == _f32(voltage(0))
    finally:
        ins.serial.close()
    c = proc.stop()[7]
    print("meter counters: %s" % c)
    # the 10 refused requests above, and the one read sent to the old address
    assert c["exceptions"] == 10 and c["ignored"] == 1, c
    assert c["bad_crc"] == c["frame_errors"] == c["gap_errors"] == c["dropped_rx"] == 0, c


def test_pymodbus_sync_client_gets_the_exception_codes_and_floats(lone_meter):
    """pymodbus' synchronous client (a second standard master; the gateway uses the async
    one) on the same meter: numeric exception codes 01, 02, 03 and the float32 block decoded by
    pymodbus' own FLOAT32 conversion."""
    from pymodbus.client import ModbusSerialClient

    path, _ = lone_meter
    c = ModbusSerialClient(path, baudrate=BAUD, timeout=0.5, retries=0)
    assert c.connect()
    try:
        r = c.read_input_registers(0x0000, count=6, device_id=LONE)
        assert not r.isError(), r
        volts = c.convert_from_registers(r.registers, c.DATATYPE.FLOAT32)
        assert volts == [_f32(voltage(i)) for i in range(3)], volts
        r = c.read_input_registers(0x1000, count=8, device_id=LONE)
        imp, exp = c.convert_from_registers(r.registers, c.DATATYPE.UINT64)
        assert exp == 0 and imp >= 0
        assert c.read_coils(0, count=1, device_id=LONE).exception_code == 1
        assert c.read_input_registers(0x0500, count=2, device_id=LONE).exception_code == 2
        assert c.read_holding_registers(0x3000, count=6, device_id=LONE).exception_code == 2
        assert c.write_register(0x3002, 9, device_id=LONE).exception_code == 3
        assert c.read_holding_registers(0x3002, count=1, device_id=LONE).registers == [0]
    finally:
        c.close()


def test_an_operator_relay_command_on_mqtt_switches_the_real_meter(lone_meter, mqtt, tmp_path):
    """The operator's relay command (gateway/modbus/commands.py) published on the gateway's
    command topic goes out on the bus as the meter firmware's arm + relay writes: "open"
    disconnects the load (the following polls read 0 W and the energy stands still), "close"
    brings it back; each command counted done once, and the power switches once each way."""
    import json

    import paho.mqtt.client as paho

    path, proc = lone_meter
    broker, readings = mqtt
    bus = "rs485-4"
    gw, _ = _start_gateway(str(tmp_path / "relay"), broker, [bus_toml(
        bus, path, BAUD, [(LONE, ["power", "energy_import_wh"], {})], timeout_s=TIMEOUT_S,
        retries=RETRIES, poll_interval_s=0.1)])
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="hil-meter-operator")
    bn = meter_urn(bus, LONE)

    def power_polls():
        return [(p["t"], dict((n, v) for n, _, v in p["records"]))
                for p in polls(readings) if p["bn"] == bn]

    def command(action, done):
        body = sign({"id": "hil-relay-%s-%d" % (action, done), "modbus": {"bus": bus,
                     "address": LONE}, "command": "relay", "fields": {"action": action}},
                    gw.command_key)
        pub.publish("streetgrid/block-a/gw-1/commands", json.dumps(body).encode(),
                    qos=1).wait_for_publish(5)
        s = gw.stats_after(lambda s: s["commands"]["modbus_done"] == done, 10, action)
        assert s["commands"]["modbus_failed"] == 0, s["commands"]

    def reads(watts, after=0.0):
        """The time of the first poll after `after` reading `watts`, once there is one."""
        return _until(lambda: next((t for t, v in power_polls() if t > after
                                    and abs(v["power"] - watts) <= 0.03), None),
                      5, "a poll reading %.0f W" % watts)

    try:
        gw.stats_after(lambda s: s["commands"]["subscribed"], 10, "the command subscription")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        reads(LONE_W)
        command("open", 1)
        t_open = reads(0.0)
        time.sleep(2.5)  # polls with the load off
        t_closing = time.time()
        command("close", 2)
        t_close = reads(LONE_W, after=t_open)
        time.sleep(0.5)
    finally:
        pub.loop_stop()
        pub.disconnect()
        assert gw.stop() == 0
    seq = power_polls()
    watts = [round(v["power"]) for _, v in seq]
    changes = [(a, b) for a, b in zip(watts, watts[1:]) if a != b]
    assert changes == [(LONE_W, 0), (0, LONE_W)], watts  # once each way, never flapping
    # no energy while disconnected: the metering step that first reads 0 W still books what
    # flowed since the step before (the switch fell between them), none after that one until
    # the close command (a poll can read 0 W, then the Wh of a step after the close)
    assert t_open < t_closing < t_close
    off = [v["energy/import"] for t, v in seq if t_open + Truth.STEP_S <= t < t_closing]
    assert len(off) >= 5 and len(set(off)) == 1, " ".join(
        "%.2f:%d:%d" % (t - t_open, v["power"], v["energy/import"]) for t, v in seq)
    energy = [v["energy/import"] for _, v in seq]
    assert energy == sorted(energy), energy

"""HIL: the real gateway process polls emulated AMI meters (the meter firmware's Modbus slave
and metering chain, `python -m sim meter`) over pseudo-terminal RS-485 buses at 19200 baud and
publishes to a real mosquitto; and an independent Modbus master (minimalmodbus) reads a meter.

Bus 1: meters 1, 2, 3 in one meter process (one line model: each hears the others as on a real
bus), 3600 W each. Bus 2: meter 4 alone, 1800 W, a bit flipped in 15 % of its replies (line
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

from gateway.meter_readings import meter_urn
from hil_tests.meter_bus_rig import (FREQUENCY_HZ, POWER_FACTOR, MeterBus, Truth, bus_toml,
                                     expected_records, polls, voltage)
from hil_tests.rig import MOSQUITTO, Broker, HilGateway, Readings

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

BAUD = 19200
RUN_S = 6.0
POINTS = ["voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
          "power_l1", "power_l2", "power_l3", "power", "frequency", "energy_import_kwh",
          "energy_import_wh", "energy_export_wh"]
LIVE = (1, 2, 3)  # one process, 3600 W each (1 Wh a second: the energy moves)
LIVE_W = 3600.0
NOISY = 4  # alone on a second bus, 1800 W, a bit flipped in 15 % of its replies
NOISY_W = 1800.0
DEAD = 9
CLEAN, NOISE, DEAD_BUS = "rs485-1", "rs485-2", "rs485-3"  # bus names: run "clean" polls the
# first two, run "dead" the first bus again (its meters 1-3 and the dead 9) under the third name
TIMEOUT_S = 0.2  # the buses' reply timeout (a 19200 baud reply of 40 registers takes ~25 ms)
DEAD_TIMEOUT_S = 0.3  # the dead meter's own timeout, larger so its cost stands out of jitter
RETRIES = 1
BACKOFF = (0.5, 2.0)  # the dead meter's back-off: 0.5 s doubling to 2 s
# margin on "a dead meter delays the others by no more than its timeout": the gateway's event
# loop shares 2 cores with the meter processes, the pty relay thread and mosquitto; a slow wake
# of any of them can stretch one poll by tens of ms beyond what the clean run happened to see
DELAY_MARGIN_S = 0.15


def _f32(x):
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _gateway_run(workdir, broker, readings, buses):
    """Start the gateway with these [[modbus.bus]] tables, let it poll RUN_S, stop it cleanly,
    then drain its queue; (polls of these buses on MQTT, the final stats.json, the logs)."""
    os.makedirs(workdir)
    registry = os.path.join(workdir, "devices.toml")
    open(registry, "w").close()
    gw = HilGateway(workdir, registry, "mqtt://127.0.0.1:%d" % broker.port)
    with open(gw.config) as f:
        base = f.read()
    with open(gw.config, "w") as f:
        f.write(base + "".join(buses))
    gw.start()
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
def rig(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("meter-bus"))
    broker = Broker(tmp).start()
    readings = Readings(broker.port, client_id="hil-meter-bus")
    main, noisy = MeterBus(2), MeterBus(2)
    out = {"offset": time.time() - time.monotonic()}
    try:
        main.start_meters(LIVE, BAUD, LIVE_W, 1)
        noisy.start_meters((NOISY,), BAUD, NOISY_W, 1, "--noise", "0.15", "--seed", "7")
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
        readings.stop()
        broker.stop()


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
    if not partial:
        assert poll["modbus"]["obis"] == [r.obis for _, _, r in want], poll["modbus"]
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
            # blocks are not one snapshot: a commit can fall between them, and it moves the
            # committed mWh by less than the 1 Wh step + one metering step's energy (< 1 Wh
            # at 3600 W), so the whole Wh by at most 2
            k = round(by["energy_import_kwh"] * 1000)
            assert by["energy_import_kwh"] == _f32(k / 1000) and 0 <= wh - k <= 2, (wh, by)
    if "energy_export_wh" in by:  # the load only imports
        assert by["energy_export_wh"] == 0, by
    return by


def _check_meter(run, bus, address, rig, partial=False):
    """A meter's polls on MQTT: in time order, none twice, each with the meter's values, energy
    never going backwards and, over the run, going up."""
    ps = run.of(bus, address)
    assert ps, "no poll of meter %d reached MQTT" % address
    truth = Truth(rig["meters"][address], rig["offset"])
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
    if not partial:  # the load drew 3600 W x RUN_S: several Wh, committed every 1 Wh
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

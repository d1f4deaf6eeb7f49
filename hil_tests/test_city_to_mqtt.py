"""Hardware in the loop, issue #3 items 8 and 9: street poles running the real firmware (one of
them on the real MicroPython VM) in a simulated city at dusk, packet forwarders speaking GWMP
over real UDP to the real gateway process (`python -m gateway run`), publishing to a real
mosquitto, read back by a paho subscriber on streetgrid/#.

One city, gateway and broker for the whole module (building them costs more than running
them). Each test runs its own phase on it and judges only the frames of that phase; a phase a
test depends on (the clean run) runs once, whichever test asks first.
"""

import asyncio
import collections
import time

import pytest

import sim.demo
import sim.mpvm
from gateway.lorawan.dedup import DEFAULT_REMEMBER_S
from hil_tests.rig import (MOSQUITTO, CityUnderTest, FakeForwarder, PushLog, ReportRecorder,
                           wait_for)
from hil_tests.truth import WorldTruth, check_against_report
from protocol import gwmp
from protocol.lorawan import frame as lorawan_frame
from protocol.lorawan import session as lorawan_session
from protocol import payload as lorawan_payload
from sim.city import City
from sim.vmboard import VMBoard

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

SEED = 7
N_POLES = 10
N_FORWARDERS = 3
VM_POLES = 1 if sim.mpvm.available() else 0
EPOCH_S = 1774114800  # 2026-03-21 17:40 UTC: daylight, dusk (lamps go on) ~18:05, then night
CLEAN_S = 5400  # virtual seconds of the clean run: through dusk into the night
REPORT_S = 300
TOPIC = "streetgrid/%s/%s/readings" % (sim.demo.SITE, sim.demo.GATEWAY_ID)
OUTAGE_S = 60.0  # real seconds without a broker


def distinct_data(uplinks):
    """{(DevEUI, FCnt): first transmission} of the data frames among the air's uplink dicts."""
    out = {}
    for u in uplinks:
        if u["mtype"] in (2, 4):
            out.setdefault((u["dev_eui"], u["fcnt"]), u)
    return out


class CityRig(CityUnderTest):
    def __init__(self, workdir):
        super().__init__(workdir)
        factory = sim.demo.board_factory(VM_POLES, EPOCH_S, SEED)
        try:
            city = City(N_POLES, N_FORWARDERS, ("127.0.0.1", 9), seed=SEED,
                             site=sim.demo.SITE, epoch_s=EPOCH_S, board_factory=factory,
                             cfg={"report_interval_s": REPORT_S, "confirmed_report_every": 6},
                             barriers="expected", grace_s=3.0, boot_spread_s=30)
        except BaseException:
            for b in factory.made:
                b.close()
            raise
        self.recorder = ReportRecorder(city)
        self.pushes = PushLog(city)
        self.attach(city)
        self._clean = None

    def drain(self, keys, timeout=30):
        """Wait until every (DevEUI, FCnt) in keys has arrived at MQTT."""
        keys = set(keys)
        wait_for(lambda: keys <= set(self.readings.keys()), timeout,
                 "%d readings at MQTT (missing: %s)" % (len(keys), sorted(
                     keys - set(self.readings.keys()))[:5]))

    def clean(self):
        """The clean run (once): CLEAN_S virtual seconds, every delivered frame drained to MQTT,
        then one more report round whose arrival proves nothing of the clean run is still on
        its way (the queue is FIFO). Returns what the tests judge."""
        if self._clean is None:
            t0 = time.monotonic()
            self.run(CLEAN_S)
            expected = distinct_data(self.city.delivered())
            self.drain(expected)
            n = len(self.city.uplinks)
            self.run(REPORT_S)
            after = set(distinct_data(self.city.delivered())) - set(expected)
            self.drain(after)
            got = [u for u in self.readings.uplinks() if (u["eui"], u["fcnt"]) in expected]
            late = self.late_copies()
            accepted = len(expected) + len(after)
            stats = self.gateway.stats_after(lambda s: s["uplink"]["accepted"] >= accepted,
                                             what="stats.json with every accepted uplink")
            if stats["dedup"]["late"] < late["at_least"]:
                try:  # the late copies are counted when they arrive, maybe after the last group
                    stats = self.gateway.stats_after(
                        lambda s: (s["uplink"]["accepted"] >= accepted
                                   and s["dedup"]["late"] >= late["at_least"]), timeout=5)
                except AssertionError:
                    pass  # test 1 says what is missing
            self._clean = {"expected": expected, "mqtt": got, "uplinks": self.city.uplinks[:n],
                           "reports": pair_reports(self.city, self.recorder, self.city.uplinks),
                           "real_s": time.monotonic() - t0, "late": late, "stats": stats}
        return self._clean

    def late_copies(self):
        """The copies the gateway's dedup must have counted late (dedup.late) so far, from the
        air's log, the forwarders' pushes and the readings at MQTT:

        - missing: [(DevEUI, FCnt, forwarder)] the copies of a delivered data frame that its
          reading does not carry. The gateway reads the copies of a frame in the order they
          were pushed and its window (dedup.window_ms) runs from the first; a copy read after
          the window closed is dropped and counted late (docs/operator-guide.md, stats
          `dedup`), and so is every copy read after it. Under load (a stalled test process
          between two forwarders' pushes, a stalled gateway between two reads) that happens to
          a few copies: check_uplink lets a reading lack only the last ones pushed;
        - repeated: the copies of a frame sent again (a confirmed uplink whose ACK was lost);
        - join_copies: copies of join-requests beyond the first, which may be late too but
          are never published (so they can only bound the count).

        at_least = missing + repeated; dedup.late must lie in [at_least, at_least + join_copies].
        """
        first = distinct_data(self.city.delivered())
        by_key = {(m["eui"], m["fcnt"]): m for m in self.readings.uplinks()}
        missing = []
        for key, u in sorted(first.items()):
            m = by_key.get(key)
            if m is None:
                continue  # test 1 reports it
            pushed = self.pushes.forwarders_of(u["phy"])[:len(u["received"])]
            got = [c["fwd"] for c in m["lora"]["copies"]]
            if got == pushed[:len(got)]:  # anything else is a mismatch test 1 reports
                missing += [key + (fwd,) for fwd in pushed[len(got):]]
        repeated = sum(len(u["received"]) for u in self.city.delivered()
                       if first[(u["dev_eui"], u["fcnt"])] is not u)
        join_copies = sum(len(u["received"]) - 1 for u in self.city.delivered(data_only=False)
                          if u["mtype"] == 0)
        return {"missing": missing, "repeated": repeated, "join_copies": join_copies,
                "at_least": len(missing) + repeated}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = CityRig(tmp_path_factory.mktemp("hil-city"))
    yield r
    r.close()


def pair_reports(city, recorder, uplinks):
    """{(DevEUI, FCnt): (report_ms, fields)}: each pole's reports (fPort 10) in the order it
    made them, paired with its report frames in the order it sent them."""
    out = {}
    for b in city.boards:
        frames = sorted((u for u in distinct_data(uplinks).values()
                         if u["board"] == b.name and u["fport"] == 10), key=lambda u: u["t_us"])
        reports = recorder.reports[b.name]
        # the last report may still wait in the MAC's queue when the run stops
        assert len(reports) - len(frames) in (0, 1), (b.name, len(reports), len(frames))
        for (ms, f), u in zip(reports, frames):
            # sent after it was made, before the next one was due
            assert ms <= u["t_us"] // 1000 < ms + REPORT_S * 1000, (b.name, ms, u["t_us"])
            out[(u["dev_eui"], u["fcnt"])] = (b.name, ms, f)
    return out


def check_uplink(city, m, u, pushed):
    """One MQTT uplink m against the air's record u of the frame and the forwarders that pushed
    it (in the order their PUSH_DATA left): problems (empty = fine)."""
    p = []
    first = m["records"][0]
    lora = m["lora"]
    if m["topic"] != TOPIC or m["gateway_id"] != sim.demo.GATEWAY_ID:
        p.append("topic %s gateway %s" % (m["topic"], m["gateway_id"]))
    if first[-2] != "urn:dev:eui64:%s:" % u["dev_eui"].lower():
        p.append("bn %r" % first[-2])
    if abs(first[-3] - city.clock.unix_s(u["end_us"])) > 2.0:
        p.append("time %r, received at virtual %r" % (first[-3], city.clock.unix_s(u["end_us"])))
    if lora.get("fport") != u["fport"] or lora.get("dev_addr") != u["dev_addr"]:
        p.append("fport/dev_addr %r/%r vs %r/%r" % (lora.get("fport"), lora.get("dev_addr"),
                                                    u["fport"], u["dev_addr"]))
    copies = {c["fwd"]: c for c in lora["copies"]}
    got = [c["fwd"] for c in lora["copies"]]
    pushed = pushed[:len(u["received"])]  # a repeated frame's later pushes are not this one's
    if sorted(pushed) != sorted(u["received"]):
        p.append("pushed by %s, the air delivered to %s" % (pushed, sorted(u["received"])))
    # one copy per forwarder that got it intact, in arrival order; only the last ones pushed
    # may be missing: copies the gateway got after its dedup window (counted late, see
    # CityRig.late_copies; test 1 checks the count)
    if not got or got != pushed[:len(got)]:
        p.append("copies from %s, the air delivered to %s, pushed in the order %s" % (
            got, sorted(u["received"]), pushed))
    for fwd, (rssi, snr) in u["received"].items():
        c = copies.get(fwd)
        if c and (abs(c["rssi"] - rssi) > 0.6 or abs(c["snr"] - max(-20.0, min(13.5, snr))) > 0.06
                  or c.get("time") != city.clock.utc_iso(u["end_us"])):
            p.append("copy %s %r, air rssi %r snr %r" % (fwd, c, rssi, snr))
    return p


# ---- 1. readings ---------------------------------------------------------------------------

def test_every_delivered_reading_arrives_once_with_the_measured_values(rig):
    clean = rig.clean()
    city, expected = rig.city, clean["expected"]
    assert len(expected) >= N_POLES * (CLEAN_S // REPORT_S - 1)  # every pole reported all along
    counts = collections.Counter((m["eui"], m["fcnt"]) for m in clean["mqtt"])
    assert set(counts) == set(expected), sorted(set(expected) ^ set(counts))[:10]
    assert [k for k, n in counts.items() if n != 1] == []  # exactly once: no reconnect, no dup
    assert rig.readings.bad == []

    reports = {k: v for k, v in clean["reports"].items() if k in expected}
    truth = WorldTruth(city.world)
    problems = []
    for m in clean["mqtt"]:
        key = (m["eui"], m["fcnt"])
        pushed = rig.pushes.forwarders_of(expected[key]["phy"])
        problems += ["%s: %s" % (key, x) for x in check_uplink(city, m, expected[key], pushed)]
        if m["lora"]["fport"] == 10:
            name, ms, f = reports.pop(key)
            problems += ["%s: %s" % (key, x) for x in check_against_report(m["records"], f)]
            problems += ["%s %s: %s" % (name, key, x) for x in truth.check(name, ms, f)]
    assert problems == []
    assert reports == {}  # every report the poles sent is among the readings

    # a copy a reading lacks is one the gateway counted late, and nothing else was late but
    # repeated frames (and maybe join-request copies, which are never published)
    late = clean["late"]
    counted = clean["stats"]["dedup"]["late"]
    assert late["at_least"] <= counted <= late["at_least"] + late["join_copies"], (late, counted)
    if late["missing"]:
        print("copies late at the gateway (dropped, counted in dedup.late): %s" % late["missing"])

    # the dusk happened: lamps off by day, on (60 W, 100 %) at night, energy counted
    by_pole = collections.defaultdict(list)
    for m in sorted(clean["mqtt"], key=lambda m: m["records"][0][-3]):
        f = {r[0]: r.get(2, r.get(4)) for r in m["records"]}
        if "dim_level" in f:
            by_pole[m["eui"]].append(f)
    assert len(by_pole) == N_POLES
    for eui, fs in by_pole.items():
        assert fs[1]["dim_level"] == 0 and fs[1]["status/dark"] is False, (eui, fs[1])
        assert fs[-1]["dim_level"] == 100 and fs[-1]["status/lamp_on"] is True, (eui, fs[-1])
        assert fs[-1]["lamp_power"] == pytest.approx(60.0, abs=0.1)
        assert fs[-1]["lamp_energy"] >= 30  # an hour at 60 W, at least

    # dedup exercised: most frames were heard by 2+ forwarders, one reading each
    multi = [m for m in clean["mqtt"] if len(m["lora"]["copies"]) >= 2]
    assert len(multi) >= len(expected) // 2
    assert {m["eui"] for m in multi} == {b.dev_eui for b in city.boards}
    dedup = clean["stats"]["dedup"]
    assert dedup["merged"] >= sum(len(m["lora"]["copies"]) - 1 for m in multi)


# ---- 2. joins ------------------------------------------------------------------------------

def test_every_pole_joins_once_and_its_session_works(rig):
    clean = rig.clean()
    fs = clean["stats"]["forwarder_server"]
    assert fs["joins-accepted"] == N_POLES
    assert clean["stats"]["uplink"]["unknown-dev-addr"] == 0
    joins = [u for u in clean["uplinks"] if u["mtype"] == 0]
    assert sorted({u["dev_eui"] for u in joins}) == sorted(b.dev_eui for b in rig.city.boards)
    # each pole: one DevAddr for all its readings, none shared, and readings from its session
    addrs = collections.defaultdict(set)
    for m in clean["mqtt"]:
        addrs[m["eui"]].add(m["lora"]["dev_addr"])
    assert sorted(addrs) == sorted(b.dev_eui for b in rig.city.boards)
    assert all(len(a) == 1 for a in addrs.values()), addrs
    assert len({next(iter(a)) for a in addrs.values()}) == N_POLES
    for b in rig.city.boards:
        joins_done = b.eval("app.mac.joins") if isinstance(b, VMBoard) else b.app.mac.joins
        assert joins_done == 1, b.name
        assert b.counters["crashes"] == 0, (b.name, b.errors)


# ---- 3. replay and forgery -----------------------------------------------------------------

def _session_keys(gateway, board):
    """(DevAddr, NwkSKey, AppSKey) of the pole's session as the gateway keeps it (its own
    session store, read beside the running process): the test plays an attacker who has the
    keys but no fresh frame counter."""
    s = gateway.session(board.dev_eui)
    assert s is not None, "the gateway has no session for %s" % board.name
    return s.dev_addr, s.nwk_s_key, s.app_s_key


def test_replayed_and_forged_frames_are_rejected_counted_and_never_published(rig):
    clean = rig.clean()
    city, gw = rig.city, rig.gateway
    local = [b for b in city.boards if not isinstance(b, VMBoard)]
    victim = local[0]
    frames = sorted((u for u in clean["expected"].values() if u["board"] == victim.name),
                    key=lambda u: u["t_us"])
    old = frames[0]
    captured = rig.pushes.datagram_with(old["phy"])
    assert captured, "no single-frame PUSH_DATA of %s captured" % victim.name
    pushed_at, datagram = captured
    before = gw.fresh_stats()  # the city stands still from here until the attack is judged
    published_before = collections.Counter(rig.readings.keys())

    attacker = FakeForwarder(gw.addr)
    try:
        # (a) the captured datagram again, byte for byte: the dedup remembers the frame for
        # DEFAULT_REMEMBER_S (a late copy), after that the frame counter check refuses it
        age = time.monotonic() - pushed_at
        if abs(age - DEFAULT_REMEMBER_S) < 3:
            time.sleep(DEFAULT_REMEMBER_S + 3 - age)
            age = time.monotonic() - pushed_at
        attacker.resend(datagram)
        late_copy = age < DEFAULT_REMEMBER_S
        # (b) an authentic frame (session keys) reusing an old counter with a new payload: the
        # bytes differ, so only the frame counter check can refuse it
        dev_addr, nwk, app = _session_keys(gw, victim)
        assert "%08X" % dev_addr == old["dev_addr"]  # the session that sent the frame
        port, data = lorawan_payload.encode_uplink("pole", "report", {
            "status": 0, "dim_level": 0, "lamp_power": 0, "lamp_energy": 0,
            "ambient_light": 1, "temperature": 20, "humidity": 50})
        replay = lorawan_session.build_data_frame(lorawan_frame.UNCONFIRMED_UP, dev_addr,
                                                  old["fcnt"], port, data, nwk, app)
        # (c) a captured frame with one payload bit flipped; (d) a fresh counter, wrong keys
        flipped = bytearray(frames[1]["phy"])
        flipped[10] ^= 0x01
        wrong_key = lorawan_session.build_data_frame(
            lorawan_frame.UNCONFIRMED_UP, dev_addr, frames[-1]["fcnt"] + 1000, port, data,
            bytes(16), bytes(range(16)))
        t = 0x10000000
        for phy in (replay, bytes(flipped), wrong_key):
            t += 1000000
            attacker.push([gwmp.Rxpk(tmst=t, freq_hz=868100000, datr="SF7BW125", data=phy,
                                     rssi=-60, lsnr=9.0, codr="4/5", chan=0, rfch=0,
                                     time=city.clock.utc_iso())])
    finally:
        attacker.close()

    def moved(s):
        up, d = s["uplink"], s["dedup"]
        return (up["replay"] - before["uplink"]["replay"] == 1 + (not late_copy)
                and up["bad-mic"] - before["uplink"]["bad-mic"] == 2
                and d["late"] - before["dedup"]["late"] == int(late_copy))
    after = gw.stats_after(moved, what="the gateway to count the replays and forgeries")
    fs, fs0 = after["forwarder_server"], before["forwarder_server"]
    assert fs.get("uplink-bad-mic", 0) - fs0.get("uplink-bad-mic", 0) == 2
    assert fs.get("uplink-replay", 0) - fs0.get("uplink-replay", 0) == 1 + (not late_copy)
    assert after["uplink"]["accepted"] == before["uplink"]["accepted"]
    assert after["forwarder_server"]["records"] == before["forwarder_server"]["records"]

    # nothing of it reaches MQTT: run on until fresh readings arrive (the queue is FIFO, so
    # anything the attack had queued would be published before them)
    n = len(city.uplinks)
    rig.run(REPORT_S)
    fresh = set(distinct_data(city.uplinks[n:])) & set(distinct_data(city.delivered()))
    assert fresh
    rig.drain(fresh)
    published = collections.Counter(rig.readings.keys())
    for key in published_before:
        assert published[key] == published_before[key], key
    assert all(c["fwd"] != attacker.eui_hex for m in rig.readings.uplinks()
               for c in m["lora"]["copies"])


# ---- 5. broker outage ----------------------------------------------------------------------

def test_a_minute_without_broker_loses_nothing_and_the_publisher_reconnects(rig):
    rig.clean()
    city, gw = rig.city, rig.gateway
    n = len(city.uplinks)
    reconnects = gw.stats_after(lambda s: s["publisher"]["connected"])["publisher"]["reconnects"]
    rig.broker.stop()
    t0 = time.monotonic()

    async def keep_reporting():
        # the poles report all minute long, at a steady pace (30 virtual s per real second)
        while time.monotonic() - t0 < OUTAGE_S:
            await city.run(60)
            await asyncio.sleep(2.0)
    rig.loop.run_until_complete(keep_reporting())
    during = set(distinct_data(city.delivered())) - set(distinct_data(city.uplinks[:n]))
    down = gw.stats_after(lambda s: not s["publisher"]["connected"])
    assert len(during) >= N_POLES * 3  # the poles went on reporting
    assert down["queue"]["records"] >= 1  # readings wait in the durable queue

    rig.broker.start()
    rig.drain(during, timeout=90)  # paho's back-off is at most 60 s
    up = gw.stats_after(lambda s: s["publisher"]["connected"] and s["queue"]["records"] == 0)
    assert up["publisher"]["reconnects"] >= reconnects + 1
    assert up["intake"]["dropped"] == 0
    # and the pipeline still flows
    n2 = len(city.uplinks)
    rig.run(REPORT_S)
    rig.drain(set(distinct_data(city.uplinks[n2:])) & set(distinct_data(city.delivered())))
    missing = set(distinct_data(city.delivered())) - set(rig.readings.keys())
    assert missing == set()


# ---- 6. a pole on the MicroPython VM -------------------------------------------------------

@pytest.mark.skipif(not VM_POLES, reason="node or the MicroPython npm package missing (npm ci)")
def test_the_pole_on_the_micropython_vm_is_accepted_and_its_readings_are_right(rig):
    clean = rig.clean()
    vm = [b for b in rig.city.boards if isinstance(b, VMBoard)]
    assert [b.name for b in vm] == ["pole-0001"]
    b = vm[0]
    assert b.counters["crashes"] == 0, b.errors
    mine = [m for m in clean["mqtt"] if m["eui"] == b.dev_eui]
    sent = [k for k in clean["expected"] if k[0] == b.dev_eui]
    assert len(mine) == len(sent) >= CLEAN_S // REPORT_S - 1
    reports = clean["reports"]
    truth = WorldTruth(rig.city.world)
    for m in mine:
        name, ms, f = reports[(m["eui"], m["fcnt"])]
        assert check_against_report(m["records"], f) == []
        assert truth.check(name, ms, f) == []
    assert any(f["dim_level"] == 100 for _, f in rig.recorder.reports[b.name])
    assert b.heap()["free"] > 0

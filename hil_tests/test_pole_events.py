"""Hardware in the loop, issue #3: what happens at a pole besides its reports, end to end.
Street poles running the real firmware at night, packet forwarders speaking GWMP over real UDP
to the real gateway process, a real mosquitto, a paho subscriber on the readings topic and a
paho publisher on the commands topic.

1. Alarms: a door opens and a pole tilts (City incidents at known virtual instants); each
   pole sends a confirmed fPort 11 alarm that the gateway ACKs and publishes exactly once with
   the right bits and tilt, and a second one when the incident is over.
2. An operator's dim command (JSON on streetgrid/<site>/<gw>/commands) rides the reply to the
   pole's next uplink; the pole dims and acknowledges on fPort 12; a repeat of the same seq is
   acknowledged but not executed.
3. A power cut: the pole resumes its session (no join), its frame counter jumps ahead and is
   accepted, its energy counter does not go backwards, and it regains the wall clock from the
   network (DeviceTimeReq).

One city, gateway and broker for the module; each test runs its own phase at the virtual time
the previous one left, on its own poles, and judges only its own frames.
"""

import calendar
import collections
import json
import math

import paho.mqtt.publish
import pytest

import sim.demo
from gateway.commands.auth import sign
from firmware.drivers.dimmer import level_to_duty
from hil_tests.rig import MOSQUITTO, CityUnderTest, wait_for
from hil_tests.truth import WorldTruth, fields_of
from sim.air import expects_answer
from sim.city import City

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

SEED = 23
N_POLES = 4
EPOCH_S = 1774126800  # 2026-03-21 21:00 UTC: night, every lamp on at 100 % (60 W)
REPORT_S = 300
READINGS = "streetgrid/%s/%s/readings" % (sim.demo.SITE, sim.demo.GATEWAY_ID)
COMMANDS = "streetgrid/%s/%s/commands" % (sim.demo.SITE, sim.demo.GATEWAY_ID)
P_CMD, P_DOOR, P_TILT, P_CUT = ("pole-%04d" % (i + 1) for i in range(N_POLES))
TILT_DEG = 15.0  # firmware tilt_threshold_cdeg: 10 deg


def data_frames(uplinks, **match):
    """{(DevEUI, FCnt16): [transmissions]} of the data frames among the air's uplink dicts."""
    out = collections.defaultdict(list)
    for u in uplinks:
        if u["mtype"] in (2, 4) and all(u[k] == v for k, v in match.items()):
            out[(u["dev_eui"], u["fcnt"])].append(u)
    return out


def delivered_keys(uplinks, **match):
    return {k for k, txs in data_frames(uplinks, **match).items()
            if any(u["received"] for u in txs)}


class EventRig(CityUnderTest):
    def __init__(self, workdir):
        super().__init__(workdir, client_id="hil-events", topic=READINGS)
        city = City(N_POLES, 2, ("127.0.0.1", 9), seed=SEED, site=sim.demo.SITE,
                         epoch_s=EPOCH_S, barriers="expected", grace_s=3.0, boot_spread_s=30,
                         cfg={"report_interval_s": REPORT_S,
                              "confirmed_report_every": 0})  # only alarms are confirmed
        self.attach(city)
        self.started = False

    def board(self, name):
        return self.city.by_name[name]

    def eui(self, name):
        return self.board(name).dev_eui

    def now_s(self):
        return self.city.clock.now_us / 1e6

    def run(self, virtual_s, timeout=60):
        super().run(virtual_s, timeout)

    def mqtt(self, name, fport=None):
        """The pole's uplinks at MQTT in FCnt order (fport: only those)."""
        return sorted((m for m in self.readings.uplinks() if m["eui"] == self.eui(name)
                       and (fport is None or m["lora"].get("fport") == fport)),
                      key=lambda m: m["fcnt"])

    def drain(self, keys, timeout=30):
        keys = set(keys)
        wait_for(lambda: keys <= {(e, f & 0xFFFF) for e, f in self.readings.keys()}, timeout,
                 "%d uplinks at MQTT" % len(keys))

    def settle(self):
        """Everything the air delivered so far is at MQTT, and so is a report round after it
        (the gateway's queue is FIFO: nothing of before is still on its way)."""
        self.drain(delivered_keys(self.city.uplinks))
        n = len(self.city.uplinks)
        self.run(REPORT_S + 60)
        self.drain(delivered_keys(self.city.uplinks[n:]))

    def start(self):
        """Once: every pole joined and has readings at MQTT."""
        if not self.started:
            self.gateway.stats_after(lambda s: s.get("commands", {}).get("subscribed"),
                                     what="the gateway subscribed to its command topic")
            self.run(240)
            self.drain(delivered_keys(self.city.uplinks))
            assert {m["eui"] for m in self.readings.uplinks()} == {
                b.dev_eui for b in self.city.boards}
            self.started = True


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = EventRig(tmp_path_factory.mktemp("hil-events"))
    yield r
    r.close()


def values(m):
    """{name: value} of one MQTT uplink's records."""
    return {k: v for k, (v, _) in fields_of(m["records"]).items()}


# ---- 1. alarms -----------------------------------------------------------------------------

def test_door_and_tilt_alarms_arrive_once_acked_with_their_bits_and_clear(rig):
    rig.start()
    city = rig.city
    t0 = rig.now_s()
    opened, closed = t0 + 30, t0 + 330
    city.door(opened, P_DOOR, True)
    city.tilt(opened, P_TILT, TILT_DEG)
    city.door(closed, P_DOOR, False)
    city.tilt(closed, P_TILT, 0.0)
    n = len(city.uplinks)
    missed0 = city.air.counters["downlinks_missed"]
    stats0 = rig.gateway.fresh_stats()
    macs0 = {p: dict(acked=rig.board(p).app.mac.acked, failed=rig.board(p).app.mac.failed,
                     retx=rig.board(p).app.mac.retransmissions) for p in (P_DOOR, P_TILT)}
    rig.run(closed - t0 + 240)
    rig.settle()
    ups = city.uplinks[n:]

    # the air: confirmed fPort 11 frames from the two poles only, two each (raised, cleared)
    alarm_tx = data_frames(ups, fport=11)
    assert {k[0] for k in alarm_tx} == {rig.eui(P_DOOR), rig.eui(P_TILT)}, sorted(alarm_tx)
    assert all(u["mtype"] == 4 for txs in alarm_tx.values() for u in txs)  # confirmed up
    # the door switch wakes the pole at once; a tilt shows at the next sample (every 60 s);
    # either frame may wait a few seconds for the duty cycle
    for pole, bit, angle, late_s in ((P_DOOR, "door_open", 0.0, 10),
                                     (P_TILT, "tilted", TILT_DEG, 70)):
        eui = rig.eui(pole)
        mine = {k: v for k, v in alarm_tx.items() if k[0] == eui}
        assert len(mine) == 2, (pole, sorted(mine))
        assert all(any(u["received"] for u in txs) for txs in mine.values())  # delivered
        # at MQTT exactly once each, confirmed, on fPort 11
        at_mqtt = rig.mqtt(pole, fport=11)
        assert sorted((m["eui"], m["fcnt"] & 0xFFFF) for m in at_mqtt) == sorted(mine)
        raised, cleared = (values(m) for m in at_mqtt)
        assert all(m["lora"]["confirmed"] is True for m in at_mqtt)
        other = {"door_open": "tilted", "tilted": "door_open"}[bit]
        assert raised["alarms/" + bit] is True and raised["alarms/" + other] is False, raised
        assert raised["alarms"] == 1 << {"door_open": 7, "tilted": 8}[bit], raised
        assert raised["status/" + bit] is True and raised["status/alarm"] is True
        assert raised["tilt_angle"] == pytest.approx(math.radians(angle), abs=0.011)
        assert cleared["alarms"] == 0 and cleared["alarms/" + bit] is False, cleared
        assert cleared["status/" + bit] is False and cleared["status/alarm"] is False
        assert cleared["tilt_angle"] == pytest.approx(0.0, abs=0.011)
        assert cleared["alarm_count"] == (raised["alarm_count"] + 1) % 65536
        # raised right after the incident, cleared right after it ended (virtual time)
        t_raised, t_cleared = (m["records"][0][-3] - EPOCH_S for m in at_mqtt)
        assert opened <= t_raised <= opened + late_s, (pole, t_raised, opened)
        assert closed <= t_cleared <= closed + late_s, (pole, t_cleared, closed)
        # ACKed by the gateway: the MAC counted both acks, no failure, and repeated a frame
        # only as often as the air lost it (the uplink, or the downlink with the ACK)
        mac, m0 = rig.board(pole).app.mac, macs0[pole]
        assert mac.acked - m0["acked"] == 2 and mac.failed == m0["failed"]
        retx = sum(len(txs) - 1 for txs in mine.values())
        assert mac.retransmissions - m0["retx"] == retx
        lost = sum(1 for txs in mine.values() for u in txs[:-1] if not u["received"])
        assert retx <= lost + city.air.counters["downlinks_missed"] - missed0, (pole, mine)
        assert rig.board(pole).counters["crashes"] == 0, rig.board(pole).errors
    stats = rig.gateway.fresh_stats()
    fs, fs0 = stats["forwarder_server"], stats0["forwarder_server"]
    assert fs.get("acks", 0) - fs0.get("acks", 0) >= 4
    assert fs.get("downlink-rx1", 0) + fs.get("downlink-rx2", 0) - fs0.get(
        "downlink-rx1", 0) - fs0.get("downlink-rx2", 0) >= 4


# ---- 2. operator command -------------------------------------------------------------------

def _command(rig, fields):
    cmd = sign({"id": "hil-dim-%d-%d" % (fields.get("seq", 0), fields.get("level", 0)),
                "dev_eui": rig.eui(P_CMD),
                "command": "dim", "fields": fields}, rig.gateway.command_key)
    paho.mqtt.publish.single(COMMANDS, json.dumps(cmd),
                             qos=1, hostname="127.0.0.1", port=rig.broker.port,
                             protocol=paho.mqtt.client.MQTTv311)


def _deliver_command(rig, fields):
    """Publish a dim command, let it ride the reply to the pole's next uplink (every RX1 held
    until the gateway answered, while it waits), run until the pole's ack reached MQTT.
    Returns (the ack at MQTT, the pole's uplinks since the command was queued)."""
    city, gw = rig.city, rig.gateway
    before = gw.fresh_stats()["commands"]
    acks0 = len(rig.mqtt(P_CMD, fport=12))
    _command(rig, fields)
    gw.stats_after(lambda s: s["commands"]["accepted"] == before["accepted"] + 1,
                   what="the gateway to queue the command")
    n = len(city.uplinks)
    city.barriers = "all"  # a queued command rides the reply to any uplink
    try:
        for _ in range(30):  # until the pole sent its ack (at most ~2 report intervals)
            rig.run(30)
            if data_frames(city.uplinks[n:], board=P_CMD, fport=12):
                break
    finally:
        city.barriers = "expected"
    wait_for(lambda: len(rig.mqtt(P_CMD, fport=12)) > acks0, 30, "the pole's ack at MQTT")
    ack = rig.mqtt(P_CMD, fport=12)[acks0:]
    assert len(ack) == 1, ack
    # one downlink, confirmed by TX_ACK; the real firmware's ack closed the command
    stats = gw.stats_after(lambda s: s["commands"]["acknowledged"] == before["acknowledged"] + 1,
                           what="the gateway to match the pole's ack")["commands"]
    assert stats["sent"] - before["sent"] == 1 and stats["awaiting_ack"] == 0
    mine = [u for u in city.uplinks[n:] if u["board"] == P_CMD]
    return ack[0], mine, stats["requeued"] - before["requeued"]


def test_a_dim_command_rides_the_next_reply_is_acked_applied_and_not_repeated(rig):
    rig.start()
    city, board = rig.city, rig.board(P_CMD)
    assert board.outputs()["dimmer_duty_u16"] == level_to_duty(100)  # night: full power
    app0 = dict(commands=board.app.command_port.commands, duplicates=board.app.command_port.duplicates)

    ack, mine, requeued = _deliver_command(rig, {"seq": 7, "level": 50, "fade": 1.0})
    # the pole's ack: fPort 12, the dim command's port and seq, result ok
    assert values(ack) == {"port": 50, "seq": 7, "result": "ok"}
    assert ack["lora"]["fport"] == 12 and ack["lora"]["confirmed"] is False
    # it answered the reply to an uplink: the frame before the ack was heard, and when the
    # first downlink worked it was the pole's first uplink after the command was queued
    i = next(j for j, u in enumerate(mine) if u["fport"] == 12)
    assert i >= 1 and mine[i - 1]["received"], mine[:i + 1]
    if requeued == 0:
        assert i == 1 or not any(u["received"] for u in mine[:i - 1]), mine[:i + 1]
    assert board.app.command_port.commands - app0["commands"] == 1
    assert board.app.command_port.duplicates == app0["duplicates"]

    # the lamp is dimmed, and the next report says so (level and the power the lamp draws)
    n = len(city.uplinks)
    rig.run(REPORT_S + 60)
    assert board.outputs()["dimmer_duty_u16"] == level_to_duty(50)
    rig.drain(delivered_keys(city.uplinks[n:], board=P_CMD))
    report = values([m for m in rig.mqtt(P_CMD, fport=10) if m["fcnt"] > ack["fcnt"]][0])
    assert report["dim_level"] == 50 and report["status/lamp_on"] is True, report
    assert report["lamp_power"] == pytest.approx(30.0, abs=0.2)

    # the same seq again (an operator's resend; a different level, so executing it would
    # show): acknowledged with the stored result, not executed
    ack2, _, _ = _deliver_command(rig, {"seq": 7, "level": 20, "fade": 0})
    assert values(ack2) == {"port": 50, "seq": 7, "result": "ok"}
    assert ack2["fcnt"] > ack["fcnt"]
    n = len(city.uplinks)
    rig.run(REPORT_S + 60)
    assert board.outputs()["dimmer_duty_u16"] == level_to_duty(50)
    rig.drain(delivered_keys(city.uplinks[n:], board=P_CMD))
    report = values([m for m in rig.mqtt(P_CMD, fport=10) if m["fcnt"] > ack2["fcnt"]][0])
    assert report["dim_level"] == 50, report
    assert board.app.command_port.duplicates - app0["duplicates"] == 1  # the pole knew it for a repeat
    assert board.app.command_port.commands - app0["commands"] == 2
    assert board.counters["crashes"] == 0, board.errors


# ---- 3. power cut --------------------------------------------------------------------------

def _rtc_unix_s(board):
    dt = board.machine.RTC().datetime()
    return calendar.timegm((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6])) + dt[7] / 1e6


def test_after_a_power_cut_the_pole_resumes_its_session_energy_and_wall_clock(rig):
    rig.start()
    city, gw, board = rig.city, rig.gateway, rig.board(P_CUT)
    eui = board.dev_eui
    if rig.now_s() < 900:  # enough lamp energy before the cut that a reset would show
        rig.run(900 - rig.now_s())
    rig.drain(delivered_keys(city.uplinks, board=P_CUT))
    before = rig.mqtt(P_CUT)
    assert before
    fcnt_before = before[-1]["fcnt"]
    energy_before = [values(m)["lamp_energy"] for m in rig.mqtt(P_CUT, fport=10)]
    assert energy_before[-1] >= 10, energy_before  # 60 W for a quarter of an hour, at least
    stats0 = gw.fresh_stats()
    n = len(city.uplinks)
    cut = rig.now_s() + 20
    lost = {}
    city.power_cut(cut, P_CUT)
    # right after the cut (same instant, scheduled after it): the RTC has no battery
    city.schedule(cut, lambda c: lost.update(year=board.machine.RTC().datetime()[0],
                                            time_sets=board.app.time_sets))
    rig.run(20 + 2 * REPORT_S + 60)
    assert board.counters["power_cuts"] == 1 and lost == {"year": 2000, "time_sets": 0}
    after_ups = [u for u in city.uplinks[n:] if u["board"] == P_CUT]
    rig.drain(delivered_keys(after_ups))

    # no new join: the session came back from NVS, the gateway accepted no join
    assert [u for u in after_ups if u["mtype"] == 0] == []
    assert board.app.mac.joined and board.app.mac.joins == 0
    after = [m for m in rig.mqtt(P_CUT) if m["fcnt"] > fcnt_before]
    assert len([m for m in after if m["lora"]["fport"] == 10]) >= 2, after
    # the frame counter jumped ahead (the reserved block) and the gateway took it
    first = after[0]["fcnt"]
    assert fcnt_before < first <= fcnt_before + 256, (fcnt_before, first)
    assert {m["lora"]["dev_addr"] for m in before + after} == {before[0]["lora"]["dev_addr"]}
    stats = gw.fresh_stats()
    for key in ("replay", "fcnt-gap", "unknown-dev-addr", "bad-mic", "join"):
        assert stats["uplink"][key] == stats0["uplink"][key], key
    assert stats["forwarder_server"].get("joins-accepted", 0) == stats0["forwarder_server"].get(
        "joins-accepted", 0)
    assert delivered_keys(after_ups) == {(eui, m["fcnt"] & 0xFFFF) for m in after}

    # lamp energy: never backwards across the cut, never more than the lamp drew
    reports = rig.mqtt(P_CUT, fport=10)
    energy = [values(m)["lamp_energy"] for m in reports]
    assert energy == sorted(energy), energy
    assert energy[-1] > energy_before[-1]  # and it goes on counting
    truth = WorldTruth(city.world)
    for m in reports:
        t_us = int((m["records"][0][-3] - EPOCH_S) * 1e6)
        assert values(m)["lamp_energy"] <= truth.energy_wh(P_CUT, t_us) + 1e-6

    # the wall clock: asked with the first uplink after the boot (DeviceTimeReq in FOpts),
    # answered, and the RTC shows the virtual UTC. Both ends run on virtual time (the answer
    # is the rxpk time of the uplink, the pole adds the time since its frame ended), so the
    # only error is the answer's 1/256 s and ms rounding; a pole that forgot the ~1 s from
    # its uplink to the answer would be off by more than 0.1 s
    assert expects_answer(after_ups[0]["phy"])
    assert board.app.time_sets >= 1
    assert stats["forwarder_server"].get("mac-answers", 0) > stats0["forwarder_server"].get(
        "mac-answers", 0)
    assert abs(_rtc_unix_s(board) - city.clock.unix_s(board.now_ms * 1000)) < 0.1
    assert board.counters["crashes"] == 0, board.errors

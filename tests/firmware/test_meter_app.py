"""The meter firmware as main.create builds it (kind "meter"): the real ATM90E32 driver on the
fake SPI bus with the chip's register model at the board's chip select, the EnergyRegister on
the fake NVS, the real Modbus slave on the fake UART, and the real MAC talking to a CPython
network server that checks every byte. Reports and alarms are decoded with protocol's codec and
compared with the chip model's truth (integrated here, independently of the firmware)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import config, main
from firmware.meter_app import _A_COUNTER_RESET as A_COUNTER_RESET  # private const()s: gone on a device
from firmware.meter_app import _RELAY_SETTLE_STEPS as RELAY_SETTLE_STEPS
from firmware.meter_app import _TRIP_STEPS as TRIP_STEPS
from firmware.ticks import TICKS_PERIOD
from protocol import payload
from protocol.modbus import pdu as P
from protocol.modbus import master as MA
from protocol.modbus import registers as M
from protocol.modbus import rtu as R
from sim.devices.atm90e32 import ATM90E32 as Chip
from sim.fakes import esp32, machine
from tests.firmware.scripted_network import CFG, NetworkServer, ScriptedRadio, run
from tests.firmware.vmlib.uart_line import Line

CS, RELAY, DE = 5, 26, 4
VOLTS = (230.0, 231.0, 232.0)


class NoRadio:
    """interfaces "modbus": the test loop's clock without a radio."""

    now = 0

    def next_event(self):
        return None


class Meter:
    """One emulated meter board: fake machine + ATM90E32 model + scripted network, time in ms.
    `load` is the per-phase current (A) the household draws while the relay is closed; pf < 0
    exports. `truth_wh` integrates what went through the meter, import and export."""

    def __init__(self, current=(10.0, 2.0, 1.0), pf=(1.0, 1.0, 1.0), chip=True, rng=lambda n: 0,
                 **cfg):
        self.t = 0
        self.rng = rng
        machine.set_clock(lambda: self.t)
        self.model = Chip(voltage=VOLTS, current=(0.0, 0.0, 0.0), pf=pf)
        if chip:
            machine.spi(2).attach(CS, self.model)
        self.line = machine.uart(1).attach(Line())
        self.load = list(current)
        self.welded = False
        self.truth_wh = [0.0, 0.0]
        self.ns = NetworkServer()
        c = dict(CFG, kind="meter", report_interval_s=60, report_jitter_s=0)
        c.update(cfg)
        self.cfg = c
        self.boots = 0
        self.boot()

    def boot(self):
        lorawan = self.cfg.get("interfaces", "both") != "modbus"
        self.radio = ScriptedRadio(on_uplink=self.ns.on_uplink) if lorawan else NoRadio()
        self.resets = []
        self.app = main.create(machine, esp32, self.cfg, self.radio if lorawan else None,
                               self._sleep_ms, rng=self.rng)
        self.app._reset = lambda: self.resets.append(self.t)
        self.start = self.t
        self._chip_t = self.t
        self._apply_load()
        self.boots += 1

    def _sleep_ms(self, ms):
        self.t += ms
        self.radio.now = self.t

    def _apply_load(self):
        closed = machine.level(RELAY) == 1
        for i in range(3):
            self.model.current[i] = self.load[i] if (closed or self.welded) else 0.0

    def _advance(self, t):
        dt = (t - self._chip_t) / 1000.0
        if dt > 0:
            p = sum(self.model.voltage[i] * self.model.current[i] * self.model.pf[i]
                    for i in range(self.phases()))
            self.truth_wh[0 if p >= 0 else 1] += abs(p) * dt / 3600.0
            self.model.advance(dt)
        self._chip_t = t
        self.t = t
        self._apply_load()  # the relay may have switched in the last poll

    def phases(self):
        return self.cfg.get("phases", 3)

    def run(self, seconds):
        self.t = run(self.app, self.radio, self.t + seconds * 1000, self.t, offset=-self.start,
                     advance=self._advance, clock=lambda: self.t)

    def uplinks(self, port):
        return [(o, payload.decode_uplink(port, o.payload)["fields"])
                for o in self.ns.uplinks if o.frame.fport == port]

    def command(self, name, fields):
        port, data = payload.encode_downlink("meter", name, fields)
        self.ns.downlink = (port, data, False)
        return port

    def power_cut(self):
        """Power off and on: uncommitted NVS, RTC memory, pins and the chip's state are lost."""
        esp32.power_cut()
        machine.power_cut()
        self.model.power_cycle()
        self.boot()

    def modbus(self, req, address=1):
        """One Modbus transaction through the slave on the fake UART."""
        slave = self.app.slave
        self.line.inbox, self.line.out = R.encode_frame(address, MA.encode_request(req)), b""
        t = 0
        for _ in range(400):  # 200 ms of polls every 500 us: the request, t3.5, the reply
            t += 500
            slave.poll(t % TICKS_PERIOD)
        if not self.line.out:
            return None
        a, pdu = R.decode_frame(self.line.out)
        assert a == address
        return MA.decode_response(pdu, req)

    def served_wh(self, address=1):
        return M.decode_block(0x1000, self.modbus(P.ReadRequest(4, 0x1000, 8), address).registers)


@pytest.fixture(autouse=True)
def fresh_board(monkeypatch):
    monkeypatch.setattr(esp32, "FLASH", esp32.Flash())
    machine._buses.clear()
    machine._uarts.clear()
    machine.spi(2).detach(CS)
    machine.power_cut()
    yield
    machine._buses.clear()
    machine._uarts.clear()
    machine.spi(2).detach(CS)
    esp32.power_cut()


def reports(m):
    return [f for _, f in m.uplinks(20)]


# -- reports -----------------------------------------------------------------------------------

def test_reports_carry_the_chip_truth_and_only_committed_energy():
    m = Meter(current=(10.0, 2.0, 3.0), pf=(1.0, 1.0, -1.0), report_interval_s=120)
    m.run(1200)
    rs = reports(m)
    assert len(rs) >= 9
    p_true = 230.0 * 10 + 231.0 * 2 - 232.0 * 3  # W, L3 exports
    for f in rs:
        assert f["status/relay_closed"] and not f["status/alarm"]
        assert f["voltage"] == pytest.approx(230.0, abs=0.1)
        assert f["frequency"] == pytest.approx(50.0, abs=0.1)
        assert f["active_power"] == pytest.approx(p_true, abs=p_true * 0.01)
        assert 0.5 < f["power_factor"] < 0.7  # P / S with L3 exporting
    reg = m.app.hw.register
    # the chip sums the phases (net metering) and counts the truth within 1 %
    assert reg.live()[0] / 1000 == pytest.approx(p_true * 1200 / 3600, rel=0.01)
    m.load = [1.0, 0.0, 5.0]  # the sun comes out: the household exports
    m.run(1200)
    rs = reports(m)
    assert rs[-1]["active_power"] == pytest.approx(230.0 - 232.0 * 5, rel=0.01)
    imp = [f["import_energy"] for f in rs]
    exp = [f["export_energy"] for f in rs]
    assert imp == sorted(imp) and exp == sorted(exp)
    assert imp[-1] >= 600 and exp[-1] >= 250  # commits happened (50 Wh steps)
    # what a report carries is committed: never above the live total, at most a step behind it
    assert imp[-1] <= reg.import_wh() <= reg.live()[0] // 1000
    assert exp[-1] <= reg.export_wh() <= reg.live()[1] // 1000
    assert reg.live()[1] // 1000 - reg.export_wh() < 50
    assert reg.live()[1] / 1000 == pytest.approx(930 * 1200 / 3600, rel=0.01)
    # Modbus serves exactly what the register committed, as the next report will
    assert m.served_wh() == {"energy_import_wh": reg.import_wh(),
                             "energy_export_wh": reg.export_wh()}


def test_single_phase_meter_reports_phase_a():
    m = Meter(current=(4.0, 9.0, 9.0), phases=1, energy_step_wh=10)
    m.run(600)
    f = reports(m)[-1]
    assert f["active_power"] == pytest.approx(920, abs=10)  # L2/L3 ignored
    # 920 W for ~540 s at the last report, committed by 10 Wh steps
    assert 920 * 540 / 3600 - 10 <= f["import_energy"] <= 920 * 600 / 3600
    assert f["power_factor"] == pytest.approx(1.0, abs=0.01)


# -- alarms ------------------------------------------------------------------------------------

def alarms(m):
    return [(o, f) for o, f in m.uplinks(21)]


def test_voltage_alarms_with_hysteresis_are_confirmed_frames():
    m = Meter()
    m.run(30)
    assert alarms(m) == []
    m.model.voltage[1] = 200.0  # L2 sags under 207 V
    m.run(10)
    (o, f), = alarms(m)
    assert o.frame.confirmed
    assert f["alarms/voltage_low"] and f["status/voltage_low"] and f["alarm_count"] == 1
    assert f["voltage_min"] == pytest.approx(200.0, abs=0.2)
    m.model.voltage[1] = 209.0  # inside the band, but not 4 V inside: still low
    m.run(10)
    assert len(alarms(m)) == 1 and m.app.alarm.bits
    m.model.voltage[1] = 231.0
    m.run(10)
    o, f = alarms(m)[-1]
    assert f["alarms"] == 0 and f["alarm_count"] == 2 and not f["status/alarm"]
    m.model.voltage[2] = 260.0
    m.run(10)
    assert alarms(m)[-1][1]["alarms/voltage_high"]


def test_an_unacknowledged_alarm_is_repeated():
    m = Meter(alarm_repeat_s=120, confirmed_retries=1)
    m.run(20)
    m.ns.ack_confirmed = False
    m.model.voltage[0] = 190.0
    m.run(400)
    frames = alarms(m)
    assert len(frames) >= 3 and all(f["alarms/voltage_low"] for _, f in frames)
    assert len({f["alarm_count"] for _, f in frames}) == 1  # repetitions, not new transitions


def test_load_limit_opens_the_relay_and_a_close_command_reconnects():
    m = Meter(current=(10.0, 2.0, 3.0), load_limit_w=3000)  # ~3.46 kW
    m.run(TRIP_STEPS - 2)
    assert machine.level(RELAY) == 1  # an inrush of a few seconds does not trip
    m.run(20)
    assert machine.level(RELAY) == 0
    o, f = alarms(m)[-1]
    assert f["alarms/load_limit"] and f["status/load_limited"] and not f["status/relay_closed"]
    assert f["active_power"] == pytest.approx(3458, rel=0.01)  # the power that tripped it
    m.run(60)
    m.load = [5.0, 2.0, 3.0]  # the customer switched something off
    port = m.command("relay", {"seq": 9, "action": "close"})
    m.run(70)
    acks = [f for _, f in m.uplinks(22)]
    assert {"port": port, "seq": 9, "result": "ok"}.items() <= acks[-1].items()
    assert machine.level(RELAY) == 1
    f = alarms(m)[-1][1]
    assert f["alarms"] == 0 and f["status/relay_closed"] and not f["status/load_limited"]


def modbus_close(m):
    m.modbus(P.WriteSingle(0x3003, M.RELAY_ARM_MAGIC))
    assert m.modbus(P.WriteSingle(0x3004, M.RELAY_CLOSED)) == P.WriteSingle(0x3004, M.RELAY_CLOSED)


def test_relay_commands_persist_over_a_power_cut_and_repeats_are_not_executed_again():
    m = Meter()
    m.run(70)
    m.command("relay", {"seq": 3, "action": "open"})  # rides on the next uplink's RX window
    m.run(130)
    assert machine.level(RELAY) == 0 and not reports(m)[-1]["status/relay_closed"]
    assert not alarms(m)[-1][1]["status/relay_closed"]  # the change went out at once
    m.power_cut()
    assert machine.level(RELAY) == 0  # a power cut does not reconnect a disconnected customer
    m.run(70)
    assert not reports(m)[-1]["status/relay_closed"]
    modbus_close(m)  # reconnected over Modbus: the app notices and keeps it
    m.run(5)
    assert machine.level(RELAY) == 1
    m.power_cut()
    assert machine.level(RELAY) == 1
    m.run(70)
    m.command("relay", {"seq": 4, "action": "open"})
    m.run(70)
    assert machine.level(RELAY) == 0
    machine.soft_reset()  # machine.reset(): RTC memory, with the last seq per fPort, survives
    m.boot()
    m.run(5)
    modbus_close(m)
    m.run(70)
    assert machine.level(RELAY) == 1
    # the network repeats "open seq 4" (it missed the ack): acked with the stored result, not
    # executed again (it would undo the reconnection done since)
    m.command("relay", {"seq": 4, "action": "open"})
    m.run(70)
    assert machine.level(RELAY) == 1 and m.app.command_port.duplicates == 1
    ack = [f for _, f in m.uplinks(22)][-1]
    assert (ack["port"], ack["seq"], ack["result"]) == (70, 4, "ok")


def test_current_through_an_open_relay_is_a_relay_failure():
    m = Meter()
    m.run(70)
    m.welded = True
    m.command("relay", {"seq": 1, "action": "open"})
    m.run(70 + RELAY_SETTLE_STEPS)
    assert machine.level(RELAY) == 0
    f = alarms(m)[-1][1]
    assert f["alarms/relay_failure"] and not f["status/relay_closed"]
    assert f["current"] == pytest.approx(10.0, abs=0.05)


def test_a_missing_chip_is_a_meter_error_and_modbus_still_serves_the_committed_energy():
    m = Meter(current=(20.0, 20.0, 20.0))
    m.run(300)
    served = m.app.hw.register.import_wh()
    assert served > 0
    machine.spi(2).detach(CS)  # the chip stops answering
    m.run(70)
    o, f = alarms(m)[-1]
    assert f["alarms/meter_error"] and f["status/meter_error"] and f["voltage"] is None
    r = reports(m)[-1]
    assert r["status/meter_error"] and r["voltage"] is None and r["import_energy"] == served
    assert m.served_wh()["energy_import_wh"] >= served
    machine.spi(2).attach(CS, m.model)  # back (after a power cycle of its own)
    m.model.power_cycle()
    m.run(70)
    f = alarms(m)[-1][1]
    assert not f["alarms/meter_error"] and not f["alarms/counter_reset"]  # recovery, not a reset


def test_absent_at_boot_is_a_fault_not_a_crash():
    m = Meter(chip=False)
    assert any(f.startswith("ATM90E32") for f in m.app.hw.faults)
    m.run(70)
    assert alarms(m)[0][1]["alarms/meter_error"]
    assert reports(m)[0]["import_energy"] == 0
    assert m.served_wh() == {"energy_import_wh": 0, "energy_export_wh": 0}


def test_a_chip_reset_while_running_raises_counter_reset_until_delivered():
    m = Meter()
    m.run(70)
    m.model.power_cycle()  # a brown-out of the chip alone
    m.run(70)
    assert m.app.hw.chip.resets == 1
    frames = alarms(m)
    assert frames[0][1]["alarms/counter_reset"] and frames[0][0].frame.confirmed
    # delivered (acked): the event clears with the next frame
    assert frames[-1][1]["alarms"] == 0 and not m.app.alarm.bits & A_COUNTER_RESET
    assert frames[-1][1]["alarm_count"] == 2


# -- commands ----------------------------------------------------------------------------------

def test_meter_config_changes_thresholds_and_load_limit_and_survives_a_reboot():
    m = Meter()
    m.run(70)
    port = m.command("meter_config", {"seq": 1, "voltage_low": 235.0})  # above L1..L3
    m.run(70)
    assert alarms(m)[-1][1]["alarms/voltage_low"]
    m.command("meter_config", {"seq": 2, "voltage_low": 240.0, "voltage_high": 239.0})
    m.run(70)
    acks = [f for _, f in m.uplinks(22)]
    assert [(a["port"], a["seq"], a["result"]) for a in acks] == [(port, 1, "ok"),
                                                                  (port, 2, "bad_value")]
    m.command("meter_config", {"seq": 3, "voltage_low": 200.0, "load_limit": 1000})
    m.run(70)
    assert machine.level(RELAY) == 0  # 2.99 kW over the new 1 kW limit
    m.power_cut()
    assert m.app.voltage_low_mv == 200000 and m.app.load_limit_w == 1000
    assert machine.level(RELAY) == 0 and m.app.load_limited  # still open by the limit


def test_config_reboot_and_unknown_ports():
    m = Meter()
    m.run(70)
    m.command("config", {"seq": 1, "report_interval": 300})
    m.run(70)
    assert m.app.report_timer.interval_s == 300
    n = len(reports(m))
    m.run(600)
    assert len(reports(m)) - n in (1, 2)
    m.command("reboot", {"seq": 2, "delay": 5})
    m.run(310)
    assert len(m.resets) == 1
    m.ns.downlink = (50, bytes([1, 3, 50, 0, 0]), False)  # a pole's dim command
    m.run(310)
    acks = [(f["port"], f["seq"], f["result"]) for _, f in m.uplinks(22)]
    assert acks == [(61, 1, "ok"), (60, 2, "ok"), (50, 3, "unknown_port")]
    assert m.app.command_port.commands == 3 and m.app.command_port.bad == 1


def test_without_a_relay_a_relay_command_fails_and_the_load_limit_only_alarms_nothing():
    m = Meter(relay_pin=None, load_limit_w=1000)
    m.run(70)
    m.command("relay", {"seq": 1, "action": "open"})
    m.run(70)
    ack = [f for _, f in m.uplinks(22)][-1]
    assert (ack["port"], ack["seq"], ack["result"]) == (70, 1, "failed")
    assert reports(m)[-1]["status/relay_closed"] and not m.app.load_limited


# -- interfaces --------------------------------------------------------------------------------

def test_modbus_only_has_no_mac_and_no_radio_and_serves_the_provisioned_address():
    m = Meter(interfaces="modbus", modbus_address=7, modbus_baud=19200, serial_number=4711)
    assert m.app.mac is None and m.app.hw.nvs is None
    polls = []
    m.t = run(m.app, m.radio, 600000, 0, advance=m._advance, clock=lambda: m.t, polls=polls)
    assert polls[0] <= 610  # about one poll per metering step: no busy loop without reports
    slave = m.app.slave
    assert slave.address == 7 and slave.line()[0] == 19200
    ident = M.decode_block(0x2000, m.modbus(P.ReadRequest(4, 0x2000, 7), address=7).registers)
    assert ident["serial"] == 4711
    got = m.served_wh(address=7)
    assert got["energy_import_wh"] == m.app.hw.register.import_wh() > 0
    # a Modbus write of the address is kept in NVS and wins over the config after a power cut
    assert m.modbus(P.WriteSingle(0x3000, 9), address=7) == P.WriteSingle(0x3000, 9)
    m.power_cut()
    assert m.app.slave.address == 9


def test_lorawan_only_has_no_slave_and_no_uart():
    m = Meter(interfaces="lorawan")
    assert m.app.slave is None and m.app.hw.uart is None and m.app.hw.de is None
    m.run(130)
    assert len(reports(m)) >= 2


def test_serial_number_defaults_to_the_dev_eui():
    m = Meter(interfaces="modbus")
    assert m.app.slave.serial == int(CFG["dev_eui"][-8:], 16)


def test_meter_config_errors_are_clear():
    for bad, msg in (({"interfaces": "rs232"}, "interfaces"), ({"phases": 2}, "phases"),
                     ({"modbus_baud": 9700}, "modbus_baud"),
                     ({"modbus_address": 0}, "modbus_address"),
                     ({"calibration": {"ugain": [1, 2]}}, "ugain"),
                     ({"calibration": {"gain": 1}}, "unknown key"),
                     ({"calibration": {"meter_constant": 0}}, "positive"),
                     ({"energy_step_wh": 0}, "energy_step_wh"), ({"dimmer_pin": 25}, "dimmer_pin"),
                     ({"voltage_low_v": 260}, "voltage_low_v"), ({"calibration": []}, "dict")):
        with pytest.raises(config.ConfigError, match=msg):
            config.merge(dict(bad, kind="meter"))
    cfg = config.merge({"kind": "meter", "calibration": {"ugain": [0x8000, 0x8100, 0x7F00]}})
    assert "door_pin" not in cfg and cfg["rs485_de_pin"] == DE
    assert config.merge({})["door_pin"] == 27 and "interfaces" not in config.merge({})


def test_calibration_from_config_reaches_the_chip():
    m = Meter(calibration={"ugain": [0x7000, 0x8000, 0x8000], "meter_constant": 1600})
    assert m.app.hw.chip.mc == 1600 and m.model.read_reg(0x61) == 0x7000
    m.run(70)
    assert reports(m)[0]["voltage"] == pytest.approx(230.0 * 0x7000 / 0x8000, abs=0.2)
    assert m.model.read_reg(0x31) << 16 | m.model.read_reg(0x32) == 450000000000 // 1600


# -- power cuts --------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=1000, max_value=400000), min_size=1, max_size=4),
       step=st.sampled_from([5, 20, 50]))
def test_energy_is_monotonic_across_power_cuts_and_never_above_what_a_cut_restores(cuts, step):
    esp32.FLASH = esp32.Flash()
    machine.spi(2).detach(CS)
    machine.power_cut()
    m = Meter(current=(20.0, 10.0, 5.0), pf=(1.0, 1.0, -1.0), energy_step_wh=step,
              report_interval_s=30)
    seen = []  # (import, export) of every report and Modbus read, in order

    def collect():
        seen.extend((f["import_energy"], f["export_energy"]) for f in reports(m))
        m.ns.uplinks = [o for o in m.ns.uplinks if o.frame.fport != 20]

    for dt in cuts:
        m.run(dt / 1000)
        collect()
        seen.append(tuple(m.served_wh().values()))
        before = max(i for i, _ in seen), max(e for _, e in seen)
        m.power_cut()
        reg = m.app.hw.register
        # after the cut the register is at least everything that ever left the meter ...
        assert reg.import_wh() >= before[0] and reg.export_wh() >= before[1]
        # ... and never more than went through it
        assert reg.import_wh() <= m.truth_wh[0] * 1.01 + 1
        assert reg.export_wh() <= m.truth_wh[1] * 1.01 + 1
    m.run(90)
    collect()
    imports = [i for i, _ in seen]
    exports = [e for _, e in seen]
    assert imports == sorted(imports) and exports == sorted(exports)
    assert len(seen) > len(cuts)

"""DeviceApp: what every streetgrid device application (PoleApp, MeterApp) shares on the network
side - periodic reports (ReportTimer), the alarm uplink (AlarmUplink), commands executed once
and acked (CommandPort), the reboot command (Reboot), fPort 61 config - and the counters under
the names tests, the simulator and the READMEs use. A subclass provides execute_command(port,
fields) for its own commands and calls config_command() / reboot_command() for the common ones;
own_settings() -> dict and restore_settings(dict) for what it keeps in NVS.
"""

from firmware.alarm_uplink import AlarmUplink
from firmware.command_port import CommandPort, apply_config
from firmware.nvs_store import NvsStore
from firmware.poll_clock import PollClock
from firmware.reboot import Reboot
from firmware.report_timer import ReportTimer

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_PROVEN_MS = const(600000)  # polls without a network that prove a boot healthy


def encode_uplink(kind, message, fields):
    """(fport, bytes) of uplink `message` of `kind` (protocol.payload.encode_uplink), with the
    payload package loaded for this frame only: a device drops it after each frame (2.5 KB of
    heap for a few frames an hour; payload.unload)."""
    from protocol import payload

    try:
        return payload.encode_uplink(kind, message, fields)
    finally:
        payload.unload()


class DeviceApp:
    safe_mode = False  # firmware/safe_mode.py's SafeMode says True
    wdt = None  # machine.WDT, started by main.create(); fed by _supervise()
    boot_failures = 0  # main.create(): boots in a row not proved healthy, this one included
    esp32 = None  # main.create(): the esp32 module (OTA partitions)
    boot_report = None  # main.create(): the boot frame's fields (boot_health.report) until sent
    _told = None  # safe_modes of the boot frame in flight

    def __init__(self, kind, hw, cfg, ports, rtc_magic, clock=None, rng=None, reset=None):
        self.kind = kind
        self.hw = hw
        self.cfg = cfg
        self.mac = None
        self.radio_error = None  # the radio's boot error (startup._boot_radio), None if it answered
        # the drivers' sleep_ms goes through clock (main.create), so a poll knows how long its
        # reads blocked: the MAC is polled with the tick after them, when it transmits
        self._clock = clock or PollClock()
        self._rng = rng or (lambda n: 0)  # rng(n) -> 0..n-1: report jitter
        self._reset = reset or hw.reset
        self._mono = None
        self._store = NvsStore(hw.app_nvs) if hw.app_nvs is not None else None
        self.utc_offset_min = cfg["utc_offset_min"]
        self.report_timer = ReportTimer(cfg["report_interval_s"], cfg["report_jitter_s"], self._rng)
        self.alarm = AlarmUplink(self._store, cfg["alarm_repeat_s"], kind)
        self.command_port = CommandPort(kind, ports, hw.rtc, rtc_magic, self.execute_command)
        self._reboot = Reboot()
        self.reports = 0
        self.last_report = None  # fields of the last frames encoded, for tests and the simulator
        self.last_alarm = None

    def _supervise(self, mono):
        """At the start of every poll: feed the watchdog (this poll beginning means the one
        before returned; a driver that hangs stops the feeding and the WDT resets the board; on
        a meter a hung Modbus task blocks the event loop and so these polls too), and until it
        has happened once, see whether this boot has proved itself healthy: joined or resumed
        with an uplink sent, or _PROVEN_MS of polls (firmware/boot_health.py)."""
        if self.wdt is not None:
            self.wdt.feed()
        if self.boot_report is not None:
            self._send_boot_report()
        if self.boot_failures:
            mac = self.mac
            if mono >= _PROVEN_MS or (mac is not None and mac.joined and mac.uplinks):
                from firmware import boot_health
                from firmware.main import unload

                kept = boot_health.passed(self._store, self.esp32, self.hw.faults)
                self.boot_failures = 0
                unload(("firmware.boot_health",))
                if not kept:
                    self._reset()  # the app on trial failed its self-test: the good slot

    def _send_boot_report(self):
        """The boot frame (fPort 13 / 23) queued at the first poll, confirmed: confirmed frames
        go first, so it is this boot's first uplink after the join or the restored session.
        Modbus only (no MAC): there is no uplink to tell it in."""
        f = self.boot_report
        self.boot_report = None
        if self.mac is None:
            return
        print("main: boot frame: reset %d, %d failed boots before, %d safe modes%s"
              % (f["reset_cause"], f["failed_boots"], f["safe_modes"],
                 " (one not reported yet)" if f["events"] else ""))
        port, data = encode_uplink(self.kind, "boot", f)
        if self.mac.send(port, data, True, "boot"):
            self._told = f["safe_modes"]

    def attach(self, mac):
        self.mac = mac
        mac.on_downlink = self._on_downlink
        mac.on_result = self._on_result

    def _on_downlink(self, fport, data):
        self.command_port.handle(fport, data, self.mac)

    def _on_result(self, tag, acked):
        if tag == "boot":
            if acked and self._store is not None:
                from firmware import boot_health
                from firmware.main import unload

                boot_health.told(self._store, self._told)  # (not acked: the next boot tells)
                unload(("firmware.boot_health",))
            return
        self.alarm.on_result(tag, acked, None if self._mono is None else self._mono.ms)

    def load_settings(self):
        """The settings the network changed (saved by save_settings) back at boot; the
        subclass takes its own with restore_settings(dict)."""
        s = self._store.load_json("settings") if self._store is not None else None
        if not isinstance(s, dict):
            return
        self.utc_offset_min = s.get("utc_min", self.utc_offset_min)
        self.report_timer.interval_s = s.get("report_s", self.report_timer.interval_s)
        self.alarm.repeat_s = s.get("repeat_s", self.alarm.repeat_s)
        self.restore_settings(s)

    def save_settings(self):
        """Save the settings (the subclass's own_settings() dict plus the common ones) as JSON
        in NVS, after a command changed one."""
        if self._store is None:
            return
        s = self.own_settings()
        s["utc_min"] = self.utc_offset_min
        s["report_s"] = self.report_timer.interval_s
        s["repeat_s"] = self.alarm.repeat_s
        self._store.save_json("settings", s)

    def config_command(self, f, mono):
        """fPort 61."""
        utc = apply_config(f, self.report_timer, self.alarm, mono)
        if utc is not None:
            self.utc_offset_min = utc
        self.save_settings()

    def reboot_command(self, f, mono):
        """fPort 60: reset after the delay, once the ack is out."""
        self._reboot.request(mono, f["delay"])

    def queue_report(self, port, data, fields):
        """A report to the MAC: every confirmed_report_every-th confirmed, so a session the
        network lost (the device keeps its session across reboots) ends in failed confirmed
        uplinks and a new join."""
        n = self.cfg["confirmed_report_every"]
        confirmed = n > 0 and self.reports % n == n - 1
        if self.mac is not None:
            self.mac.send(port, data, confirmed, "report")
        self.reports += 1
        self.last_report = fields

    def network_wake(self, mono, wake, reports=True):
        """wake (monotonic ms) brought forward to the reboot's, the alarm repetition's and
        (reports) the next report's deadlines. Allocates nothing (idle polls must not)."""
        t = self._reboot.wake(mono)
        if t is not None and t < wake:
            wake = t
        t = self.alarm.repeat_at
        if t is not None and t < wake:
            wake = t
        if reports:
            t = self.report_timer.wake()
            if t is not None and t < wake:
                wake = t
        return wake

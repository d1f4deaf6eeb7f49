"""`streetgrid-field verify`: is this board, as it stands on the bench or the pole, a working
device? It resets the board, reads its serial console through the boot (the banner, boot
errors, the join, the first report) and looks for the same device at the gateway: in the
gateway's stats.json (its `devices` section) or in the readings it publishes on MQTT. It ends
with one PASS line, or one FAIL line that says what to check.

Why both sides: a console that shows a join and an uplink proves the radio and the keys; only
the gateway proves the frame arrived and was accepted under the session that join made (the
DevAddr the console prints is the one the gateway assigned), and that readings flow on.

The console lines it reads are the firmware's (docs/technician-guide.md lists them):
    main: boot <kind> DevEUI <EUI> board <board> reset <cause> unproven <n>
    main: BOOT ERROR <what>: <error>
    safe_mode: ...
    lorawan: join-request <n>, DevNonce <d>
    lorawan: joined, DevAddr <hex>  |  lorawan: session restored, DevAddr <hex>
    lorawan: uplink FCnt <n> fPort <p> confirmed <0|1>
"""

import json
import os
import re
import time

from fieldkit.board_link import BoardError

DEFAULT_TIMEOUT_S = 180  # join jitter and back-off, the first uplink's jitter (60 s), margin
GATEWAY_GRACE_S = 30  # after the console's first report: a stats.json rewrite (10 s) and more

_BANNER = re.compile(r"main: boot (\w+) DevEUI ([0-9A-Fa-f]{16}) board (\S+) reset (\d+) "
                     r"unproven (\d+)")
_JOINED = re.compile(r"lorawan: (joined|session restored), DevAddr ([0-9A-F]{8})")
_JOIN_REQ = re.compile(r"lorawan: join-request (\d+)")
_UPLINK = re.compile(r"lorawan: uplink FCnt (\d+) fPort (\d+)")
RESET_CAUSES = {1: "power-on", 2: "hard reset", 3: "watchdog reset", 4: "deep sleep",
                5: "software reset"}


class VerifyFailed(Exception):
    """What failed and what to check, in one line."""


class Console:
    """What the console said so far, digested (feed() it lines)."""

    def __init__(self):
        self.lines = []
        self.banner = None  # (kind, dev_eui, board, reset cause, unproven boots)
        self.faults = []
        self.safe_mode = False
        self.boot_frame = None  # what the boot frame tells (resets, failed boots, safe modes)
        self.join_requests = 0
        self.joined = None  # ("joined" | "session restored", DevAddr hex)
        self.report = None  # (fcnt, fport) of the first report uplink
        self.traceback = None
        self.rom_error = None
        self.repl = False  # MicroPython's banner or prompt without our app

    def feed(self, line):
        self.lines.append(line)
        m = _BANNER.search(line)
        if m:
            self.banner = (m.group(1), m.group(2).upper(), m.group(3), int(m.group(4)),
                           int(m.group(5)))
            n = self.banner[4]
            return "boot: %s %s on board %s after a %s; %s" % (
                self.banner[0], self.banner[1], self.banner[2],
                RESET_CAUSES.get(self.banner[3], "reset %d" % self.banner[3]),
                "the boots before were healthy" if n == 1 else
                "%d boots in a row before this one crashed or were reset before proving "
                "healthy" % (n - 1) if n else "safe mode")
        if "main: BOOT ERROR" in line:
            self.faults.append(line.split("BOOT ERROR", 1)[1].strip())
            return "FAULT: " + self.faults[-1]
        if line.startswith("safe_mode:"):
            self.safe_mode = True
            return "SAFE MODE: " + line
        if line.startswith("main: boot frame:"):
            self.boot_frame = line.split(":", 2)[2].strip()
            return "boot frame for the operator: " + self.boot_frame
        m = _JOIN_REQ.search(line)
        if m:
            self.join_requests = int(m.group(1))
            return "join-request %d sent" % self.join_requests
        m = _JOINED.search(line)
        if m:
            self.joined = (m.group(1), m.group(2))
            return "%s, DevAddr %s" % self.joined
        m = _UPLINK.search(line)
        if m and self.report is None and self.banner is not None:
            fcnt, fport = int(m.group(1)), int(m.group(2))
            if fport == _report_port(self.banner[0]):
                self.report = (fcnt, fport)
                return "first report sent: FCnt %d, fPort %d" % self.report
        if line.startswith("Traceback") and self.traceback is None:
            self.traceback = line
            return "the firmware crashed: " + line
        if "invalid header" in line:
            self.rom_error = line.strip()
        if line.startswith("MicroPython v") or line.startswith(">>>"):
            self.repl = True
        return None


def _report_port(kind):
    from protocol.payload import UP

    return UP.get(kind, {}).get("report")


# ---- the gateway side ----------------------------------------------------------------------

class StatsWatcher:
    """The device in the gateway's stats.json (section `devices`)."""

    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            raise BoardError("gateway stats %s: no such file (the gateway writes "
                             "<data_dir>/stats.json; is it running, is the path right?)" % path)

    def seen(self, dev_eui, dev_addr, fcnt, since):
        """None while not seen yet, else the line to print."""
        try:
            with open(self.path) as f:
                dev = json.load(f).get("devices", {}).get(dev_eui)
        except (OSError, ValueError):
            return None  # being rewritten, or unreadable for a moment
        if not dev or dev.get("dev_addr") != dev_addr or (dev.get("fcnt") or -1) < fcnt:
            return None
        if dev.get("last_uplink") is None or dev["last_uplink"] < since:
            return None
        return "gateway: DevAddr %s, uplink FCnt %d accepted (RSSI %s dBm, SNR %s dB), %d " \
               "join(s) since the gateway started" % (dev_addr, dev["fcnt"], dev.get("rssi"),
                                                       dev.get("snr"), dev.get("joins", 0))

    def close(self):
        pass


class MqttWatcher:
    """The device's readings in the batches the gateway publishes (docs/wire-format.md)."""

    def __init__(self, url, topic="streetgrid/+/+/readings"):
        import threading
        from urllib.parse import urlsplit

        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise BoardError("--mqtt must look like mqtt://HOST:PORT, got %r" % url)
        self._records = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        try:
            self._client.connect(parts.hostname, parts.port or 1883, keepalive=30)
        except OSError as e:
            raise BoardError("cannot reach the MQTT broker at %s: %s" % (url, e.strerror or e)) \
                from None
        self._client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise BoardError("the MQTT broker at %s did not accept the subscription to %s"
                             % (url, topic))

    def _on_message(self, client, userdata, msg):
        from gateway.backhaul.batch import decode_batch

        try:
            records = decode_batch(msg.payload)["records"]
        except ValueError:
            return
        with self._lock:
            self._records.extend(records)

    def seen(self, dev_eui, dev_addr, fcnt, since):
        bn = "urn:dev:eui64:%s:" % dev_eui.lower()
        with self._lock:
            records = list(self._records)
        for i, r in enumerate(records):
            lora = r.get("lora") if isinstance(r, dict) else None
            if r.get(-2) != bn or not isinstance(lora, dict):
                continue
            if lora.get("dev_addr") == dev_addr and lora.get("fcnt", -1) >= fcnt:
                n = 0
                for rr in records[i + 1:]:
                    if isinstance(rr, dict) and -2 in rr:
                        break
                    n += 1
                best = max(lora.get("copies") or [{}], key=lambda c: c.get("snr", -99))
                return "gateway: published FCnt %d from DevAddr %s with %d reading(s) (RSSI " \
                       "%s dBm, SNR %s dB)" % (lora["fcnt"], dev_addr, n + 1, best.get("rssi"),
                                               best.get("snr"))
        return None

    def close(self):
        self._client.loop_stop()
        self._client.disconnect()


# ---- the run -------------------------------------------------------------------------------

def verify(port, gateway_stats=None, mqtt_url=None, timeout_s=DEFAULT_TIMEOUT_S, reset=True,
           out=print, baud=115200):
    """Raises VerifyFailed (what to check) or BoardError (the port); returns the Console."""
    watcher = None
    if gateway_stats:
        watcher = StatsWatcher(gateway_stats)
    elif mqtt_url:
        watcher = MqttWatcher(mqtt_url)
    try:
        return _run(port, watcher, timeout_s, reset, out, baud)
    finally:
        if watcher is not None:
            watcher.close()


def _open(port, baud, reset):
    """(BoardLink, its serial port) after resetting the board through mpremote's transport,
    the same serial handle kept, so that no byte of the boot is lost between two opens."""
    from fieldkit.board_link import BoardLink, NoMicroPython

    link = BoardLink(port, baud)
    link.open_port()
    if not reset:
        return link, link.serial
    try:
        link.enter_raw_repl()
    except NoMicroPython as e:
        raise VerifyFailed(str(e).split(": ", 1)[1]) from None
    except BoardError:
        raise VerifyFailed("%s: MicroPython does not answer on the console: flash it "
                           "(streetgrid-field flash), or press reset and try again" % port) \
            from None
    return link, link.reset_and_listen()


def _run(port, watcher, timeout_s, reset, out, baud):
    link, serial = _open(port, baud, reset)
    console = Console()
    since = time.time() - 1
    deadline = time.monotonic() + timeout_s
    gateway_line = None
    report_at = None
    try:
        buf = b""
        while time.monotonic() < deadline:
            chunk = serial.read(max(1, serial.in_waiting))
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip("\r")
                said = console.feed(line)
                if said:
                    out("verify: " + said)
            if console.traceback is not None or console.safe_mode:
                break
            if console.report is not None:
                if watcher is None:
                    break
                gateway_line = watcher.seen(console.banner[1], console.joined[1],
                                            console.report[0], since)
                if gateway_line:
                    out("verify: " + gateway_line)
                    break
                if report_at is None:
                    report_at = time.monotonic()
                    deadline = min(deadline, report_at + GATEWAY_GRACE_S)
    finally:
        link.close()
    _judge(console, watcher, gateway_line, timeout_s)
    out("verify: PASS: %s %s boots, joins and reports%s" % (
        console.banner[0], console.banner[1],
        "; the gateway accepted its first report" if watcher is not None else
        " (the gateway side was not checked: give --gateway-stats or --mqtt)"))
    return console


def _judge(c, watcher, gateway_line, timeout_s):
    if c.banner is None:
        if c.rom_error:
            raise VerifyFailed("no MicroPython on the board (the ROM says %r): run "
                               "streetgrid-field flash" % c.rom_error)
        if c.repl:
            raise VerifyFailed("MicroPython runs but the streetgrid app did not start: run "
                               "streetgrid-field deploy, then provision")
        raise VerifyFailed("nothing from the board within %d s: check the cable and the port, "
                           "press reset" % timeout_s)
    if c.traceback is not None:
        tail = [x for x in c.lines[c.lines.index(c.traceback):] if x.strip()][-1:]
        raise VerifyFailed("the firmware crashed at boot (%s): deploy again; if it repeats, "
                           "send the console log to the developers" % (tail[0].strip(),))
    if c.safe_mode:
        raise VerifyFailed("the board is in safe mode after %d failed boots: read the console "
                           "for the BOOT ERROR lines, fix the board or its config (provision "
                           "--reconfigure), then reset it" % c.banner[4])
    radio = [f for f in c.faults if f.startswith("radio")]
    if radio:
        raise VerifyFailed("the radio does not answer (%s): is --board %s the board on the "
                           "bench? provision --reconfigure --board ... if not; else check the "
                           "radio module" % (radio[0], c.banner[2]))
    if c.joined is None:
        if c.join_requests:
            raise VerifyFailed("%d join-request(s) sent, no join-accept: is the device in the "
                               "gateway's registry (provision --registry), the gateway running, "
                               "a forwarder in range, the AppKey the one registered?"
                               % c.join_requests)
        raise VerifyFailed("no join-request within %d s: is the board's config.json there "
                           "(provision)?" % timeout_s)
    if c.report is None:
        raise VerifyFailed("joined (DevAddr %s) but no report within %d s: check the console "
                           "log; report_interval_s 0 disables reports" % (c.joined[1], timeout_s))
    if watcher is not None and not gateway_line:
        raise VerifyFailed("the console sent FCnt %d as DevAddr %s, but the gateway has not "
                           "accepted it: is this the gateway the device joined (another one in "
                           "range?), is it writing its stats / publishing?"
                           % (c.report[0], c.joined[1]))
    if c.faults:
        raise VerifyFailed("the device works but reports boot errors: %s: check those "
                           "sensors' wiring" % "; ".join(c.faults))

"""CommandPort: a device's downlink commands, decoded, executed once and acknowledged.

Every command frame starts with the codec version (1) and a seq; the ack (fPort 12 for a pole,
22 for a meter) echoes the fPort, the seq and a result code (protocol.payload ACK_RESULTS). The
last (seq, result) per command fPort is kept in RTC memory, which survives machine.reset(): a
repeat (the network resending a command whose ack it missed) is acked with the stored result
and NOT executed again, so a repeated reboot cannot reboot twice and a repeated relay command
cannot undo what happened since. What a command does is the application's `execute(fport,
fields) -> result index`; a ValueError / TypeError / KeyError from it is bad_value.

apply_config() is what fPort 61 (config, common to every kind) changes: the report interval,
the alarm repetition and the UTC offset.
"""


try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


PORT_REBOOT = 60
PORT_CONFIG = 61
_RESULTS = const(("ok", "unknown_port", "bad_version", "bad_length", "bad_value", "failed"))
OK = 0
_UNKNOWN_PORT = const(1)
_BAD_VERSION = const(2)
_BAD_LENGTH = const(3)
BAD_VALUE = 4
FAILED = 5


class CommandPort:
    """Counters: commands (frames received), duplicates (repeats acked, not executed), bad
    (refused)."""

    def __init__(self, kind, ports, rtc, magic, execute):
        self.kind = kind
        self.ports = ports
        self._rtc = rtc
        self._magic = magic  # 4 bytes marking our record in RTC memory
        self._execute = execute
        self._seen = {}  # fPort -> (seq, result index)
        self.commands = 0
        self.duplicates = 0
        self.bad = 0
        self._load_seen()

    def _load_seen(self):
        try:
            mem = self._rtc.memory()
        except Exception:  # no RTC memory (a board without it, a fake): start empty
            return
        if mem[:4] != self._magic:
            return
        for i in range(4, len(mem) - 2, 3):
            self._seen[mem[i]] = (mem[i + 1], mem[i + 2])

    def _save_seen(self):
        b = bytearray(self._magic)
        for port in self._seen:
            seq, res = self._seen[port]
            b.append(port)
            b.append(seq)
            b.append(res)
        try:
            self._rtc.memory(b)
        except Exception:
            pass

    def ack(self, mac, port, seq, result):
        from firmware.device_app import encode_uplink  # (device_app imports this module)

        ack_port, data = encode_uplink(self.kind, "ack", {"port": port, "seq": seq,
                                                          "result": _RESULTS[result]})
        if mac is not None:
            mac.send(ack_port, data)

    def handle(self, fport, data, mac):
        """A downlink on fport (the MAC's on_downlink): execute once, then ack."""
        self.commands += 1
        seq = data[1] if len(data) > 1 else 0
        seen = self._seen.get(fport)
        if seen is not None and seen[0] == seq:
            self.duplicates += 1
            self.ack(mac, fport, seq, seen[1])
            return
        if fport not in self.ports:
            result = _UNKNOWN_PORT
        elif not data:
            result = _BAD_LENGTH
        elif data[0] != 1:
            result = _BAD_VERSION
        else:
            from protocol import payload  # for this frame only (payload.unload)

            try:
                fields = payload.decode_downlink(fport, data)["fields"]
            except payload.PayloadError as e:
                result = _BAD_LENGTH if "length" in str(e) else BAD_VALUE
            else:
                try:
                    result = self._execute(fport, fields)
                except (ValueError, TypeError, KeyError):
                    result = BAD_VALUE
            payload.unload()
        if fport in self.ports:
            self._seen[fport] = (seq, result)
            self._save_seen()
        if result:
            self.bad += 1
            print("%s: command on fPort %d seq %d refused: %s" % (self.kind, fport, seq,
                                                                _RESULTS[result]))
        self.ack(mac, fport, seq, result)


def apply_config(f, reports, alarms, mono):
    """fPort 61's fields onto a ReportTimer and an AlarmUplink (None = leave unchanged);
    returns the new UTC offset in minutes, or None."""
    if f["report_interval"] is not None:
        reports.set_interval(f["report_interval"], mono)
    if f["alarm_repeat"] is not None:
        alarms.repeat_s = f["alarm_repeat"]
    return f["utc_offset"]

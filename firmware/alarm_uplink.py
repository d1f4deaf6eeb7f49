"""AlarmUplink: a device's alarm bitmap, sent as a confirmed uplink whenever it changes.

A change (a bit raised or cleared) makes a frame due at once; while the last frame is not
acknowledged by the network it is due again every repeat_s (0 = never), so an alarm is not lost
with one frame. alarm_count counts transitions since commissioning and is kept in NVS: each
frame carries it, so the network can tell how many changes it missed. The application builds
the frame (its own fields, one snapshot) and hands it to send().
"""


class AlarmUplink:
    def __init__(self, store, repeat_s, name):
        self._store = store  # firmware.nvs_store.NvsStore or None
        self._name = name  # for the console line
        self.repeat_s = repeat_s
        self.bits = 0
        self.count = (store.load("alarm_count") or 0) if store is not None else 0
        self.frames = 0
        self.due = False
        self.repeat_at = None  # monotonic ms of the next repetition

    def update(self, bits):
        """The bitmap now; True (and a frame due) when it changed."""
        if bits == self.bits:
            return False
        print("%s: alarms 0x%04x -> 0x%04x" % (self._name, self.bits, bits))
        x = bits ^ self.bits
        while x:
            self.count += x & 1
            x >>= 1
        self.bits = bits
        self.due = True
        if self._store is not None:
            self._store.save("alarm_count", self.count)
        return True

    def poll(self, mono):
        """True when a frame is due now (a change, or the repetition of an unacknowledged one)."""
        if self.repeat_at is not None and mono >= self.repeat_at:
            self.due = True
        return self.due

    def send(self, mac, port, data):
        """Queue the frame as a confirmed uplink tagged "alarm"; False if the MAC's queue is
        full (still due, tried again at the next poll). Without a MAC it counts as sent."""
        if mac is None or mac.send(port, data, True, "alarm"):
            self.due = False
            self.repeat_at = None
            self.frames += 1
            return True
        return False

    def on_result(self, tag, acked, mono):
        """The MAC's verdict on a confirmed uplink: an unacknowledged alarm is repeated."""
        if tag != "alarm" or acked:
            return
        if self.repeat_s and mono is not None:
            self.repeat_at = mono + self.repeat_s * 1000

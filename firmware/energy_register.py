"""Import and export energy registers (integer mWh) that never go backwards across power cuts.

Rule: only a value already durable in NVS ever leaves the meter. The live totals are kept in
RAM; `served()` returns the last *committed* totals, and that is what Modbus, LoRaWAN reports
and any display must use. A commit is: write the next of two slots ("<prefix>0", "<prefix>1",
alternating), then `nvs.commit()`; only when commit() returned do the served values move up.
Each slot is a 25-byte blob: 0xE1, seq u32, import mWh u64, export mWh u64 (little-endian),
CRC-32 of the 21 bytes before it. At boot the valid slot with the highest seq wins, so a write
torn by a power cut (bad CRC, or a commit that never happened) leaves the previous slot, which
holds at least every value ever served. Hence after ANY cut at ANY instant:
    register after boot >= the last value served or reported   (never backwards)
and the energy never invents anything (the register restarts at a value that was measured).

When a commit happens (checked by add() and poll()): as soon as either total is `step_mwh`
or more ahead of the committed one, or when energy has been waiting uncommitted for
`period_ms`. So (defaults: step 50 Wh, period 1 h):
  - loss per cut, per direction: less than step_mwh, and no more than the energy of the last
    period_ms, whichever is less; plus what the chip counted since its last read (one read
    interval, 1 s in the meter) and the one delta being added when the cut hit a commit;
  - NVS commits per day <= import_Wh_per_day / step + export_Wh_per_day / step
    + 86400 s / period: a household at 1 kW average: 480 + 24 = 504 a day; a 10 kW load
    running all day: 4824 a day.
Flash wear: a 25-byte blob is 3 NVS entries of 32 B (blob index, chunk header, data), 42 commits
per 4 KB page; MicroPython's ESP32 partition table gives NVS 0x6000 (6 pages, rotated), so each
page is erased once per ~252 commits; at 100 000 erase cycles per sector (the ESP32 module's
SPI NOR) that is ~25 M commits: ~137 years at 504 a day, ~14 years at 4824 a day (shared with
the LoRaWAN counters' few writes). Espressif's rule of thumb in micropython.md (4 bytes a minute
for 10 years) is far more conservative: 504 x 96 B a day is ~34 B/min, so a bigger step (or a
bigger NVS partition, lifetime scales with its pages) is the lever if a utility wants margin.

EnergyRegister(nvs, step_mwh=50000, period_ms=3600000, prefix="e"): nvs is an esp32.NVS
(namespace of the caller's choosing). add(import_mwh, export_mwh, now_ms), poll(now_ms),
save() (commit now, e.g. on a power-fail warning), served() -> (import_mwh, export_mwh),
import_wh(), export_wh() (served, whole Wh), live() -> (import_mwh, export_mwh); counters
commits, bad_slots (slots found torn or corrupt at boot), save_errors (a failed commit
is counted and printed, the served values stay, the next poll retries).
"""

from firmware.ticks import ticks_diff

_MAGIC = 0xE1
_LEN = 25


def crc32(data, n):
    """CRC-32 (IEEE 802.3, as zlib/binascii.crc32) of data[:n]; bitwise, no table (RAM).

    Kept in two 16-bit halves: a 32-bit value is past MicroPython's small ints (31 bits), so
    one register would allocate a long int at every bit step, about 12 KB of garbage a commit."""
    hi = lo = 0xFFFF
    for i in range(n):
        lo ^= data[i]
        for _ in range(8):
            odd = lo & 1
            lo = (lo >> 1) | ((hi & 1) << 15)
            hi >>= 1
            if odd:
                hi ^= 0xEDB8
                lo ^= 0x8320
    return (hi ^ 0xFFFF) << 16 | (lo ^ 0xFFFF)


def _put(buf, off, value, n):
    for i in range(n):
        buf[off + i] = (value >> (8 * i)) & 0xFF


def _get(buf, off, n):
    v = 0
    for i in range(n - 1, -1, -1):
        v = v << 8 | buf[off + i]
    return v


class EnergyRegister:
    def __init__(self, nvs, step_mwh=50000, period_ms=3600000, prefix="e"):
        if step_mwh < 1 or period_ms < 1:
            raise ValueError("step_mwh and period_ms must be positive")
        self._nvs = nvs
        self.step_mwh = step_mwh
        self.period_ms = period_ms
        self._keys = (prefix + "0", prefix + "1")
        self._buf = bytearray(_LEN)
        self.commits = 0
        self.bad_slots = 0
        self.save_errors = 0
        best = None
        for slot in (0, 1):
            rec = self._load(slot)
            if rec is not None and (best is None or rec[0] > best[0]):
                best = rec + (slot,)
        if best is None:
            self.seq, imp, exp, self._next_slot = 0, 0, 0, 0
        else:
            self.seq, imp, exp = best[0], best[1], best[2]
            self._next_slot = 1 - best[3]
        self._saved = [imp, exp]
        self._live = [imp, exp]
        self._dirty_since = None

    def _load(self, slot):
        buf = self._buf
        try:
            n = self._nvs.get_blob(self._keys[slot], buf)
        except OSError:
            return None  # never written
        if n != _LEN or buf[0] != _MAGIC or crc32(buf, 21) != _get(buf, 21, 4):
            self.bad_slots += 1
            return None
        return _get(buf, 1, 4), _get(buf, 5, 8), _get(buf, 13, 8)

    def live(self):
        return self._live[0], self._live[1]

    def served(self):
        """The totals that may leave the meter: committed, so never above what a boot restores."""
        return self._saved[0], self._saved[1]

    def import_wh(self):
        return self._saved[0] // 1000

    def export_wh(self):
        return self._saved[1] // 1000

    def add(self, import_mwh, export_mwh, now_ms):
        if import_mwh < 0 or export_mwh < 0:
            raise ValueError("energy only accumulates: %d, %d" % (import_mwh, export_mwh))
        if import_mwh or export_mwh:
            self._live[0] += import_mwh
            self._live[1] += export_mwh
            if self._dirty_since is None:
                self._dirty_since = now_ms
        self.poll(now_ms)

    def poll(self, now_ms):
        """Commit when a step is reached or energy waited period_ms; returns True if it did."""
        if self._dirty_since is None:
            return False
        if (self._live[0] - self._saved[0] >= self.step_mwh
                or self._live[1] - self._saved[1] >= self.step_mwh
                or ticks_diff(now_ms, self._dirty_since) >= self.period_ms):
            self.save()
            return True
        return False

    def save(self):
        """Commit the live totals now; False (counted in save_errors) if NVS failed."""
        imp, exp = self._live[0], self._live[1]
        seq = self.seq + 1
        buf = self._buf
        buf[0] = _MAGIC
        _put(buf, 1, seq, 4)
        _put(buf, 5, imp, 8)
        _put(buf, 13, exp, 8)
        _put(buf, 21, crc32(buf, 21), 4)
        try:
            self._nvs.set_blob(self._keys[self._next_slot], buf)
            self._nvs.commit()
        except OSError as e:  # NVS full or failing: keep serving the old values, retry next poll
            self.save_errors += 1
            print("energy_register: commit failed:", e)
            return False
        # durable from here on: only now may the served values move up
        self.commits += 1
        self.seq = seq
        self._next_slot = 1 - self._next_slot
        self._saved[0], self._saved[1] = imp, exp
        self._dirty_since = None
        return True

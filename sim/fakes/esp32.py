"""A fake of MicroPython's `esp32` module for emulated boards: NVS with power-cut semantics.

`NVS(namespace)` follows MicroPython's API (set_i32/get_i32/set_blob/get_blob/erase_key/commit).
Committed values live in a module-level Flash that outlives the board's Python objects, so a
test can "cut power" (drop everything not committed) and boot the firmware again. Like the
MicroPython docs say, nothing persists without commit(). Keys are limited to 15 characters and a
missing key raises OSError, as on the chip. Commits are counted to measure flash wear.

`FLASH.on_commit(flash)`, if set, runs inside every commit() before it returns, so a simulator
can make the committed state durable outside the process (sim/nvs_file.py): then a killed
process is a power cut, and what a commit() that returned promised is on disk.
"""

import errno


class Flash:
    """The NVS partition: committed key/values per namespace, and a commit counter."""

    def __init__(self):
        self.data = {}
        self.commits = 0
        self.on_commit = None  # fn(flash) called at the end of each commit()


FLASH = Flash()
_open = []  # NVS handles of the current "boot", whose pending writes a power cut drops


def power_cut():
    """Lose every uncommitted NVS write, as a power cut would."""
    for nvs in _open:
        nvs._pending.clear()
    del _open[:]


def _check_key(key):
    if not isinstance(key, str) or not 0 < len(key) <= 15:
        raise OSError(errno.EINVAL, "NVS key must be 1..15 characters")


class NVS:
    def __init__(self, namespace):
        _check_key(namespace)
        self._ns = namespace
        self._pending = {}
        _open.append(self)

    def _get(self, key):
        _check_key(key)
        if key in self._pending:
            value = self._pending[key]
        else:
            value = FLASH.data.get(self._ns, {}).get(key)
        if value is None:
            raise OSError(errno.ENOENT, "ESP_ERR_NVS_NOT_FOUND")
        return value

    def set_i32(self, key, value):
        _check_key(key)
        if not -(1 << 31) <= value < (1 << 31):
            raise OverflowError("value must fit a signed 32-bit integer")
        self._pending[key] = ("i32", value)

    def get_i32(self, key):
        kind, value = self._get(key)
        if kind != "i32":
            raise OSError(errno.EINVAL, "ESP_ERR_NVS_TYPE_MISMATCH")
        return value

    def set_blob(self, key, value):
        _check_key(key)
        self._pending[key] = ("blob", bytes(value))

    def get_blob(self, key, buffer):
        kind, value = self._get(key)
        if kind != "blob":
            raise OSError(errno.EINVAL, "ESP_ERR_NVS_TYPE_MISMATCH")
        if len(buffer) < len(value):
            raise OSError(errno.EINVAL, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[: len(value)] = value
        return len(value)

    def erase_key(self, key):
        self._get(key)  # raises if missing
        self._pending[key] = None

    def commit(self):
        ns = FLASH.data.setdefault(self._ns, {})
        for key, value in self._pending.items():
            if value is None:
                ns.pop(key, None)
            else:
                ns[key] = value
        self._pending.clear()
        FLASH.commits += 1
        if FLASH.on_commit is not None:
            FLASH.on_commit(FLASH)

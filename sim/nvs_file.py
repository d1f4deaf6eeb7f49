"""Emulated boards' committed NVS kept in one file on disk, so killing the simulator process
(SIGKILL) is a power cut and the next run boots every board from what its firmware committed.

Why atomic: the file is rewritten whole on every commit() of any board (write a temporary file
in the same directory, fsync it, rename it over the old one, fsync the directory), so at any
instant the file holds one complete committed state, the newest commit that returned. A kill
between two commits loses nothing committed, exactly like NVS on the chip.

Format (JSON, one object): {"format": 1, "boards": {name: {namespace: {key: [kind, value]}}}},
kind "i32" (value an int) or "blob" (value lower-case hex). A file that does not parse is an
NvsFileError naming it (never silently an empty flash: the energy must not go back to 0).

    nf = NvsFile(path)                  # reads the file if it exists
    nf.attach("meter-3", esp32.FLASH)   # load that board's flash from it, save on each commit
"""

import json
import os

FORMAT = 1


class NvsFileError(ValueError):
    """The NVS file exists but cannot be used (names the file and why)."""


def _encode(data):
    out = {}
    for ns, keys in data.items():
        out[ns] = {k: [kind, value.hex() if kind == "blob" else value]
                   for k, (kind, value) in keys.items()}
    return out


def _decode(data):
    out = {}
    for ns, keys in data.items():
        out[ns] = {}
        for k, (kind, value) in keys.items():
            if kind == "blob":
                value = bytes.fromhex(value)
            elif kind != "i32" or not isinstance(value, int):
                raise ValueError("%s/%s: bad entry %r" % (ns, k, [kind, value]))
            out[ns][k] = (kind, value)
    return out


class NvsFile:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.writes = 0
        self._flashes = {}  # board name -> the fake esp32 Flash whose data is saved
        self._stored = {}  # board name -> decoded data read from the file
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            raise NvsFileError("%s: %s" % (self.path, e.strerror)) from None
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError("format %r, expected %d" % (doc.get("format"), FORMAT))
            self._stored = {name: _decode(d) for name, d in doc["boards"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise NvsFileError("%s is not an NVS file: %s" % (self.path, e)) from None

    def names(self):
        """Boards the file holds."""
        return sorted(self._stored)

    def attach(self, name, flash):
        """Give board `name` its stored flash (if any) and save the file on each of its
        commits. Returns True if the board had a stored flash (it boots warm)."""
        stored = self._stored.get(name)
        if stored is not None:
            flash.data.clear()
            flash.data.update({ns: dict(keys) for ns, keys in stored.items()})
        self._flashes[name] = flash
        flash.on_commit = lambda _flash: self.save()
        return stored is not None

    def save(self):
        """Write every attached board's committed data (plus boards the file held that are
        not attached now, kept as they were) atomically."""
        boards = {name: _encode(d) for name, d in self._stored.items()}
        for name, flash in self._flashes.items():
            boards[name] = _encode(flash.data)
        text = json.dumps({"format": FORMAT, "boards": boards}, sort_keys=True)
        directory = os.path.dirname(self.path)
        tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(self.path), os.getpid()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.writes += 1

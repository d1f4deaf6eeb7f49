"""A/B app slots: which of the board's two romfs partitions holds the app a boot runs.

Why outside both slots: a new image cannot be trusted to choose itself, so the choice lives on
the board's file system, in /slots.json, and in this module, which `streetgrid-field deploy`
installs there (as /app_slots.mpy, with the /boot.py that calls select() at every boot).

/slots.json: {"good": G, "trial": T or null, "tried": 0 or 1, "rolled_back": T (after one)}.
- deploy writes a new image into the slot that is not good, checks it by SHA-256, then makes it
  the trial (tried 0). A power cut before that leaves the good slot as it was, and chosen.
- select(), at boot: a trial not tried yet is tried (tried 1, written before it runs). A trial
  tried already failed to prove itself healthy (it crashed, hung until the watchdog, failed its
  self-test): back to the good slot, unless this boot follows a power-on (a power cut during
  the trial is not the image's fault). The chosen slot's image is then mounted at /rom.
- keep_trial(), from firmware.boot_health once the app proved itself healthy: good = trial.
Writes go to /slots.tmp, renamed over /slots.json: a power cut leaves the old or the new file.
"""

import json
import os

PATH = "/slots.json"
TMP = "/slots.tmp"


def read():
    """The slots' state, or None (no A/B deploy yet: partition 0 alone)."""
    try:
        with open(PATH) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def write(s):
    with open(TMP, "w") as f:
        json.dump(s, f)
    os.rename(TMP, PATH)


def select(machine, vfs, sys):
    """Choose and mount this boot's slot -> its number."""
    s = read()
    if s is None:
        return 0
    good = s.get("good", 0)
    trial = s.get("trial")
    slot = good
    if trial is not None:
        if not s.get("tried"):
            s["tried"] = 1
            write(s)
            slot = trial
        elif machine.reset_cause() == machine.PWRON_RESET:
            slot = trial
        else:
            s["trial"] = None
            s["rolled_back"] = trial
            write(s)
            print("boot: the app in slot %d did not prove itself healthy: back to slot %d"
                  % (trial, good))
    if slot:
        try:
            vfs.umount("/rom")
        except OSError:
            pass  # partition 0 held no image
        vfs.mount(vfs.VfsRom(vfs.rom_ioctl(2, slot)), "/rom")
        if "/rom" not in sys.path:
            sys.path.insert(0, "/rom")
    print("boot: app slot %d%s" % (slot, " (on trial)" if slot == trial else ""))
    return slot


def keep_trial():
    """The app on trial proved itself healthy: it becomes the good slot -> True if there was a
    trial."""
    s = read()
    if s is None or s.get("trial") is None:
        return False
    s["good"] = s["trial"]
    s["trial"] = None
    s["tried"] = 0
    write(s)
    print("main: the app in slot %d proved itself healthy: kept" % s["good"])
    return True


def on_trial():
    s = read()
    return s is not None and s.get("trial") is not None

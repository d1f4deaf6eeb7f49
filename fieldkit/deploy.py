"""Installing the app on a board: the firmware image of this checkout into the board's romfs
partition (where its bytecode runs in place, see fieldkit.image), and the two-line /main.py that
runs it, each checked by SHA-256 on the board and skipped when it is already there.

Why hashes on the board: a technician re-running deploy on twenty poles should wait only for the
ones that changed, and a write that did not take (a flash going bad, a cable pulled) must be seen
before the board is left on the pole. The image goes in through `mpremote romfs deploy`, the
documented way; the hashes and /main.py through mpremote's transport (fieldkit.board_link).

Not yet here (issue #11): A/B slots with a trial boot and rollback; this writes the single romfs
partition a stock ROMFS build has.
"""

import hashlib
import os
import subprocess
import sys
import tempfile

from fieldkit import image
from fieldkit.board_link import BoardError, BoardLink

MAIN_PY = b"from firmware import main\nmain.run()\n"


def _romfs_digest(link, n):
    """(partition size, SHA-256 of its first n bytes) on the board; raises BoardError when the
    board has no romfs partition."""
    link.exec("import vfs, hashlib\n_n = vfs.rom_ioctl(1) if hasattr(vfs, 'rom_ioctl') else 0\n"
              "_p = vfs.rom_ioctl(2, 0) if _n > 0 else -1")
    size = link.eval("-1 if isinstance(_p, int) else len(_p)")  # an int: no partition
    if size <= 0:
        raise BoardError("%s: the board's MicroPython has no romfs partition: flash a build "
                         "with one (see the technician guide)" % link.port)
    if n > size:
        raise BoardError("%s: the image (%d bytes) is bigger than the board's romfs partition "
                         "(%d bytes)" % (link.port, n, size))
    digest = link.eval("hashlib.sha256(_p[:%d]).digest()" % n)
    return size, digest


def _mpremote_romfs_deploy(port, data):
    fd, path = tempfile.mkstemp(suffix=".romfs")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "romfs",
                               "deploy", path], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(path)
    if proc.returncode != 0 or "ROMFS image deployed" not in proc.stdout:
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        raise BoardError("%s: mpremote romfs deploy failed: %s"
                         % (port, lines[-1] if lines else "exit status %d" % proc.returncode))


def deploy(port, out=print, baud=115200, data=None):
    """Install this checkout's app on the board at port. data: the image bytes (default: built
    now by fieldkit.image). -> {"image": "written" | "unchanged", "main.py": ...}."""
    if data is None:
        data = image.build()[1]
    want = hashlib.sha256(data).digest()
    done = {}
    with BoardLink(port, baud) as link:
        _, have = _romfs_digest(link, len(data))
    if have == want:
        done["image"] = "unchanged"
    else:
        out("%s: writing the image (%d bytes) to the romfs partition" % (port, len(data)))
        _mpremote_romfs_deploy(port, data)
        done["image"] = "written"
    with BoardLink(port, baud) as link:
        if done["image"] == "written":
            _, have = _romfs_digest(link, len(data))
            if have != want:
                raise BoardError("%s: the romfs partition does not hold what was written "
                                 "(flash failing?): deploy again, replace the board if it "
                                 "repeats" % port)
        if link.file_sha256("/main.py") == hashlib.sha256(MAIN_PY).digest():
            done["main.py"] = "unchanged"
        else:
            link.write_file("/main.py", MAIN_PY)
            done["main.py"] = "written"
    out("%s: image %s (sha256 %s), /main.py %s; reset the board to run it"
        % (port, done["image"], want.hex()[:16], done["main.py"]))
    return done

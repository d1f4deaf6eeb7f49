"""A board's MicroPython REPL over its serial port, through mpremote's own transport.

Why mpremote's transport: it is what technicians already run (`mpremote connect PORT ...`), it
speaks the raw REPL and its file commands correctly, and its errors are the ones the docs list.
This module only turns its failures into one line a technician can act on (BoardError).
"""

import contextlib
import hashlib
import io
import os


ENTER_ATTEMPTS = 3  # tries to reach the raw REPL (each waits up to mpremote's own 10 s)


class BoardError(RuntimeError):
    """The board could not be reached or refused a command; the message says what to check."""


class BoardLink:
    """Open with `with BoardLink(port) as board:`; the port is held exclusively meanwhile."""

    def __init__(self, port, baud=115200):
        self.port = port
        self.baud = baud
        self._t = None

    def __enter__(self):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        if not os.path.exists(self.port):
            raise BoardError("%s: no such port (is the board plugged in? `ls /dev/tty*`)"
                             % self.port)
        try:
            # a read timeout, so a silent line (no MicroPython, a hung board) ends in
            # enter_raw_repl's own 10 s limit instead of blocking forever in the first read
            self._t = SerialTransport(self.port, baudrate=self.baud, exclusive=True, timeout=1)
        except TransportError:
            raise BoardError("%s: cannot open the port (busy: close mpremote, screen or the "
                             "serial monitor that holds it)" % self.port) from None
        for attempt in range(ENTER_ATTEMPTS):
            try:
                # mpremote prints what it got instead of the raw REPL's banner: not for the user
                with contextlib.redirect_stdout(io.StringIO()):
                    self._t.enter_raw_repl(soft_reset=False)
                return self
            except TransportError:
                # a board that was resetting (a crash's reset, the app's reboot) hears nothing
                # for a second: try again, as a technician would
                continue
        self.close()
        raise BoardError("%s: the board does not answer on its REPL (is MicroPython "
                         "flashed? press reset and try again)" % self.port)

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._t is not None:
            try:
                self._t.exit_raw_repl()
            except Exception:  # noqa: BLE001 - the port may already be gone
                pass
            self._t.close()
            self._t = None

    def _fail(self, what, e):
        text = str(e).strip().splitlines()
        return BoardError("%s: %s failed on the board: %s"
                          % (self.port, what, text[-1] if text else type(e).__name__))

    def exec(self, code):
        """Run code on the board -> its stdout (bytes)."""
        try:
            return self._t.exec(code)
        except Exception as e:  # TransportError / TransportExecError
            raise self._fail("exec", e) from None

    def eval(self, expr):
        """The value of a Python expression on the board (its repr parsed back)."""
        try:
            return self._t.eval(expr)
        except Exception as e:  # noqa: BLE001
            raise self._fail("eval", e) from None

    def write_file(self, path, data):
        """Write path on the board, whole or not at all: written beside it (path + ".tmp"),
        checked by its SHA-256 read back from the board, then renamed over it. A power cut or a
        pulled cable in the middle leaves the old file (a torn /main.py would not boot)."""
        tmp = path + ".tmp"
        try:
            self._t.fs_writefile(tmp, data)
            digest = self._t.fs_hashfile(tmp, "sha256")
        except Exception as e:  # noqa: BLE001
            raise self._fail("writing " + path, e) from None
        if digest != hashlib.sha256(data).digest():
            raise BoardError("%s: %s on the board does not match what was written (flash "
                             "full or failing?)" % (self.port, path))
        self.exec("import os\nos.rename(%r, %r)" % (tmp, path))

    def read_file(self, path):
        """The bytes of path on the board, or None when it does not exist."""
        try:
            if not self._t.fs_exists(path):
                return None
            return self._t.fs_readfile(path)
        except Exception as e:  # noqa: BLE001
            raise self._fail("reading " + path, e) from None

    def file_sha256(self, path):
        """SHA-256 of path on the board, or None when it does not exist."""
        try:
            if not self._t.fs_exists(path):
                return None
            return self._t.fs_hashfile(path, "sha256")
        except Exception as e:  # noqa: BLE001
            raise self._fail("hashing " + path, e) from None

"""A board's MicroPython REPL over its serial port, through mpremote's own transport.

Why mpremote's transport: it is what technicians already run (`mpremote connect PORT ...`), it
speaks the raw REPL and its file commands correctly, and its errors are the ones the docs list.
This module only turns its failures into one line a technician can act on (BoardError).
"""

import contextlib
import hashlib
import io
import os
import time


ENTER_ATTEMPTS = 3  # tries to reach the raw REPL (each waits up to mpremote's own 10 s)
LISTEN_S = 2.0  # how long the first Ctrl-C's answer is listened to (a ROM loop, a prompt)


class BoardError(RuntimeError):
    """The board could not be reached or refused a command; the message says what to check."""


class NoMicroPython(BoardError):
    """The board answers with its ROM's boot loop: nothing bootable is flashed."""


class BoardLink:
    """Open with `with BoardLink(port) as board:`; the port is held exclusively meanwhile."""

    def __init__(self, port, baud=115200):
        self.port = port
        self.baud = baud
        self._t = None
        self._raw = False  # in the raw REPL: close() leaves it

    def __enter__(self):
        self.open_port()
        self.enter_raw_repl()
        return self

    def open_port(self):
        """The port held, nothing sent yet (raises BoardError)."""
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        if not os.path.exists(self.port):
            raise BoardError("%s: no such port (is the board plugged in? `ls /dev/tty*`)"
                             % self.port)
        try:
            # a read timeout, so a silent line (no MicroPython, a hung board) ends in
            # enter_raw_repl's own 10 s limit instead of blocking forever in the first read
            self._t = SerialTransport(self.port, baudrate=self.baud, exclusive=True, timeout=1)
            self._raw = False
        except TransportError:
            raise BoardError("%s: cannot open the port (busy: close mpremote, screen or the "
                             "serial monitor that holds it)" % self.port) from None

    def _no_micropython(self):
        """The ROM's boot loop ("invalid header") never stops talking, and mpremote's
        read_until gives up only after a silence: on such a board it would wait forever. So
        listen to the answer to a Ctrl-C first, with a deadline of our own; MicroPython's
        prompt ends it at once."""
        line = self._t.serial
        line.write(b"\r\x03")
        heard = b""
        end = time.monotonic() + LISTEN_S
        while time.monotonic() < end:
            heard += line.read(line.in_waiting or 1)
            if b"invalid header" in heard:
                return True
            if heard.endswith(b">>> ") or b"raw REPL" in heard:
                return False
        return False

    def _rom_loop(self):
        self.close()
        raise NoMicroPython("%s: no MicroPython on the board (its ROM says \"invalid header\": "
                            "nothing bootable in flash): run streetgrid-field flash" % self.port)

    def enter_raw_repl(self):
        from mpremote.transport import TransportError

        if self._no_micropython():
            self._rom_loop()
        for attempt in range(ENTER_ATTEMPTS):
            said = io.StringIO()  # mpremote prints what it got instead of the raw REPL's banner
            try:
                with contextlib.redirect_stdout(said):
                    self._t.enter_raw_repl(soft_reset=False)
                self._raw = True
                return
            except TransportError:
                if "invalid header" in said.getvalue():  # the ROM loop began after listening
                    self._rom_loop()
                # a board that was resetting (a crash's reset, the app's reboot) hears nothing
                # for a second: try again, as a technician would
                continue
        self.close()
        raise BoardError("%s: the board does not answer on its REPL (is MicroPython "
                         "flashed? press reset and try again)" % self.port)

    @property
    def serial(self):
        """The open port (pyserial), to read the console."""
        return self._t.serial

    def reset_and_listen(self):
        """machine.reset() (as `mpremote reset` does) -> the serial port, kept open so that no
        byte of the boot is lost; close() then only closes it."""
        self._t.exec_raw_no_follow("import machine\nmachine.reset()")
        self._raw = False
        return self.serial

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._t is not None:
            try:
                if self._raw:
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

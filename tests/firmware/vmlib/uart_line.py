"""Line: the far end of a fake UART (`machine.uart(id).attach(Line())`) for tests that talk to
the Modbus slave a whole frame at a time, without wire timing: `inbox` is what a master put on
the wire, `out` what the slave wrote. `de` (optional, () -> level) checks that the slave drives
DE high whenever it writes. Runs on CPython and on the MicroPython VM (tests mount this
directory as /lib/vmlib)."""


class Line:
    def __init__(self, de=None):
        self.inbox = b""
        self.out = b""
        self._de = de

    def uart_read(self, n):
        d, self.inbox = self.inbox[:n], self.inbox[n:]
        return d

    def uart_write(self, data):
        if self._de is not None:
            assert self._de() == 1, "DE low while writing"
        self.out += data

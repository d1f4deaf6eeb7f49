"""SLIP framing (RFC 1055) as Espressif's serial bootloaders use it: every frame starts and ends
with 0xC0; inside, 0xC0 travels as 0xDB 0xDC and 0xDB as 0xDB 0xDD.

The decoder is incremental because a serial port hands over arbitrary chunks, and it never
raises: a bootloader on a noisy line must resynchronise on the next 0xC0, not stop. Bytes
outside a frame are line noise (counted, then dropped); a frame with an invalid escape is
dropped whole (counted), so the host's retry is what recovers. Empty frames are discarded
(RFC 1055): a 0xC0 that would end one starts the next frame instead, which is what lets a
stream that joined mid-frame lock on again at the next frame boundary.
"""

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD


def encode(payload):
    """One frame: the delimiters around the escaped payload."""
    body = bytes(payload).replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class Decoder:
    def __init__(self):
        self._frame = None  # None: between frames; bytearray: inside one
        self._escaped = False
        self._bad = False
        self.noise = 0  # bytes seen between frames
        self.dropped = 0  # frames dropped for an invalid escape

    def feed(self, data):
        """The frames completed by `data`, in order."""
        frames = []
        for b in bytes(data):
            if self._frame is None:
                if b == END:
                    self._frame, self._escaped, self._bad = bytearray(), False, False
                else:
                    self.noise += 1
            elif b == END:
                if not self._frame and not self._bad and not self._escaped:
                    continue  # an empty frame: this 0xC0 opens the next one
                if self._bad or self._escaped:
                    self.dropped += 1
                else:
                    frames.append(bytes(self._frame))
                self._frame = None
            elif self._escaped:
                self._escaped = False
                if b == ESC_END:
                    self._frame.append(END)
                elif b == ESC_ESC:
                    self._frame.append(ESC)
                else:
                    self._bad = True
            elif b == ESC:
                self._escaped = True
            else:
                self._frame.append(b)
        return frames

"""The decoding half of the payload interpreter (see codec.py): a frame's bytes to engineering
values, read from a compact layout of the device tables. Imported on first use, so a device
that only sends reports never loads it.
"""

import struct

from protocol.payload.codec import _WIDE, VERSION, PayloadError, label


def _fill(fields, t, i, out, lay):
    for f in fields:
        name = f[0]
        r = t[i]
        if f[1] in _WIDE:
            r += t[i + 1] << 16
            i += 2
        else:
            i += 1
        if r == f[2] and f[2] is not None:
            out[name] = None
            continue
        bits = f[8]
        enum = f[9]
        if bits is not None:
            out[name] = r
            b = 0
            for bname in bits:
                if bname is not None:
                    out[name + "/" + bname] = (r >> b) & 1 == 1
                b += 1
        elif enum is not None:
            if not 0 <= r < len(enum):
                raise PayloadError("%s: %s: unknown code %d" % (label(lay), name, r))
            out[name] = enum[r]
        else:
            if f[10]:  # e4m12
                r = (r & 0xFFF) << (r >> 12)
            if f[4] == 1:
                out[name] = r * f[3] + f[5]
            else:
                out[name] = r * f[3] / f[4] + f[5]


def _length_error(lay, n):
    fmt, _, size, rfmt, _, rsize = lay[6]
    if rfmt is None:
        return PayloadError("%s: wrong length %d bytes, expected %d" % (label(lay), n, size))
    return PayloadError("%s: wrong length %d bytes, expected %d + %d x n (n = 0..%d)"
                        % (label(lay), n, size, rsize, lay[5][1]))


def decode(lay, data):
    """{"kind", "message" | "command", "version", "fields"} for one frame of compact layout
    `lay`."""
    n = len(data)
    if n and data[0] != VERSION:
        raise PayloadError("%s: unsupported version %d, expected %d" % (label(lay), data[0], VERSION))
    fmt, _, size, rfmt, _, rsize = lay[6]
    out = {}
    if rfmt is None:
        if n != size:
            raise _length_error(lay, n)
        _fill(lay[4], struct.unpack(fmt, data), 1, out, lay)
    else:
        rep = lay[5]
        count = (n - size) // rsize if n >= size else -1
        if count < 0 or count > rep[1] or size + count * rsize != n:
            raise _length_error(lay, n)
        _fill(lay[4], struct.unpack_from(fmt, data, 0), 1, out, lay)
        entries = []
        for k in range(count):
            e = {}
            _fill(rep[2], struct.unpack_from(rfmt, data, size + k * rsize), 0, e, lay)
            entries.append(e)
        out[rep[0]] = entries
    what = "message" if lay[2] == "up" else "command"
    return {"kind": lay[1], what: lay[3], "version": VERSION, "fields": out}

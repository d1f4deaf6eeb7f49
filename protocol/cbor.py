"""Deterministic CBOR (RFC 8949) for the device and the gateway.

The encoder writes only the deterministic form of RFC 8949 section 4.2.1 (shortest arguments,
definite lengths, map keys sorted bytewise by their encoding, floats in the shortest of
half / single / double that keeps the value, NaN as f97e00), so equal data gives equal bytes
on an ESP32 and on the gateway. micropython-lib's cbor2 port writes every float as a double
and MicroPython's struct has no 'e' format, hence this module.

The decoder accepts any well-formed CBOR (indefinite lengths too) but is built for hostile
input: every length is checked against the bytes that remain before anything is allocated,
nesting and item counts are bounded, and any malformation raises CBORError (a ValueError).

Tags come back as Tag objects, tag 1 (epoch time) included, so that decoding and re-encoding
keeps them; bignums (tags 2 / 3) are not converted and the encoder refuses integers outside
[-2**64, 2**64 - 1]. Map keys must be int, str, bytes, bool, None or float (not NaN, which
equals nothing) on both sides; keys that are equal in Python (1, 1.0 and True; 0.0 and -0.0)
count as duplicates.

On a single-precision MicroPython port (ESP32) every float fits in 32 bits, so floats never
take more than 5 bytes there, and decoded doubles are rounded to single precision.
"""

import struct
from math import copysign, frexp, isinf, ldexp

_pack = struct.pack
_unpack = struct.unpack
_unpack_from = struct.unpack_from
_FMT = (">B", ">H", ">I", ">Q")


class CBORError(ValueError):
    """Malformed or hostile CBOR input, or a value that has no deterministic encoding."""


class Tag:
    """A tagged data item, e.g. Tag(1, 1700000000) for an epoch time."""

    def __init__(self, tag, value):
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag < 0x10000000000000000:
            raise CBORError("tag number must be an int in 0..2**64-1, got %r" % (tag,))
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """A simple value with no Python equivalent (0..19, 23 = undefined, 32..255)."""

    def __init__(self, value):
        if not isinstance(value, int) or not (0 <= value < 20 or value == 23 or 32 <= value < 256):
            raise CBORError("invalid simple value %r" % (value,))
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return self.value

    def __repr__(self):
        return "Simple(%d)" % self.value


UNDEFINED = Simple(23)
_KEY_TYPES = (int, str, bytes, float, bool, type(None))  # allowed map keys (exact types)

# --- encoder ----------------------------------------------------------------------------------


def _head(buf, major, n):
    """Append a header (major type already shifted into bits 5-7) with the shortest argument."""
    if n < 24:
        buf.append(major | n)
    elif n < 0x100:
        buf.append(major | 24)
        buf.append(n)
    elif n < 0x10000:
        buf += _pack(">BH", major | 25, n)
    elif n < 0x100000000:
        buf += _pack(">BI", major | 26, n)
    elif n < 0x10000000000000000:
        buf += _pack(">BQ", major | 27, n)
    else:
        raise CBORError("integer %d does not fit in 64 bits (bignums are not supported)" % n)


def _half(x):
    """IEEE half-precision bits of x if x (finite, non-zero) is exactly representable, else None.

    Done by hand because MicroPython's struct has no 'e'; frexp and scaling by powers of two
    are exact, so this also holds on single-precision ports.
    """
    m, e = frexp(x)  # |x| = m * 2**e, 0.5 <= m < 1
    sign = 0x8000 if m < 0 else 0
    m = abs(m)
    if -13 <= e <= 16:  # normal: biased exponent e + 14 in 1..30, 11 significant bits
        f = m * 2048
        if f == int(f):
            return sign | ((e + 14) << 10) | (int(f) - 1024)
    elif -23 <= e <= -14:  # subnormal: a multiple of 2**-24
        f = ldexp(m, e + 24)
        if f == int(f):
            return sign | int(f)
    return None


def _float(buf, x):
    if x != x:
        buf += b"\xf9\x7e\x00"
        return
    if isinf(x):
        buf += b"\xf9\x7c\x00" if x > 0 else b"\xf9\xfc\x00"
        return
    if x == 0:
        buf += b"\xf9\x80\x00" if copysign(1.0, x) < 0 else b"\xf9\x00\x00"
        return
    h = _half(x)
    if h is not None:
        buf += _pack(">BH", 0xF9, h)
        return
    try:
        s = _pack(">f", x)
    except OverflowError:  # CPython refuses to round to infinity
        s = None
    if s is not None and _unpack(">f", s)[0] == x:
        buf.append(0xFA)
        buf += s
    else:
        buf.append(0xFB)
        buf += _pack(">d", x)


def _key0(pair):
    return pair[0]


def _small_key(k):
    """Sort key equal to the one-byte encoding of an int in -24..23."""
    return k if k >= 0 else 0x1F - k


def _map(buf, d):
    _head(buf, 0xA0, len(d))
    for k in d:
        if type(k) is not int or not -25 < k < 24:
            break
    else:  # only one-byte int keys (SenML labels): sort the keys themselves, no garbage
        for k in sorted(d, key=_small_key):
            buf.append(k if k >= 0 else 0x1F - k)
            _encode(buf, d[k])
        return
    pairs = []
    for k, v in d.items():
        t = type(k)
        if (t in _KEY_TYPES or isinstance(k, (int, str, bytes, float))) and k == k:
            kb = bytearray()
            _encode(kb, k)
            pairs.append((bytes(kb), v))
        else:
            raise CBORError("unsupported map key %s" % ("NaN" if k != k else t.__name__))
    pairs.sort(key=_key0)
    prev = None
    for kb, v in pairs:
        if kb == prev:
            raise CBORError("duplicate map key encoding %r" % (kb,))
        prev = kb
        buf += kb
        _encode(buf, v)


def _encode(buf, obj):
    t = type(obj)  # exact-type fast paths first, isinstance() for subclasses last
    if t is int:
        if 0 <= obj < 24:
            buf.append(obj)
        elif obj >= 0:
            _head(buf, 0x00, obj)
        else:
            _head(buf, 0x20, -1 - obj)
    elif t is str:
        try:
            b = obj.encode("utf-8")
        except UnicodeError:
            raise CBORError("text string is not encodable as UTF-8")
        _head(buf, 0x60, len(b))
        buf += b
    elif t is float:
        _float(buf, obj)
    elif t is dict:
        _map(buf, obj)
    elif t is list or t is tuple:
        _head(buf, 0x80, len(obj))
        for x in obj:
            _encode(buf, x)
    elif obj is None:
        buf.append(0xF6)
    elif obj is True:
        buf.append(0xF5)
    elif obj is False:
        buf.append(0xF4)
    elif t is bytes or t is bytearray:
        _head(buf, 0x40, len(obj))
        buf += obj
    elif t is Tag:
        _head(buf, 0xC0, obj.tag)
        _encode(buf, obj.value)
    elif t is Simple:
        if obj.value < 24:
            buf.append(0xE0 | obj.value)
        else:
            buf.append(0xF8)
            buf.append(obj.value)
    elif isinstance(obj, memoryview):
        _encode(buf, bytes(obj))
    elif isinstance(obj, int):
        _encode(buf, int(obj))
    elif isinstance(obj, str):
        _encode(buf, str(obj))
    elif isinstance(obj, float):
        _encode(buf, float(obj))
    elif isinstance(obj, (bytes, bytearray)):
        _encode(buf, bytes(obj))
    elif isinstance(obj, (list, tuple)):
        _encode(buf, list(obj))
    elif isinstance(obj, dict):
        _encode(buf, dict(obj))
    else:
        raise CBORError("cannot encode %s as CBOR" % t.__name__)


def encode_into(buf, obj):
    """Append the deterministic encoding of obj to the bytearray buf (reuse one on the device).

    On error buf holds a partial encoding: cut it back with `buf[n:] = b""` before reusing it
    (MicroPython's bytearray has no `del buf[n:]`).
    """
    _encode(buf, obj)
    return buf


def dumps(obj):
    """Deterministic CBOR encoding of obj, as bytes."""
    buf = bytearray()
    _encode(buf, obj)
    return bytes(buf)


# --- decoder ----------------------------------------------------------------------------------


def _half_value(h):
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = ldexp(float(m), -24)
    elif e == 31:
        v = float("inf") if m == 0 else float("nan")
    else:
        v = ldexp(float(m | 0x400), e - 25)
    return -v if h & 0x8000 else v


def _valid_utf8(b):
    """Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF).

    Only used where str() is lax about these (MicroPython), and only for non-ASCII text.
    """
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            k = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            k = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + k >= n:
            return False
        if not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k + 1
    return True


try:
    str(b"\xed\xa0\x80", "utf-8")  # a UTF-8-encoded surrogate: CPython refuses it
    _LAX_UTF8 = True
except UnicodeError:
    _LAX_UTF8 = False


class _Decoder:
    def __init__(self, data, pos, max_depth, max_items, max_length):
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.max_depth = max_depth
        self.max_items = max_items
        self.left = max_items  # data items still allowed
        self.max_length = max_length

    def _bytes(self, n, what):
        if n > self.max_length:
            raise CBORError("%s of %d bytes exceeds the limit of %d" % (what, n, self.max_length))
        pos = self.pos
        left = self.end - pos
        if n > left:
            msg = "truncated: %s of %d bytes at offset %d, %d left"
            raise CBORError(msg % (what, n, pos, left))
        self.pos = pos + n
        return self.data[pos : pos + n]

    def _text(self, n):
        raw = self._bytes(n, "text string")
        try:
            s = str(raw, "utf-8")
        except UnicodeError:
            s = None
        if s is None or (_LAX_UTF8 and len(s) != n and not _valid_utf8(raw)):
            raise CBORError("invalid UTF-8 in text string ending at offset %d" % self.pos)
        return s

    def _chunks(self, ib, depth):
        """An indefinite-length string: definite chunks of the same major type up to a break.

        max_length bounds the whole string here, chunk headers included.
        """
        parts = []
        start = self.pos
        data = self.data
        while not self._at_break():
            c = data[self.pos]
            if c & 0xE0 != ib & 0xE0 or c & 0x1F == 31:
                msg = "invalid chunk 0x%02x in indefinite-length string at offset %d"
                raise CBORError(msg % (c, self.pos))
            parts.append(self.item(depth))
            if self.pos - start > self.max_length:
                msg = "indefinite-length string exceeds the limit of %d bytes"
                raise CBORError(msg % self.max_length)
        return ("" if ib == 0x7F else b"").join(parts)

    def _at_break(self):
        if self.pos >= self.end:
            raise CBORError("truncated: no break at offset %d" % self.pos)
        if self.data[self.pos] == 0xFF:
            self.pos += 1
            return True
        return False

    def _map_entry(self, depth, out):
        k = self.item(depth)
        t = type(k)
        if t not in _KEY_TYPES or (t is float and k != k):
            what = "NaN" if t is float else t.__name__
            raise CBORError("unsupported map key %s before offset %d" % (what, self.pos))
        size = len(out)
        out[k] = self.item(depth)
        if len(out) == size:
            raise CBORError("duplicate map key %r before offset %d" % (k, self.pos))

    def item(self, depth):
        data = self.data
        start = pos = self.pos
        if pos >= self.end:
            raise CBORError("truncated: data item expected at offset %d" % pos)
        self.left -= 1
        if self.left < 0:
            raise CBORError("more than %d data items" % self.max_items)
        ib = data[pos]
        pos += 1
        if ib < 24:  # the commonest item: a small unsigned integer
            self.pos = pos
            return ib
        ai = ib & 0x1F
        if ai < 24:
            n = ai
        elif ai < 28:
            k = 1 << (ai - 24)
            if pos + k > self.end:
                raise CBORError("truncated: %d-byte argument at offset %d" % (k, pos))
            n = data[pos] if k == 1 else _unpack_from(_FMT[ai - 24], data, pos)[0]
            pos += k
        elif ai == 31:
            n = -1
        else:
            raise CBORError("reserved additional information %d at offset %d" % (ai, start))
        self.pos = pos
        major = ib >> 5
        if major == 0:
            if n >= 0:
                return n
        elif major == 1:
            if n >= 0:
                return -1 - n
        elif major == 3:
            return self._text(n) if n >= 0 else self._chunks(ib, depth)
        elif major == 2:
            return bytes(self._bytes(n, "byte string")) if n >= 0 else self._chunks(ib, depth)
        elif major == 7:
            if ai == 25:
                return _half_value(n)
            if ai == 27:
                return _unpack_from(">d", data, start + 1)[0]
            if ai == 26:
                return _unpack_from(">f", data, start + 1)[0]
            if ai < 20:
                return Simple(ai)
            if ai < 24:
                return (False, True, None, UNDEFINED)[ai - 20]
            if ai == 24:
                if n < 32:
                    raise CBORError("invalid two-byte simple value %d at offset %d" % (n, start))
                return Simple(n)
            raise CBORError("unexpected break at offset %d" % start)
        else:  # 4 array, 5 map, 6 tag: the ones that nest
            if depth >= self.max_depth:
                raise CBORError("nesting deeper than %d at offset %d" % (self.max_depth, start))
            depth += 1
            if major == 4:
                out = []
                if n < 0:
                    while not self._at_break():
                        out.append(self.item(depth))
                    return out
                if n > self.end - pos:
                    msg = "truncated: array of %d items at offset %d, %d bytes left"
                    raise CBORError(msg % (n, start, self.end - pos))
                for _ in range(n):
                    out.append(self.item(depth))
                return out
            if major == 5:
                out = {}
                if n < 0:
                    while not self._at_break():
                        self._map_entry(depth, out)
                    return out
                if n > (self.end - pos) // 2:
                    msg = "truncated: map of %d pairs at offset %d, %d bytes left"
                    raise CBORError(msg % (n, start, self.end - pos))
                for _ in range(n):
                    self._map_entry(depth, out)
                return out
            if n >= 0:
                return Tag(n, self.item(depth))
        raise CBORError("indefinite length for major type %d at offset %d" % (major, start))


def loads_prefix(data, offset=0, max_depth=16, max_items=65536, max_length=65536):
    """Decode the data item at data[offset:]; returns (obj, offset just past it).

    max_depth bounds how many arrays, maps and tags may enclose one another, max_items the
    data items (keys, values, string chunks) in the whole item, max_length the bytes of any
    one string (of an indefinite-length one with its chunk headers).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("CBOR data must be bytes-like, not %s" % type(data).__name__)
    if not 0 <= offset <= len(data):
        raise CBORError("offset %d outside the %d bytes of data" % (offset, len(data)))
    d = _Decoder(data, offset, max_depth, max_items, max_length)
    return d.item(0), d.pos


def loads(data, max_depth=16, max_items=65536, max_length=65536):
    """Decode exactly one data item from data; trailing bytes are an error."""
    obj, end = loads_prefix(data, 0, max_depth, max_items, max_length)
    if end != len(data):
        raise CBORError("%d trailing bytes after offset %d" % (len(data) - end, end))
    return obj

"""Semtech UDP packet-forwarder protocol (GWMP v2), sans-I/O.

Concentrators speak this to the gateway over UDP port 1700. It has no authentication and no
retransmission, so every datagram is untrusted: decode() checks version, type, sizes and
JSON shapes and raises GwmpError (a ValueError) for anything it cannot use.

A PUSH_DATA whose rxpk list holds some bad entries is not rejected: the good entries come
back in `rxpk` and each bad one adds a line to `errors` ("rxpk[2]: missing key 'data'"), so
the gateway can count and log what it drops instead of losing a whole batch silently.

Versions: Semtech's protocol v1 (PROTOCOL.TXT up to v1.2) has the same layout without TX_ACK,
so version 1 is accepted for the five older types and the message keeps its version; acks
made with ack() echo it, because a forwarder ignores acks of another version. TX_ACK must be 2.

Tokens are the two token bytes read big-endian as an int. Frequencies are kept in Hz (int)
and written in MHz from the integer, so 868100000 goes out as 868.1 and parses back exactly.
On single-precision MicroPython ports json.loads keeps only ~7 digits, so freq_hz of a decoded
datagram is only ~100 Hz accurate there; the gateway (CPython) is exact.

Encoders write compact JSON in a fixed key order with our own writer (rxpk/txpk in the
forwarder's order, stat and extra keys sorted, since MicroPython dicts keep no order), so
CPython and MicroPython give identical bytes as long as strings are ASCII and floats print
the same. JSON has no NaN/inf: a decoded message carrying such a value in stat or in an
unknown rxpk key (json.loads turns 1e999 into inf) decodes fine but cannot be re-encoded.
"""

import binascii
import json

from protocol.lorawan.region import RegionError

PUSH_DATA = 0x00
PUSH_ACK = 0x01
PULL_DATA = 0x02
PULL_RESP = 0x03
PULL_ACK = 0x04
TX_ACK = 0x05

VERSION = 2
VERSIONS = (1, 2)

TX_ACK_ERRORS = ("NONE", "TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "COLLISION_BEACON",
                 "TX_FREQ", "TX_POWER", "GPS_UNLOCKED")

_NAMES = ("PUSH_DATA", "PUSH_ACK", "PULL_DATA", "PULL_RESP", "PULL_ACK", "TX_ACK")
_UINT32 = 0xFFFFFFFF


class GwmpError(ValueError):
    """A datagram or a field that does not follow the packet-forwarder protocol."""


# ---- JSON writing -------------------------------------------------------------------------

class _Obj(list):
    """A JSON object as (key, value) pairs, written in this order."""


class _Raw:
    """JSON text written as is (frequencies formatted from integer Hz)."""

    def __init__(self, text):
        self.text = text


def _dump(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    t = type(v)
    if t is int:
        return "%d" % v
    if t is str:
        return json.dumps(v)
    if t is float:
        if not _finite(v):
            raise GwmpError("cannot encode non-finite number %r" % (v,))
        return json.dumps(v)
    if t is _Raw:
        return v.text
    if t is _Obj:
        return "{" + ",".join([json.dumps(k) + ":" + _dump(x) for k, x in v]) + "}"
    if t is dict:  # MicroPython dicts are unordered: sort for identical bytes everywhere
        return "{" + ",".join([json.dumps(k) + ":" + _dump(v[k]) for k in sorted(v)]) + "}"
    if t is list or t is tuple:
        return "[" + ",".join([_dump(x) for x in v]) + "]"
    raise GwmpError("cannot encode %r as JSON" % (v,))


def mhz(freq_hz):
    """Frequency text in MHz for freq_hz, from integer arithmetic: 868100000 -> "868.1"."""
    if type(freq_hz) is not int or freq_hz <= 0:
        raise GwmpError("frequency must be a positive int in Hz, got %r" % (freq_hz,))
    frac = "%06d" % (freq_hz % 1000000)
    frac = frac.rstrip("0") or "0"
    return "%d.%s" % (freq_hz // 1000000, frac)


# ---- field checks -------------------------------------------------------------------------

def _finite(x):
    return x - x == 0  # False for inf and NaN


def _is_int(v):
    return type(v) is int  # bool is not int here


def _is_num(v):
    return (type(v) is int or type(v) is float) and _finite(v)


def _get(obj, key, what):
    try:
        return obj[key]
    except KeyError:
        raise GwmpError("%s: missing key '%s'" % (what, key))


def _uint(obj, key, what, top, required=True):
    v = obj.get(key)
    if v is None:
        if required:
            raise GwmpError("%s: missing key '%s'" % (what, key))
        return None
    if not _is_int(v) or v < 0 or v > top:
        raise GwmpError("%s: '%s' must be an integer 0..%d, got %r" % (what, key, top, v))
    return v


def _num(obj, key, what, required=True):
    v = obj.get(key)
    if v is None:
        if required:
            raise GwmpError("%s: missing key '%s'" % (what, key))
        return None
    if not _is_num(v):
        raise GwmpError("%s: '%s' must be a finite number, got %r" % (what, key, v))
    return v


def _bool(obj, key, what):
    v = obj.get(key)
    if v is None:
        return None
    if v is not True and v is not False:
        raise GwmpError("%s: '%s' must be true or false, got %r" % (what, key, v))
    return v


def _str(obj, key, what):
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not str:
        raise GwmpError("%s: '%s' must be a string, got %r" % (what, key, v))
    return v


def _freq_hz(obj, what):
    v = _get(obj, "freq", what)
    if not _is_num(v) or not 0 < v < 100000:
        raise GwmpError("%s: 'freq' must be a number of MHz, got %r" % (what, v))
    return int(round(v * 1000000))


def _datr(obj, what):
    """LoRa "SF<n>BW<khz>" string or FSK bit rate (int); checks modu when present."""
    v = _get(obj, "datr", what)
    if type(v) is str:
        bw = v.find("BW")
        if v[:2] != "SF" or bw < 3 or not v[2:bw].isdigit() or not v[bw + 2:].isdigit():
            raise GwmpError("%s: 'datr' must look like \"SF7BW125\", got %r" % (what, v))
        modu = "LORA"
    elif _is_int(v) and v > 0:
        modu = "FSK"
    else:
        raise GwmpError("%s: 'datr' must be a LoRa string or an FSK bit rate, got %r" % (what, v))
    m = obj.get("modu")
    if m is not None and m != modu:
        raise GwmpError("%s: 'modu' %r does not match datr %r" % (what, m, v))
    return v


def datr_string(region, dr):
    """The `datr` of data rate dr of a protocol.lorawan.region Region: "SF7BW125" for LoRa, the
    bit rate (int) for FSK."""
    d = region.data_rate(dr)
    if d.sf:
        return "SF%dBW%d" % (d.sf, d.bw_hz // 1000)
    return d.bitrate


_by_datr = {}  # region name -> {datr: DR}


def dr_from_datr(region, datr):
    """The data-rate index of a `datr` ("SF12BW125", or 50000 for FSK) in `region`; RegionError
    when the region has none."""
    table = _by_datr.get(region.name)
    if table is None:
        table = _by_datr[region.name] = {datr_string(region, dr): dr
                                         for dr in range(region.n_data_rates)}
    try:
        return table[datr]
    except (KeyError, TypeError):
        raise RegionError("%s has no data rate for datr %r" % (region.name, datr))


def _b64decode(text, what):
    """Strict base64 (padding optional): refuse what a lenient decoder would skip over."""
    if type(text) is not str:
        raise GwmpError("%s: 'data' must be a base64 string" % what)
    raw = text.encode()
    raw = raw + b"=" * (-len(raw) % 4)
    try:
        data = binascii.a2b_base64(raw)
    except Exception:
        raise GwmpError("%s: 'data' is not valid base64" % what)
    if binascii.b2a_base64(data)[:-1] != raw:
        raise GwmpError("%s: 'data' is not valid base64" % what)
    return data


def _b64encode(data):
    return binascii.b2a_base64(data)[:-1].decode()


def _payload(obj, what):
    data = _b64decode(_get(obj, "data", what), what)
    return data


# ---- radio packets ------------------------------------------------------------------------

_RXPK_KEYS = ("time", "tmms", "tmst", "chan", "rfch", "freq", "stat", "modu", "datr", "codr",
              "rssi", "lsnr", "size", "data")


class Rxpk:
    """One received packet (an entry of PUSH_DATA's rxpk); `data` is the PHYPayload bytes.

    Mandatory on the wire: tmst, freq, stat, datr, rssi, size, data. Unknown keys land in
    `extra` (kept, written back by to_json, otherwise ignored).
    """

    def __init__(self, tmst, freq_hz, datr, data, rssi, stat=1, lsnr=None, codr=None,
                 chan=None, rfch=None, time=None, tmms=None, extra=None):
        mhz(freq_hz)
        self.tmst = tmst
        self.freq_hz = freq_hz
        self.datr = datr
        self.data = bytes(data)
        self.rssi = rssi
        self.stat = stat
        self.lsnr = lsnr
        self.codr = codr
        self.chan = chan
        self.rfch = rfch
        self.time = time
        self.tmms = tmms
        self.extra = extra or {}

    @property
    def modu(self):
        return "LORA" if type(self.datr) is str else "FSK"

    @property
    def crc_ok(self):
        return self.stat == 1

    @property
    def freq(self):
        """Frequency in MHz (float), as on the wire."""
        return self.freq_hz / 1000000

    @classmethod
    def from_json(cls, obj, what="rxpk"):
        if type(obj) is not dict:
            raise GwmpError("%s: not a JSON object" % what)
        data = _payload(obj, what)
        size = _uint(obj, "size", what, 0xFFFF)
        if size != len(data):
            raise GwmpError("%s: 'size' %d does not match %d data bytes" % (what, size, len(data)))
        stat = _get(obj, "stat", what)
        if not _is_int(stat) or stat not in (1, -1, 0):
            raise GwmpError("%s: 'stat' must be 1, -1 or 0, got %r" % (what, stat))
        extra = {}
        for k in obj:
            if k not in _RXPK_KEYS:
                extra[k] = obj[k]
        return cls(
            _uint(obj, "tmst", what, _UINT32), _freq_hz(obj, what), _datr(obj, what), data,
            _num(obj, "rssi", what), stat, _num(obj, "lsnr", what, False), _str(obj, "codr", what),
            _uint(obj, "chan", what, 0xFFFF, False), _uint(obj, "rfch", what, 0xFFFF, False),
            _str(obj, "time", what), _uint(obj, "tmms", what, 1 << 53, False), extra)

    def to_json(self):
        """The rxpk object as a plain dict (freq as float MHz), e.g. for logging."""
        d = dict(self._pairs())
        d["freq"] = self.freq
        return d

    def _pairs(self):
        out = _Obj()
        for k, v in (("time", self.time), ("tmms", self.tmms), ("tmst", self.tmst),
                     ("chan", self.chan), ("rfch", self.rfch), ("freq", _Raw(mhz(self.freq_hz))),
                     ("stat", self.stat), ("modu", self.modu), ("datr", self.datr),
                     ("codr", self.codr), ("rssi", self.rssi), ("lsnr", self.lsnr),
                     ("size", len(self.data)), ("data", _b64encode(self.data))):
            if v is not None:
                out.append((k, v))
        for k in sorted(self.extra):
            out.append((k, self.extra[k]))
        return out

    def __eq__(self, other):
        return type(other) is Rxpk and _dump(self._pairs()) == _dump(other._pairs())

    def __repr__(self):
        return "Rxpk(tmst=%r, freq_hz=%r, datr=%r, stat=%r, rssi=%r, %d bytes)" % (
            self.tmst, self.freq_hz, self.datr, self.stat, self.rssi, len(self.data))


class Txpk:
    """A packet for the concentrator to send (PULL_RESP's txpk); `data` is the PHYPayload.

    Timing is either imme (send now, Class C) or tmst (concentrator microseconds: uplink
    tmst + RX1/RX2 delay for Class A) or tmms (GPS milliseconds). None fields are not sent.
    """

    def __init__(self, freq_hz, datr, data, tmst=None, imme=None, powe=None, codr=None,
                 ipol=None, rfch=None, prea=None, fdev=None, ncrc=None, tmms=None, time=None):
        if imme is not True and tmst is None and tmms is None and time is None:
            raise GwmpError("txpk needs imme, tmst, tmms or time")
        mhz(freq_hz)
        self.freq_hz = freq_hz
        self.datr = datr
        self.data = bytes(data)
        self.tmst = tmst
        self.imme = imme
        self.powe = powe
        self.codr = codr
        self.ipol = ipol
        self.rfch = rfch
        self.prea = prea
        self.fdev = fdev
        self.ncrc = ncrc
        self.tmms = tmms
        self.time = time

    @classmethod
    def for_class_a(cls, tmst, freq_hz, datr, codr, powe, data, ipol=True, rfch=0, prea=None,
                    ncrc=None):
        """A Class A downlink at concentrator time tmst (uplink tmst + RX1 or RX2 delay)."""
        return cls(freq_hz, datr, data, tmst=tmst & _UINT32, powe=powe, codr=codr, ipol=ipol,
                   rfch=rfch, prea=prea, ncrc=ncrc)

    @classmethod
    def immediate(cls, freq_hz, datr, codr, powe, data, ipol=True, rfch=0, prea=None,
                  ncrc=None):
        """A downlink sent as soon as the concentrator can (imme, e.g. Class C)."""
        return cls(freq_hz, datr, data, imme=True, powe=powe, codr=codr, ipol=ipol, rfch=rfch,
                   prea=prea, ncrc=ncrc)

    @property
    def modu(self):
        return "LORA" if type(self.datr) is str else "FSK"

    @classmethod
    def from_json(cls, obj, what="txpk"):
        if type(obj) is not dict:
            raise GwmpError("%s: not a JSON object" % what)
        data = _payload(obj, what)
        size = _uint(obj, "size", what, 0xFFFF, False)
        if size is not None and size != len(data):
            raise GwmpError("%s: 'size' %d does not match %d data bytes" % (what, size, len(data)))
        powe = obj.get("powe")
        if powe is not None and not _is_int(powe):
            raise GwmpError("%s: 'powe' must be an integer, got %r" % (what, powe))
        return cls(
            _freq_hz(obj, what), _datr(obj, what), data, _uint(obj, "tmst", what, _UINT32, False),
            _bool(obj, "imme", what), powe, _str(obj, "codr", what), _bool(obj, "ipol", what),
            _uint(obj, "rfch", what, 0xFFFF, False), _uint(obj, "prea", what, 0xFFFF, False),
            _uint(obj, "fdev", what, 0xFFFFFF, False), _bool(obj, "ncrc", what),
            _uint(obj, "tmms", what, 1 << 53, False), _str(obj, "time", what))

    def to_json(self):
        """The txpk object as a plain dict (freq as float MHz), e.g. for logging."""
        d = dict(self._pairs())
        d["freq"] = self.freq_hz / 1000000
        return d

    def _pairs(self):
        out = _Obj()
        for k, v in (("imme", self.imme), ("tmst", self.tmst), ("tmms", self.tmms),
                     ("time", self.time), ("freq", _Raw(mhz(self.freq_hz))), ("rfch", self.rfch),
                     ("powe", self.powe), ("modu", self.modu), ("datr", self.datr),
                     ("codr", self.codr), ("fdev", self.fdev), ("ipol", self.ipol),
                     ("prea", self.prea), ("size", len(self.data)),
                     ("data", _b64encode(self.data)), ("ncrc", self.ncrc)):
            if v is not None:
                out.append((k, v))
        return out

    def __eq__(self, other):
        return type(other) is Txpk and _dump(self._pairs()) == _dump(other._pairs())

    def __repr__(self):
        return "Txpk(%s)" % _dump(self._pairs())


# ---- datagrams ----------------------------------------------------------------------------

def _eui(gateway_eui):
    if type(gateway_eui) is not bytes or len(gateway_eui) != 8:
        raise GwmpError("gateway EUI must be 8 bytes, got %r" % (gateway_eui,))
    return gateway_eui


def _header(version, token, kind):
    if version not in VERSIONS:
        raise GwmpError("unsupported protocol version %r" % (version,))
    if not _is_int(token) or not 0 <= token <= 0xFFFF:
        raise GwmpError("token must be an integer 0..65535, got %r" % (token,))
    return bytes((version, token >> 8, token & 0xFF, kind))


class _Message:
    type = None

    def __eq__(self, other):
        return type(other) is type(self) and other.encode() == self.encode()

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.encode())


class PushData(_Message):
    """Gateway -> server: received packets and/or gateway status.

    stat is the status dict as received (time, lati, long, alti, rxnb, rxok, rxfw, ackr,
    dwnb, txnb, ...) or None. errors lists one line per rxpk entry (or stat) that was dropped.
    """

    type = PUSH_DATA

    def __init__(self, token, gateway_eui, rxpk=(), stat=None, errors=(), version=VERSION):
        self.token = token
        self.gateway_eui = _eui(gateway_eui)
        self.rxpk = list(rxpk)
        self.stat = stat
        self.errors = list(errors)
        self.version = version

    def encode(self):
        body = _Obj()
        if self.rxpk:
            body.append(("rxpk", [p._pairs() for p in self.rxpk]))
        if self.stat is not None:
            body.append(("stat", self.stat))
        return (_header(self.version, self.token, PUSH_DATA) + self.gateway_eui
                + _dump(body).encode())

    def ack(self):
        return PushAck(self.token, self.version)


class PushAck(_Message):
    type = PUSH_ACK

    def __init__(self, token, version=VERSION):
        self.token = token
        self.version = version

    def encode(self):
        return _header(self.version, self.token, PUSH_ACK)


class PullData(_Message):
    """Gateway -> server keep-alive; the server sends PULL_RESP to where the last one came from."""

    type = PULL_DATA

    def __init__(self, token, gateway_eui, version=VERSION):
        self.token = token
        self.gateway_eui = _eui(gateway_eui)
        self.version = version

    def encode(self):
        return _header(self.version, self.token, PULL_DATA) + self.gateway_eui

    def ack(self):
        return PullAck(self.token, self.version)


class PullAck(_Message):
    type = PULL_ACK

    def __init__(self, token, version=VERSION):
        self.token = token
        self.version = version

    def encode(self):
        return _header(self.version, self.token, PULL_ACK)


class PullResp(_Message):
    """Server -> gateway: one txpk; the gateway answers with TX_ACK carrying the same token."""

    type = PULL_RESP

    def __init__(self, token, txpk, version=VERSION):
        self.token = token
        self.txpk = txpk
        self.version = version

    def encode(self):
        return (_header(self.version, self.token, PULL_RESP)
                + _dump(_Obj([("txpk", self.txpk._pairs())])).encode())


class TxAck(_Message):
    """Gateway -> server: downlink accepted (error None) or refused (error, e.g. "TOO_LATE")."""

    type = TX_ACK

    def __init__(self, token, gateway_eui, error=None, version=VERSION):
        if error == "NONE":
            error = None
        self.token = token
        self.gateway_eui = _eui(gateway_eui)
        self.error = error
        self.version = version

    @property
    def ok(self):
        return self.error is None

    def encode(self):
        if self.version != 2:
            raise GwmpError("TX_ACK exists only in protocol version 2")
        head = _header(self.version, self.token, TX_ACK) + self.gateway_eui
        if self.error is None:
            return head
        if type(self.error) is not str:
            raise GwmpError("TX_ACK error must be a string, got %r" % (self.error,))
        return head + _dump({"txpk_ack": {"error": self.error}}).encode()


def _json_object(body, name):
    # A trailing NUL (C string terminator) is tolerated; anything else must be one object.
    end = len(body)
    while end and body[end - 1] == 0:
        end -= 1
    try:
        obj = json.loads(bytes(body[:end]))
    except Exception:
        raise GwmpError("%s: JSON body does not parse" % name)
    if type(obj) is not dict:
        raise GwmpError("%s: JSON body is not an object" % name)
    return obj


def _need(datagram, name, n, exact):
    if len(datagram) < n or (exact and len(datagram) != n):
        raise GwmpError("%s must be %s%d bytes, got %d" % (
            name, "" if exact else "at least ", n, len(datagram)))


def decode(datagram):
    """The message object for one UDP datagram; GwmpError when it is not a usable one."""
    if type(datagram) is not bytes:
        try:
            datagram = bytes(datagram)
        except Exception:
            raise GwmpError("datagram must be bytes")
    if len(datagram) < 4:
        raise GwmpError("datagram too short: %d bytes, need at least 4" % len(datagram))
    version = datagram[0]
    token = (datagram[1] << 8) | datagram[2]
    kind = datagram[3]
    if kind > TX_ACK:
        raise GwmpError("unknown packet type 0x%02x" % kind)
    name = _NAMES[kind]
    if version not in VERSIONS or (kind == TX_ACK and version != 2):
        raise GwmpError("%s: unsupported protocol version %d" % (name, version))
    if kind == PUSH_ACK or kind == PULL_ACK:
        _need(datagram, name, 4, True)
        return (PushAck if kind == PUSH_ACK else PullAck)(token, version)
    if kind == PULL_DATA:
        _need(datagram, name, 12, True)
        return PullData(token, datagram[4:12], version)
    if kind == PULL_RESP:
        _need(datagram, name, 5, False)
        obj = _json_object(datagram[4:], name)
        return PullResp(token, Txpk.from_json(_get(obj, "txpk", name)), version)
    _need(datagram, name, 12 if kind == TX_ACK else 13, False)
    eui = datagram[4:12]
    if kind == TX_ACK:
        if len(datagram) == 12 or not datagram[12:].strip(b"\x00 \t\r\n"):
            return TxAck(token, eui, None)
        ack = _get(_json_object(datagram[12:], name), "txpk_ack", name)
        if type(ack) is not dict:
            raise GwmpError("TX_ACK: 'txpk_ack' is not an object")
        error = ack.get("error")
        if error is not None and type(error) is not str:
            raise GwmpError("TX_ACK: 'error' must be a string, got %r" % (error,))
        return TxAck(token, eui, error)
    obj = _json_object(datagram[12:], name)
    entries = obj.get("rxpk")
    if entries is None:
        entries = []
    elif type(entries) is not list:
        raise GwmpError("PUSH_DATA: 'rxpk' is not a list")
    good = []
    errors = []
    for i in range(len(entries)):
        try:
            good.append(Rxpk.from_json(entries[i], "rxpk[%d]" % i))
        except GwmpError as e:
            errors.append(str(e))
    stat = obj.get("stat")
    if stat is not None and type(stat) is not dict:
        errors.append("stat: not a JSON object")
        stat = None
    return PushData(token, eui, good, stat, errors, version)

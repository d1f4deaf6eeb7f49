"""LoRaWAN 1.0.x class-A MAC commands (FOpts or FRMPayload on FPort 0), both directions.

Commands carry no length on the wire: a receiver must know each CID's payload size, and the
size depends on the direction (LinkADRReq down is 4 bytes, LinkADRAns up is 1). So decoding
needs `uplink` and must stop at the first unknown CID; MacCommandError then says where and
carries what was decoded before it.

Each command is described by a table of bit fields, which drives both directions of the
codec. Commands are dicts: {"cid": 3, "name": "LinkADRReq", <fields>}. Frequencies are Hz
(wire: 24-bit little endian, units of 100 Hz); RFU bits are written 0 and ignored on input.

DeviceTimeReq/Ans (LoRaWAN 1.0.3): the answer is the GPS time at the end of the uplink that
carried the request, 32-bit seconds since the GPS epoch + 1/256 s. device_time_ans(unix_ms)
builds it from a UTC instant (the network's side), device_time_unix_ms(ans) turns it back
(the device's side). Integer milliseconds, so MicroPython's single-precision floats never
touch it. GPS time has no leap seconds: GPS = UTC + GPS_UTC_LEAP_S.
"""

# GPS epoch 1980-01-06T00:00:00Z in UNIX seconds, and GPS - UTC in seconds: 18 since the leap
# second of 2016-12-31 (IERS Bulletin C: none announced since). The one place to change if
# one is.
GPS_EPOCH_UNIX_S = 315964800
GPS_UTC_LEAP_S = 18

# Field kinds
_U = 0  # unsigned integer
_B = 1  # flag (bool)
_F = 2  # frequency: 24-bit value in units of 100 Hz, exposed in Hz
_S = 3  # two's-complement signed integer of `bits` bits


class MacCommandError(ValueError):
    """Unknown CID, truncated command or out-of-range field.

    When raised by decode_commands, `commands` holds what was decoded before the problem and
    `offset` is the byte where it is."""

    def __init__(self, message, offset=None, commands=None):
        super().__init__(message)
        self.offset = offset
        self.commands = commands if commands is not None else []


# (cid, name, length, fields); a field is (name, byte offset, byte count, shift, bits, kind)
_UPLINK = (
    (0x02, "LinkCheckReq", 0, ()),
    (0x03, "LinkADRAns", 1, (("power_ack", 0, 1, 2, 1, _B), ("data_rate_ack", 0, 1, 1, 1, _B),
                             ("channel_mask_ack", 0, 1, 0, 1, _B))),
    (0x04, "DutyCycleAns", 0, ()),
    (0x05, "RXParamSetupAns", 1, (("rx1_dr_offset_ack", 0, 1, 2, 1, _B),
                                  ("rx2_data_rate_ack", 0, 1, 1, 1, _B),
                                  ("channel_ack", 0, 1, 0, 1, _B))),
    (0x06, "DevStatusAns", 2, (("battery", 0, 1, 0, 8, _U), ("margin", 1, 1, 0, 6, _S))),
    (0x07, "NewChannelAns", 1, (("data_rate_range_ok", 0, 1, 1, 1, _B),
                                ("channel_frequency_ok", 0, 1, 0, 1, _B))),
    (0x08, "RXTimingSetupAns", 0, ()),
    (0x09, "TxParamSetupAns", 0, ()),
    (0x0A, "DlChannelAns", 1, (("uplink_frequency_exists", 0, 1, 1, 1, _B),
                               ("channel_frequency_ok", 0, 1, 0, 1, _B))),
    (0x0D, "DeviceTimeReq", 0, ()),
)

_DOWNLINK = (
    (0x02, "LinkCheckAns", 2, (("margin", 0, 1, 0, 8, _U), ("gw_cnt", 1, 1, 0, 8, _U))),
    (0x03, "LinkADRReq", 4, (("data_rate", 0, 1, 4, 4, _U), ("tx_power", 0, 1, 0, 4, _U),
                             ("ch_mask", 1, 2, 0, 16, _U), ("ch_mask_cntl", 3, 1, 4, 3, _U),
                             ("nb_trans", 3, 1, 0, 4, _U))),
    (0x04, "DutyCycleReq", 1, (("max_duty_cycle", 0, 1, 0, 4, _U),)),
    (0x05, "RXParamSetupReq", 4, (("rx1_dr_offset", 0, 1, 4, 3, _U), ("rx2_data_rate", 0, 1, 0, 4, _U),
                                  ("frequency", 1, 3, 0, 24, _F))),
    (0x06, "DevStatusReq", 0, ()),
    (0x07, "NewChannelReq", 5, (("ch_index", 0, 1, 0, 8, _U), ("frequency", 1, 3, 0, 24, _F),
                                ("max_dr", 4, 1, 4, 4, _U), ("min_dr", 4, 1, 0, 4, _U))),
    (0x08, "RXTimingSetupReq", 1, (("delay", 0, 1, 0, 4, _U),)),
    (0x09, "TxParamSetupReq", 1, (("downlink_dwell_time", 0, 1, 5, 1, _B),
                                  ("uplink_dwell_time", 0, 1, 4, 1, _B), ("max_eirp", 0, 1, 0, 4, _U))),
    (0x0A, "DlChannelReq", 4, (("ch_index", 0, 1, 0, 8, _U), ("frequency", 1, 3, 0, 24, _F))),
    (0x0D, "DeviceTimeAns", 5, (("seconds", 0, 4, 0, 32, _U), ("fractional", 4, 1, 0, 8, _U))),
)

_BY_CID = ({}, {})  # [uplink] -> cid -> spec
_BY_NAME = {}  # name -> (uplink, spec)
for _up, _table in ((0, _DOWNLINK), (1, _UPLINK)):
    for _spec in _table:
        _BY_CID[_up][_spec[0]] = _spec
        _BY_NAME[_spec[1]] = (_up, _spec)


def commands(uplink):
    """(cid, name, payload length) of every command known in that direction."""
    return [(s[0], s[1], s[2]) for s in (_UPLINK if uplink else _DOWNLINK)]


def command_length(cid, uplink):
    """Payload length (without the CID byte), or None for an unknown CID."""
    spec = _BY_CID[1 if uplink else 0].get(cid)
    return None if spec is None else spec[2]


def _decode_one(spec, data, pos):
    cmd = {"cid": spec[0], "name": spec[1]}
    for name, off, size, shift, bits, kind in spec[3]:
        o = pos + off
        raw = data[o] if size == 1 else int.from_bytes(data[o:o + size], "little")
        v = (raw >> shift) & ((1 << bits) - 1)
        if kind == _B:
            v = v != 0
        elif kind == _F:
            v *= 100
        elif kind == _S and v >> (bits - 1):
            v -= 1 << bits
        cmd[name] = v
    return cmd


def decode_commands(data, uplink):
    """Parse concatenated MAC commands. uplink=True for commands sent by the end device.

    Raises MacCommandError at an unknown CID or a truncated command (its `commands`
    attribute has those decoded before it)."""
    table = _BY_CID[1 if uplink else 0]
    out = []
    n = len(data)
    pos = 0
    while pos < n:
        cid = data[pos]
        spec = table.get(cid)
        if spec is None:
            raise MacCommandError("unknown %s MAC command CID 0x%02X at offset %d" % (
                "uplink" if uplink else "downlink", cid, pos), pos, out)
        end = pos + 1 + spec[2]
        if end > n:
            raise MacCommandError("%s (CID 0x%02X) at offset %d truncated: needs %d bytes, %d left" % (
                spec[1], cid, pos, spec[2], n - pos - 1), pos, out)
        out.append(_decode_one(spec, data, pos + 1))
        pos = end
    return out


def _spec_for(cmd, uplink):
    if not isinstance(cmd, dict):
        raise MacCommandError("MAC command must be a dict, got %s" % type(cmd).__name__)
    direction = "uplink" if uplink else "downlink"
    cid = cmd.get("cid")
    name = cmd.get("name")
    if cid is not None:
        spec = _BY_CID[1 if uplink else 0].get(cid)
        if spec is None:
            raise MacCommandError("unknown %s MAC command CID %r" % (direction, cid))
        if name is not None and name != spec[1]:
            raise MacCommandError("CID 0x%02X is %s in the %s direction, not %s" % (cid, spec[1], direction, name))
        return spec
    if name is None:
        raise MacCommandError("MAC command needs a 'cid' or a 'name': %r" % (cmd,))
    entry = _BY_NAME.get(name)
    if entry is None:
        raise MacCommandError("unknown MAC command %r" % (name,))
    if entry[0] != (1 if uplink else 0):
        raise MacCommandError("%s is not sent in the %s direction" % (name, direction))
    return entry[1]


def encode_command(cmd, uplink):
    """One command dict -> CID | payload."""
    spec = _spec_for(cmd, uplink)
    buf = bytearray(1 + spec[2])
    buf[0] = spec[0]
    for name, off, size, shift, bits, kind in spec[3]:
        if name not in cmd:
            raise MacCommandError("%s needs field %r" % (spec[1], name))
        v = cmd[name]
        if not isinstance(v, int):
            raise MacCommandError("%s.%s must be an integer, got %r" % (spec[1], name, v))
        if kind == _B:
            v = 1 if v else 0
        elif kind == _F:
            if v < 0 or v % 100 or v >= 100 << bits:
                raise MacCommandError("%s.%s must be a multiple of 100 Hz in 0..%d, got %r" % (
                    spec[1], name, (100 << bits) - 100, v))
            v //= 100
        elif kind == _S:
            half = 1 << (bits - 1)
            if v < -half or v >= half:
                raise MacCommandError("%s.%s must be in %d..%d, got %r" % (spec[1], name, -half, half - 1, v))
            v &= (1 << bits) - 1
        elif v < 0 or v >> bits:
            raise MacCommandError("%s.%s must be in 0..%d, got %r" % (spec[1], name, (1 << bits) - 1, v))
        v <<= shift
        o = 1 + off
        for i in range(size):
            buf[o + i] |= (v >> (8 * i)) & 0xFF
    return bytes(buf)


def encode_commands(cmds, uplink):
    """List of command dicts -> concatenated bytes (for FOpts, at most 15 bytes, or FPort 0)."""
    return b"".join([encode_command(c, uplink) for c in cmds])


def device_time_ans(unix_ms):
    """The DeviceTimeAns for UTC instant unix_ms (integer ms since 1970-01-01T00:00:00Z; a float
    is truncated): GPS seconds (mod 2**32) and fractional 1/256 s, rounded down."""
    gps_ms = int(unix_ms) + (GPS_UTC_LEAP_S - GPS_EPOCH_UNIX_S) * 1000
    if gps_ms < 0:
        raise MacCommandError("DeviceTimeAns: %r ms is before the GPS epoch" % (unix_ms,))
    seconds = gps_ms // 1000
    return {"cid": 0x0D, "name": "DeviceTimeAns", "seconds": seconds & 0xFFFFFFFF,
            "fractional": (gps_ms - seconds * 1000) * 256 // 1000}


def device_time_unix_ms(ans):
    """UTC instant (integer UNIX ms, to the nearest ms) of a DeviceTimeAns dict; at most 4 ms
    earlier than the instant it was built from (the 1/256 s step). GPS seconds wrap in 2116."""
    gps_ms = ans["seconds"] * 1000 + (ans["fractional"] * 1000 + 128) // 256
    return gps_ms + (GPS_EPOCH_UNIX_S - GPS_UTC_LEAP_S) * 1000

"""LoRaWAN 1.0.x class-A MAC commands (FOpts or FRMPayload on FPort 0), both directions.

Commands carry no length on the wire: a receiver must know each CID's payload size, and the
size depends on the direction (LinkADRReq down is 4 bytes, LinkADRAns up is 1). So decoding
needs `uplink` and must stop at the first unknown CID; MacCommandError then says where and
carries what was decoded before it.

Each command is described by a table of bit fields, which drives both directions of the
codec. Commands are dicts: {"cid": 3, "name": "LinkADRReq", <fields>}. Frequencies are Hz
(wire: 24-bit little endian, units of 100 Hz); RFU bits are written 0 and ignored on input.

DeviceTimeReq/Ans (LoRaWAN 1.0.3): the answer is the GPS time at the end of the uplink that
carried the request, 32-bit seconds since the GPS epoch + 1/256 s. device_time_unix_ms(ans)
turns it into a UTC instant (the device's side; network_side.device_time_ans builds it from
one). Integer milliseconds, so MicroPython's single-precision floats never
touch it. GPS time has no leap seconds: GPS = UTC + GPS_UTC_LEAP_S.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# GPS epoch 1980-01-06T00:00:00Z in UNIX seconds, and GPS - UTC in seconds: 18 since the leap
# second of 2016-12-31 (IERS Bulletin C: none announced since). The one place to change if
# one is. Private consts (no names in a device's RAM): network_side.device_time_ans reads them
# through device_time_unix_ms.
_GPS_EPOCH_UNIX_S = const(315964800)
_GPS_UTC_LEAP_S = const(18)

# Field kinds
_U = const(0)  # unsigned integer
_B = const(1)  # flag (bool)
_F = const(2)  # frequency: 24-bit value in units of 100 Hz, exposed in Hz
_S = const(3)  # two's-complement signed integer of `bits` bits


class MacCommandError(ValueError):
    """Unknown CID, truncated command or out-of-range field.

    When raised by decode_commands, `commands` holds what was decoded before the problem and
    `offset` is the byte where it is."""

    def __init__(self, message, offset=None, commands=None):
        super().__init__(message)
        self.offset = offset
        self.commands = commands if commands is not None else []


# One table per direction: a row per command, (cid, payload length, field count) and five bytes
# per field (byte offset, byte count, shift, bits, kind); the names in row order (each command's,
# then its fields') are in the matching string, each followed by a space. Bytes and a string,
# not tuples: a device keeps them in flash, and _find() builds the (cid, name, length, fields)
# of one command when asked.
# Private consts: only _find() reads them (no global, no name in a device's RAM).
_ROWS_UP = const(
    b"\x02\x00\x00"  # LinkCheckReq
    b"\x03\x01\x03\x00\x01\x02\x01\x01\x00\x01\x01\x01\x01\x00\x01\x00\x01\x01"  # LinkADRAns
    b"\x04\x00\x00"  # DutyCycleAns
    b"\x05\x01\x03\x00\x01\x02\x01\x01\x00\x01\x01\x01\x01\x00\x01\x00\x01\x01"  # RXParamSetupAns
    b"\x06\x02\x02\x00\x01\x00\x08\x00\x01\x01\x00\x06\x03"  # DevStatusAns
    b"\x07\x01\x02\x00\x01\x01\x01\x01\x00\x01\x00\x01\x01"  # NewChannelAns
    b"\x08\x00\x00"  # RXTimingSetupAns
    b"\x09\x00\x00"  # TxParamSetupAns
    b"\x0a\x01\x02\x00\x01\x01\x01\x01\x00\x01\x00\x01\x01"  # DlChannelAns
    b"\x0d\x00\x00"  # DeviceTimeReq
)
_NAMES_UP = const(
    "LinkCheckReq LinkADRAns power_ack data_rate_ack channel_mask_ack DutyCycleAns "
    "RXParamSetupAns rx1_dr_offset_ack rx2_data_rate_ack channel_ack DevStatusAns battery "
    "margin NewChannelAns data_rate_range_ok channel_frequency_ok RXTimingSetupAns "
    "TxParamSetupAns DlChannelAns uplink_frequency_exists channel_frequency_ok DeviceTimeReq "
)

_ROWS_DOWN = const(
    b"\x02\x02\x02\x00\x01\x00\x08\x00\x01\x01\x00\x08\x00"  # LinkCheckAns
    b"\x03\x04\x05"  # LinkADRReq
    b"\x00\x01\x04\x04\x00\x00\x01\x00\x04\x00\x01\x02\x00\x10\x00"
    b"\x03\x01\x04\x03\x00\x03\x01\x00\x04\x00"
    b"\x04\x01\x01\x00\x01\x00\x04\x00"  # DutyCycleReq
    b"\x05\x04\x03\x00\x01\x04\x03\x00\x00\x01\x00\x04\x00\x01\x03\x00\x18\x02"  # RXParamSetupReq
    b"\x06\x00\x00"  # DevStatusReq
    b"\x07\x05\x04"  # NewChannelReq
    b"\x00\x01\x00\x08\x00\x01\x03\x00\x18\x02\x04\x01\x04\x04\x00"
    b"\x04\x01\x00\x04\x00"
    b"\x08\x01\x01\x00\x01\x00\x04\x00"  # RXTimingSetupReq
    b"\x09\x01\x03\x00\x01\x05\x01\x01\x00\x01\x04\x01\x01\x00\x01\x00\x04\x00"  # TxParamSetupReq
    b"\x0a\x04\x02\x00\x01\x00\x08\x00\x01\x03\x00\x18\x02"  # DlChannelReq
    b"\x0d\x05\x02\x00\x04\x00\x20\x00\x04\x01\x00\x08\x00"  # DeviceTimeAns
)
_NAMES_DOWN = const(
    "LinkCheckAns margin gw_cnt LinkADRReq data_rate tx_power ch_mask ch_mask_cntl nb_trans "
    "DutyCycleReq max_duty_cycle RXParamSetupReq rx1_dr_offset rx2_data_rate frequency "
    "DevStatusReq NewChannelReq ch_index frequency max_dr min_dr RXTimingSetupReq delay "
    "TxParamSetupReq downlink_dwell_time uplink_dwell_time max_eirp DlChannelReq ch_index "
    "frequency DeviceTimeAns seconds fractional "
)


def _find(uplink, cid=None, name=None):
    """(cid, name, length, fields) of the command with that cid (or name) in that direction, or
    None; a field is (name, byte offset, byte count, shift, bits, kind)."""
    rows = _ROWS_UP if uplink else _ROWS_DOWN
    names = _NAMES_UP if uplink else _NAMES_DOWN
    i = p = 0
    while i < len(rows):
        nf = rows[i + 2]
        q = names.find(" ", p)
        if rows[i] == cid or (name is not None and q - p == len(name) and names[p:q] == name):
            cmd = names[p:q]
            fields = []
            j = i + 3
            for _ in range(nf):
                p = q + 1
                q = names.find(" ", p)
                fields.append((names[p:q],) + tuple(rows[j:j + 5]))
                j += 5
            return rows[i], cmd, rows[i + 1], tuple(fields)
        for _ in range(nf + 1):  # this command's name and its fields' names
            p = names.find(" ", p) + 1
        i += 3 + 5 * nf
    return None


def decode_commands(data, uplink):
    """Parse concatenated MAC commands. uplink=True for commands sent by the end device.

    Raises MacCommandError at an unknown CID or a truncated command (its `commands`
    attribute has those decoded before it)."""
    out = []
    n = len(data)
    pos = 0
    while pos < n:
        cid = data[pos]
        spec = _find(uplink, cid)
        if spec is None:
            raise MacCommandError("unknown %s MAC command CID 0x%02X at offset %d" % (
                "uplink" if uplink else "downlink", cid, pos), pos, out)
        end = pos + 1 + spec[2]
        if end > n:
            raise MacCommandError("%s (CID 0x%02X) at offset %d truncated: needs %d bytes, %d left" % (
                spec[1], cid, pos, spec[2], n - pos - 1), pos, out)
        cmd = {"cid": cid, "name": spec[1]}
        for name, off, size, shift, bits, kind in spec[3]:
            o = pos + 1 + off
            raw = data[o] if size == 1 else int.from_bytes(data[o:o + size], "little")
            v = (raw >> shift) & ((1 << bits) - 1)
            if kind == _B:
                v = v != 0
            elif kind == _F:
                v *= 100
            elif kind == _S and v >> (bits - 1):
                v -= 1 << bits
            cmd[name] = v
        out.append(cmd)
        pos = end
    return out


def _spec_for(cmd, uplink):
    if not isinstance(cmd, dict):
        raise MacCommandError("MAC command must be a dict, got %s" % type(cmd).__name__)
    direction = "uplink" if uplink else "downlink"
    cid = cmd.get("cid")
    name = cmd.get("name")
    if cid is not None:
        spec = _find(uplink, cid) if type(cid) is int else None
        if spec is None:
            raise MacCommandError("unknown %s MAC command CID %r" % (direction, cid))
        if name is not None and name != spec[1]:
            raise MacCommandError("CID 0x%02X is %s in the %s direction, not %s" % (cid, spec[1], direction, name))
        return spec
    if name is None:
        raise MacCommandError("MAC command needs a 'cid' or a 'name': %r" % (cmd,))
    spec = _find(uplink, name=name) if isinstance(name, str) else None
    if spec is None:
        if isinstance(name, str) and _find(not uplink, name=name) is not None:
            raise MacCommandError("%s is not sent in the %s direction" % (name, direction))
        raise MacCommandError("unknown MAC command %r" % (name,))
    return spec


def encode_commands(cmds, uplink):
    """List of command dicts -> each one's CID | payload, concatenated (for FOpts, at most 15
    bytes, or FPort 0)."""
    buf = bytearray()
    for cmd in cmds:
        spec = _spec_for(cmd, uplink)
        o = len(buf) + 1
        buf.append(spec[0])
        for _ in range(spec[2]):
            buf.append(0)
        for name, off, size, shift, bits, kind in spec[3]:
            if name not in cmd:
                raise MacCommandError("%s needs field %r" % (spec[1], name))
            v = cmd[name]
            if v is True or v is False:  # MicroPython's bool is no int: isinstance() says so
                v = 1 if v else 0
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
            for i in range(size):
                buf[o + off + i] |= (v >> (8 * i)) & 0xFF
    return bytes(buf)


def device_time_unix_ms(cmd):
    """UTC instant (integer UNIX ms, to the nearest ms) of a DeviceTimeAns dict; at most 4 ms
    earlier than the instant it was built from (the 1/256 s step). GPS seconds wrap in 2116."""
    gps_ms = cmd["seconds"] * 1000 + (cmd["fractional"] * 1000 + 128) // 256
    return gps_ms + (_GPS_EPOCH_UNIX_S - _GPS_UTC_LEAP_S) * 1000

"""`python -m protocol decode`: turn one LoRaWAN PHYPayload into one JSON object, for people.

Field technicians and operators paste a frame from a gateway log and want to see what it says
and whether their keys are right. Errors are one line on stderr with exit status 2, never a
traceback. Arguments are parsed by hand so the module also imports on MicroPython.
"""

import binascii
import json
import sys

from protocol import payload as app_payload
from protocol.lorawan import fcnt as lw_fcnt
from protocol.lorawan import frame as lw_frame
from protocol.lorawan import mac as lw_mac
from protocol.lorawan import network_side as lw_network
from protocol.lorawan import session as lw_session
from protocol.lorawan import join as lw_join

USAGE = """usage: python -m protocol decode --hex PHY [--nwkskey K --appskey K | --appkey K] [--last-fcnt N]

Decodes one LoRaWAN 1.0.x PHYPayload and prints one JSON object.
  --hex PHY        the PHYPayload as hex (spaces allowed)
  --nwkskey K      network session key (32 hex digits): checks the MIC, decrypts FPort 0
  --appskey K      application session key: decrypts FRMPayload and decodes the fields
  --appkey K       AppKey: decrypts and checks a join-accept, checks a join-request's MIC
  --last-fcnt N    last full 32-bit FCnt seen, to rebuild the counter past 65535
"""

_OPTIONS = ("--hex", "--nwkskey", "--appskey", "--appkey", "--last-fcnt")


class UsageError(ValueError):
    """Bad command line or bad argument values."""


def _hex(data):
    return binascii.hexlify(data).decode()


def _eui(b):
    return _hex(b)


def _parse_hex(text, what, length=None):
    text = "".join(text.split())
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        data = binascii.unhexlify(text)
    except Exception:
        raise UsageError("%s is not valid hex: %r" % (what, text[:40]))
    if length is not None and len(data) != length:
        raise UsageError("%s must be %d bytes (%d hex digits), got %d bytes" % (what, length, 2 * length, len(data)))
    return data


def parse_args(argv):
    """Return (command, options dict) or raise UsageError."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise UsageError("")
    command = argv[0]
    if command != "decode":
        raise UsageError("unknown command %r (expected 'decode')" % command)
    opts = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise UsageError("")
        value = None
        if "=" in arg and arg.split("=", 1)[0] in _OPTIONS:
            arg, value = arg.split("=", 1)
        elif arg in _OPTIONS:
            if i + 1 >= len(argv):
                raise UsageError("%s needs a value" % arg)
            i += 1
            value = argv[i]
        else:
            raise UsageError("unknown argument %r" % arg)
        if arg in opts:
            raise UsageError("%s given twice" % arg)
        opts[arg] = value
        i += 1
    if "--hex" not in opts:
        raise UsageError("--hex PHY is required")
    if "--appkey" in opts and ("--nwkskey" in opts or "--appskey" in opts):
        raise UsageError("give either session keys (--nwkskey/--appskey) or --appkey, not both")
    parsed = {"phy": _parse_hex(opts["--hex"], "--hex")}
    for name in ("--nwkskey", "--appskey", "--appkey"):
        parsed[name[2:]] = _parse_hex(opts[name], name, 16) if name in opts else None
    last = opts.get("--last-fcnt")
    if last is not None:
        try:
            last = int(last, 0)
        except ValueError:
            raise UsageError("--last-fcnt must be an integer, got %r" % last)
        if not 0 <= last <= 0xFFFFFFFF:
            raise UsageError("--last-fcnt must be within 0..4294967295")
    parsed["last_fcnt"] = last
    return command, parsed


def _dev_addr(value):
    return "%08x" % value


def _decode_data(frame, opts):
    out = {
        "mtype": lw_network.MTYPE_NAMES[frame.mtype],
        "dev_addr": _dev_addr(frame.dev_addr),
        "adr": frame.adr,
        "ack": frame.ack,
        "fcnt": frame.fcnt16 if opts["last_fcnt"] is None else None,
        "fport": frame.fport,
        "fopts": [],
        "mic": _hex(frame.mic),
        "mic_ok": None,
        "payload": None,
        "fields": None,
    }
    if frame.fopts:
        # FOpts travel in clear in LoRaWAN 1.0.x, so they decode without keys.
        try:
            out["fopts"] = lw_mac.decode_commands(frame.fopts, frame.is_uplink)
        except lw_mac.MacCommandError as e:
            out["fopts"] = e.commands
            out["mac_error"] = str(e)
    nwk, app = opts["nwkskey"], opts["appskey"]
    if nwk is None:
        if opts["last_fcnt"] is not None:
            out["fcnt"] = lw_fcnt.rebuild_fcnt(frame.fcnt16, opts["last_fcnt"])
        out["frm_payload_encrypted"] = _hex(frame.frm_payload)
        return out
    opened = lw_session.open_data_frame(frame, nwk, app or nwk, last_fcnt=opts["last_fcnt"])
    out["fcnt"] = opened.fcnt
    out["mic_ok"] = opened.mic_ok
    if not opened.mic_ok:
        raise UsageError(
            "MIC mismatch for DevAddr %s FCnt %d: wrong --nwkskey, or pass --last-fcnt if the counter passed 65535"
            % (out["dev_addr"], opened.fcnt)
        )
    if opened.mac_error:
        out["mac_error"] = opened.mac_error
    if frame.fport == 0:
        out["payload"] = _hex(opened.payload)
        out["mac_commands"] = opened.mac_commands
    elif frame.fport is not None and app is not None:
        out["payload"] = _hex(opened.payload)
        # A frame can be sound while its payload is not ours (another application's fPort):
        # say why there are no fields rather than fail the whole decode.
        try:
            if frame.is_uplink:
                out["fields"] = app_payload.decode_uplink(frame.fport, opened.payload)
            else:
                out["fields"] = app_payload.decode_downlink(frame.fport, opened.payload)
        except app_payload.PayloadError as e:
            out["fields_error"] = str(e)
    elif frame.fport is not None:
        out["frm_payload_encrypted"] = _hex(frame.frm_payload)
    return out


def _decode_join_request(frame, opts):
    out = {
        "mtype": lw_network.MTYPE_NAMES[frame.mtype],
        "join_eui": _eui(frame.join_eui),
        "dev_eui": _eui(frame.dev_eui),
        "dev_nonce": frame.dev_nonce,
        "mic": _hex(frame.mic),
        "mic_ok": None,
    }
    if opts["appkey"] is not None:
        out["mic_ok"] = lw_network.open_join_request(frame, opts["appkey"]).mic_ok
        if not out["mic_ok"]:
            raise UsageError("MIC mismatch for join-request from DevEUI %s: wrong --appkey" % out["dev_eui"])
    return out


def _decode_join_accept(phy, opts):
    if opts["appkey"] is None:
        raise UsageError("a join-accept is encrypted: pass --appkey to decode it")
    accept = lw_join.open_join_accept(phy, opts["appkey"])
    if not accept.mic_ok:
        raise UsageError("MIC mismatch for join-accept: wrong --appkey")
    return {
        "mtype": lw_network.MTYPE_NAMES[lw_frame.JOIN_ACCEPT],
        "join_nonce": accept.join_nonce,
        "net_id": "%06x" % accept.net_id,
        "dev_addr": _dev_addr(accept.dev_addr),
        "rx1_dr_offset": accept.rx1_dr_offset,
        "rx2_dr": accept.rx2_dr,
        "rx_delay": accept.rx_delay,
        "cflist": lw_network.cflist_fields(accept),
        "mic_ok": True,
    }


def decode(opts):
    """Decode per the parsed options and return a JSON-ready dict."""
    phy = opts["phy"]
    frame = lw_network.decode(phy)
    mtype = frame.mtype
    if mtype == lw_frame.JOIN_REQUEST:
        return _decode_join_request(frame, opts)
    if mtype == lw_frame.JOIN_ACCEPT:
        return _decode_join_accept(phy, opts)
    if mtype == lw_network.PROPRIETARY:
        return {"mtype": lw_network.MTYPE_NAMES[mtype], "payload": _hex(phy[1:])}
    return _decode_data(frame, opts)


def main(argv, stdout=None, stderr=None):
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        _command, opts = parse_args(argv)
        result = decode(opts)
    except UsageError as e:
        if str(e):
            stderr.write("error: %s\n" % e)
        else:
            stdout.write(USAGE)
            return 0 if argv and argv[-1] in ("-h", "--help", "help") else 2
        return 2
    except ValueError as e:
        # Every protocol error class subclasses ValueError: malformed frames, bad payloads.
        stderr.write("error: %s\n" % e)
        return 2
    stdout.write(json.dumps(result) + "\n")
    return 0

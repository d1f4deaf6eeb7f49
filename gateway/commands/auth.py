"""Who may command a device: an HMAC-SHA256 signature over the canonical command, a timestamp
and a nonce, checked before anything else is read from it.

Why beyond the broker's ACL: anyone who can publish on the command topic (a leaked broker
password, a misconfigured ACL, a compromised application) could otherwise open a household's
relay and cut its electricity. The key lives only with the gateway and whoever issues
commands, so a command the gateway runs is one its key holder made.

Signed command (docs/wire-format.md, "Commands")::

    {"id": "op-42", "ts": 1765000000, "nonce": "5f0c2a9e41d3b7a8",
     "dev_eui": "70B3D57ED0001234", "command": "dim", "fields": {"seq": 7, "level": 50},
     "sig": "<64 hex digits>"}

``sig`` = HMAC-SHA256(key, canonical(command without "sig")), where canonical is the UTF-8 of
the JSON with keys sorted at every level and no whitespace (Python's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``).

Checks, in order (the first that fails names the reason): an ``id``; the signature (a key must
be configured and the HMAC must match, compared in constant time); ``ts`` within
``max_skew_s`` of the gateway clock; a ``nonce`` not seen before within that window (kept on
disk, so a replay after a restart is refused too). Unsigned commands run only where
``allow_unsigned`` says so, and never one that moves a relay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time

from protocol import payload as _payload

__all__ = ["CommandRefused", "CommandGate", "canonical", "sign", "load_key", "moves_relay",
           "REFUSALS"]

# why a command was refused, as counted (stats.json commands.refused) and published
REFUSALS = ("no-id", "unsigned", "relay-unsigned", "no-key", "bad-signature", "stale",
            "replayed", "malformed-auth")
MIN_KEY_BYTES = 32
_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no spaces
_NONCE = re.compile(r"^[0-9A-Za-z_-]{8,64}$")
RELAY_PORTS = frozenset(names["relay"] for names in _payload.DOWN.values() if "relay" in names)


class CommandRefused(ValueError):
    """``reason`` is one of REFUSALS; the message says what to fix (one line)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def canonical(obj: dict) -> bytes:
    """The bytes that are signed: the command without "sig", keys sorted, compact."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sign(obj: dict, key: bytes, *, now: float | None = None, nonce: str | None = None) -> dict:
    """A copy of ``obj`` with ``ts``, ``nonce`` (unless given in obj) and ``sig``."""
    out = dict(obj)
    out.setdefault("ts", int(time.time() if now is None else now))
    out.setdefault("nonce", nonce or secrets.token_hex(8))
    out.pop("sig", None)
    out["sig"] = hmac.new(key, canonical(out), hashlib.sha256).hexdigest()
    return out


def load_key(path: str) -> bytes:
    """The key file: hex digits (whitespace ignored), at least MIN_KEY_BYTES bytes. ValueError."""
    try:
        with open(path, encoding="ascii") as f:
            text = "".join(f.read().split())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path!r}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path!r}: not hex digits (make one with: "
                         "python -c 'import secrets; print(secrets.token_hex(32))')") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path!r}: {len(key)} bytes; an HMAC-SHA256 key needs at least "
                         f"{MIN_KEY_BYTES}")
    return key


def moves_relay(obj: dict) -> bool:
    """Whether the command can open or close a relay (a customer's supply): the named relay
    command (LoRaWAN meter or Modbus meter) or raw bytes on a relay fPort."""
    return obj.get("command") == "relay" or obj.get("fport") in RELAY_PORTS


class CommandGate:
    """check(obj, now) raises CommandRefused or returns whether the command was signed.
    ``nonces`` is where seen nonces are kept: seen(nonce, ts, now, window_s) -> bool records
    the nonce and answers whether it was already there (gateway.commands.ledger)."""

    def __init__(self, key: bytes | None, nonces, *, allow_unsigned: bool = False,
                 max_skew_s: float = 300.0) -> None:
        self.key, self.nonces = key, nonces
        self.allow_unsigned, self.max_skew_s = allow_unsigned, max_skew_s

    def describe(self) -> str:
        if self.key is None and not self.allow_unsigned:
            return "no key_file and allow_unsigned = false: every command is refused"
        parts = ["signed commands (HMAC-SHA256, ts within %g s)" % self.max_skew_s
                 if self.key is not None else "no key_file: no signed commands"]
        if self.allow_unsigned:
            parts.append("unsigned commands other than relay allowed")
        return ", ".join(parts)

    def check(self, obj: dict, now: float) -> bool:
        cid = obj.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            raise CommandRefused("no-id", 'needs "id": 1..64 printable characters, no spaces')
        if "sig" not in obj:
            if moves_relay(obj):
                raise CommandRefused("relay-unsigned", "a relay command must be signed")
            if not self.allow_unsigned:
                raise CommandRefused("unsigned", "unsigned command (sign it with the gateway's "
                                                 "command key: python -m gateway sign-command)")
            return False
        if self.key is None:
            raise CommandRefused("no-key", "signed, but this gateway has no [commands] key_file")
        sig, ts, nonce = obj.get("sig"), obj.get("ts"), obj.get("nonce")
        if (not isinstance(sig, str) or type(ts) is not int or not isinstance(nonce, str)
                or not _NONCE.match(nonce)):
            raise CommandRefused("malformed-auth", 'a signed command needs "ts" (integer UNIX '
                                 'seconds), "nonce" (8..64 of [0-9A-Za-z_-]) and "sig" (hex)')
        try:
            body = canonical(obj)
        except ValueError as exc:
            raise CommandRefused("malformed-auth", f"cannot be made canonical: {exc}") from None
        want = hmac.new(self.key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig.lower()):
            raise CommandRefused("bad-signature", "the signature does not match (another key, "
                                 "or the command was changed after signing)")
        if abs(now - ts) > self.max_skew_s:
            raise CommandRefused("stale", "ts is %+.0f s from the gateway clock (at most %g s)"
                                 % (ts - now, self.max_skew_s))
        if self.nonces.seen(nonce, ts, now, self.max_skew_s):
            raise CommandRefused("replayed", f"nonce {nonce} was used already")
        return True


def key_from_env_or_file(path: str) -> bytes | None:
    """The key for `python -m gateway sign-command`: the file given, else $STREETGRID_COMMAND_KEY
    (hex), else None."""
    if path:
        return load_key(path)
    text = os.environ.get("STREETGRID_COMMAND_KEY", "")
    return bytes.fromhex(text) if text else None

"""Who may command a device (gateway/commands/auth.py), with the ledger's real on-disk nonces:
signatures, timestamps, nonces, unsigned and relay commands; hypothesis for the canonical form
and for tampering."""

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.commands.auth import (RELAY_PORTS, CommandGate, CommandRefused, canonical, load_key,
                                  moves_relay, sign)
from gateway.commands.ledger import CommandLedger

KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
NOW = 1_765_000_000
DIM = {"id": "op-1", "dev_eui": "70B3D57ED0001234", "command": "dim",
       "fields": {"seq": 7, "level": 50}}


@pytest.fixture
def ledger(tmp_path):
    db = CommandLedger(str(tmp_path / "commands.db"))
    yield db
    db.close()


def gate(ledger, **kw):
    return CommandGate(kw.pop("key", KEY), ledger, **kw)


def refused(g, obj, now=NOW):
    with pytest.raises(CommandRefused) as e:
        g.check(obj, now)
    return e.value.reason


def test_the_signature_is_hmac_sha256_over_the_sorted_compact_json():
    signed = sign(DIM, KEY, now=NOW, nonce="abcdef0123456789")
    body = (b'{"command":"dim","dev_eui":"70B3D57ED0001234","fields":{"level":50,"seq":7},'
            b'"id":"op-1","nonce":"abcdef0123456789","ts":1765000000}')
    assert canonical(signed) == body
    assert signed["sig"] == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_the_documented_example_is_what_the_code_signs():
    import os
    import re
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "wire-format.md")).read()
    text, sig = re.search(r"canonical: (\{.*\})\n +sig: +([0-9a-f]{64})", doc).groups()
    signed = sign(json.loads(text), KEY)
    assert canonical(signed).decode() == text and signed["sig"] == sig


def test_a_signed_command_passes_once_and_its_replay_is_refused(ledger):
    g = gate(ledger)
    signed = sign(DIM, KEY, now=NOW)
    assert g.check(signed, NOW + 10) is True
    assert refused(g, signed, NOW + 20) == "replayed"
    assert g.check(sign(DIM, KEY, now=NOW), NOW) is True  # a new nonce: a new command


def test_the_nonces_survive_a_restart(tmp_path):
    signed = sign(DIM, KEY, now=NOW)
    db = CommandLedger(str(tmp_path / "commands.db"))
    assert gate(db).check(signed, NOW)
    db.close()
    db = CommandLedger(str(tmp_path / "commands.db"))
    assert refused(gate(db), signed) == "replayed"
    db.close()


@pytest.mark.parametrize("change, reason", [
    (lambda c: c["fields"].update(level=100), "bad-signature"),
    (lambda c: c.update(dev_eui="70B3D57ED0009999"), "bad-signature"),
    (lambda c: c.update(sig="0" * 64), "bad-signature"),
    (lambda c: c.update(ts=c["ts"] + 1), "bad-signature"),
    (lambda c: c.pop("nonce"), "malformed-auth"),
    (lambda c: c.update(ts="soon"), "malformed-auth"),
    (lambda c: c.update(nonce="short"), "malformed-auth"),
    (lambda c: c.pop("id"), "no-id"),
    (lambda c: c.update(id="has space"), "no-id"),
])
def test_tampered_or_incomplete_commands_are_refused(ledger, change, reason):
    c = json.loads(json.dumps(sign(DIM, KEY, now=NOW)))
    change(c)
    assert refused(gate(ledger), c) == reason


def test_another_key_is_a_bad_signature(ledger):
    assert refused(gate(ledger), sign(DIM, bytes(32), now=NOW)) == "bad-signature"


def test_stale_and_future_timestamps_are_refused(ledger):
    g = gate(ledger, max_skew_s=300)
    assert refused(g, sign(DIM, KEY, now=NOW - 301)) == "stale"
    assert refused(g, sign(DIM, KEY, now=NOW + 301)) == "stale"
    assert g.check(sign(DIM, KEY, now=NOW - 299), NOW)


def test_unsigned_commands_run_only_where_allowed_and_never_a_relay(ledger):
    relay = {"id": "r-1", "dev_eui": "70B3D57ED0005678", "command": "relay",
             "fields": {"seq": 1, "action": "open"}}
    raw_relay = {"id": "r-2", "dev_eui": "70B3D57ED0005678", "fport": 70, "data": "010101"}
    modbus_relay = {"id": "r-3", "modbus": {"bus": "rs485-1", "address": 3},
                    "command": "relay", "fields": {"action": "open"}}
    strict, lab = gate(ledger), gate(ledger, allow_unsigned=True)
    assert refused(strict, DIM) == "unsigned"
    assert lab.check(DIM, NOW) is False
    for r in (relay, raw_relay, modbus_relay):
        assert moves_relay(r)
        assert refused(strict, r) == refused(lab, r) == "relay-unsigned"
        assert lab.check(sign(r, KEY, now=NOW), NOW) is True
    assert RELAY_PORTS == {70}


def test_a_gateway_without_a_key_refuses_signed_commands(ledger):
    g = CommandGate(None, ledger)
    assert refused(g, sign(DIM, KEY, now=NOW)) == "no-key"
    assert "every command is refused" in g.describe()


def test_the_key_file_is_hex_and_long_enough(tmp_path):
    good, short, junk = tmp_path / "k1", tmp_path / "k2", tmp_path / "k3"
    good.write_text(KEY.hex()[:32] + "\n" + KEY.hex()[32:] + "\n")
    short.write_text("00" * 16)
    junk.write_text("not hex at all")
    assert load_key(str(good)) == KEY
    with pytest.raises(ValueError, match="at least 32"):
        load_key(str(short))
    with pytest.raises(ValueError, match="not hex"):
        load_key(str(junk))
    with pytest.raises(ValueError, match="missing"):
        load_key(str(tmp_path / "missing"))


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=8),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
commands = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in
                                                                    ("sig", "ts", "nonce", "id")),
                           json_value, max_size=5)


@settings(max_examples=150, deadline=None)
@given(commands, st.integers(0, 2**31))
def test_any_command_signed_verifies_after_a_json_round_trip(tmp_path_factory, cmd, seed):
    """Whatever the command holds, what the signer sends and the gateway parses verifies: the
    canonical form does not depend on key order or on how the JSON was spaced."""
    db = CommandLedger(str(tmp_path_factory.mktemp("h") / "c.db"))
    try:
        signed = sign(dict(cmd, id="h-%d" % seed), KEY, now=NOW, nonce="n%015d" % seed)
        text = json.dumps(dict(reversed(list(signed.items()))), indent=seed % 3 or None)
        assert gate(db).check(json.loads(text), NOW) is True
    finally:
        db.close()


@settings(max_examples=150, deadline=None)
@given(commands, st.data())
def test_any_change_to_a_signed_command_breaks_its_signature(tmp_path_factory, cmd, data):
    db = CommandLedger(str(tmp_path_factory.mktemp("h") / "c.db"))
    try:
        signed = sign(dict(cmd, id="h-1"), KEY, now=NOW, nonce="nonce-123456")
        key = data.draw(st.sampled_from(sorted(k for k in signed if k != "sig")))
        new = data.draw(json_value.filter(lambda v: json.dumps(v, sort_keys=True)
                                          != json.dumps(signed[key], sort_keys=True)))
        if key == "id":
            new = str(new) + "x" if isinstance(new, str) else "changed-%d" % len(str(new))
        elif key == "nonce":  # still a well-formed nonce, so only the signature can refuse it
            new = signed["nonce"] + "x"
        elif key == "ts":
            new = signed["ts"] + 1 + abs(hash(str(new))) % 100
        tampered = dict(signed, **{key: new})
        with pytest.raises(CommandRefused) as e:
            gate(db, max_skew_s=1000).check(tampered, NOW)
        assert e.value.reason in ("bad-signature", "no-id")
    finally:
        db.close()

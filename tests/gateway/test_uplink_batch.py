"""Group commit of frame counters: SessionStore.accept_uplinks and UplinkProcessor.process_batch.

The batch path must give exactly what one-by-one processing gives (Results, counters, stored
counters), with one commit for the whole batch instead of one per uplink.
"""

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.lorawan.dedup import RadioMeta, Uplink
from gateway.lorawan.registry import load_registry
from gateway.lorawan.sessions import SessionError, SessionStore
from gateway.lorawan.uplink import UplinkProcessor
from protocol import payload
from protocol.lorawan import frame
from protocol.lorawan.session import build_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys

NET_ID = 0x000013
KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")
POLES = [bytes.fromhex("70B3D57ED00012%02X" % i) for i in range(3)]
METER = bytes.fromhex("70B3D57ED0005678")
NOW = 1_700_000_000


def keys(eui):
    return lambda jn, addr: derive_session_keys(KEY, jn, NET_ID, 1)


def commits(store):
    """Count COMMIT statements the store's connection runs from now on."""
    seen = []
    store._conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_accept_uplinks_in_order_one_commit_durable(tmp_path):
    path = tmp_path / "s.db"
    with SessionStore(path) as s:
        a = s.save_join(POLES[0], 1, keys(POLES[0]), 0).dev_addr
        b = s.save_join(POLES[1], 1, keys(POLES[1]), 0).dev_addr
        assert s.accept_uplink(b, 10)
        seen = commits(s)
        out = s.accept_uplinks([(a, 0), (a, 0), (b, 9), (0x12345, 1), (a, 7), (b, 11), (a, 6)])
        assert out == [True, False, False, None, True, True, False]
        assert len(seen) == 1
        assert s.accept_uplinks([]) == [] and len(seen) == 1
    with SessionStore(path) as s:  # committed, not just cached
        assert s.get_by_dev_addr(a).fcnt_up == 7 and s.get_by_dev_addr(b).fcnt_up == 11


def test_accept_uplinks_all_or_nothing(tmp_path):
    with SessionStore(tmp_path / "s.db") as s:
        a = s.save_join(POLES[0], 1, keys(POLES[0]), 0).dev_addr
        with pytest.raises(ValueError):
            s.accept_uplinks([(a, 5), (a, 0x100000000)])
        assert s.get_by_dev_addr(a).fcnt_up is None  # the valid first pair was not written either
        s._conn.execute("CREATE TRIGGER boom BEFORE UPDATE OF fcnt_up ON sessions "
                        "WHEN NEW.fcnt_up = 9 BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
        with pytest.raises(SessionError, match="accept_uplinks"):
            s.accept_uplinks([(a, 5), (a, 9)])
        assert s.get_by_dev_addr(a).fcnt_up is None
        assert s.accept_uplinks([(a, 5)]) == [True]  # the store still works after the rollback


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """A session file with three poles and a meter joined; each test gets its own copies."""
    d = tmp_path_factory.mktemp("joined")
    (d / "devices.toml").write_text("".join(f'''
[[device]]
name = "{kind}-{i}"
site = "harbour"
kind = "{kind}"
dev_eui = "{eui.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY.hex()}"
''' for i, (kind, eui) in enumerate([("pole", e) for e in POLES] + [("meter", METER)])))
    devs = []
    with SessionStore.for_net_id(d / "sessions.db", NET_ID) as s:
        for eui in POLES + [METER]:
            ses = s.save_join(eui, 1, keys(eui), 0)
            devs.append((eui, ses.dev_addr, ses.nwk_s_key, ses.app_s_key))
    return load_registry(d / "devices.toml"), d / "sessions.db", devs


def processor(joined, tmp_path, name):
    reg, src, _ = joined
    path = tmp_path / name
    shutil.copy(src, path)
    return UplinkProcessor(reg, SessionStore.for_net_id(path, NET_ID, synchronous="NORMAL"))


def make_phy(devs, spec):
    """spec (device index, fcnt, what) -> PHYPayload; what: ok / forged / meter-port / join / junk."""
    dev, fcnt, what = spec
    eui, addr, nwk, app = devs[dev]
    if what == "junk":
        return bytes([0x40, 1, 2])
    if what == "join":
        return build_join_request(JOIN_EUI, eui, 2, KEY)
    if what == "unknown":
        addr = 0x26FFFFFF
    kind = "meter" if (eui == METER) != (what == "wrong-kind") else "pole"
    port, body = payload.encode_uplink(kind, "report", {"lamp_energy": fcnt} if kind == "pole" else {"import_energy": fcnt})
    if what == "no-port":
        port, body = None, b""
    phy = build_data_frame(frame.UNCONFIRMED_UP, addr, fcnt, port, body, bytes(16) if what == "forged" else nwk, app)
    return phy


def uplinks(devs, specs):
    return [Uplink(make_phy(devs, sp), [RadioMeta("GW%d" % i, -90.0, 5.0, 868100000, "SF7BW125", i)], 0.0)
            for i, sp in enumerate(specs)]


def comparable(r):
    return (r.accepted, r.reason, r.kind, r.dev_eui, r.dev_addr, r.fcnt, r.fport, r.device_kind,
            r.message, r.records, r.mac_commands, r.payload_hex, r.error is None, r.uplink)


def test_process_batch_matches_one_by_one_and_commits_once(joined, tmp_path):
    _, _, devs = joined
    specs = [(0, 1, "ok"), (1, 65534, "ok"), (0, 1, "ok"), (0, 3, "forged"), (0, 2, "ok"),
             (1, 65537, "ok"), (3, 4, "ok"), (2, 5, "wrong-kind"), (2, 6, "no-port"), (0, 0, "join"),
             (0, 0, "junk"), (0, 9, "unknown"), (0, 1, "ok"), (3, 4, "ok")]
    ups = uplinks(devs, specs)
    one, batch = processor(joined, tmp_path, "one.db"), processor(joined, tmp_path, "batch.db")
    expected = [one.process(u, NOW) for u in ups]
    seen = commits(batch.sessions)
    got = batch.process_batch(ups, NOW)
    assert len(seen) == 1
    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    assert [r.reason for r in got] == [None, None, "replay", "bad-mic", None, None, None,
                                       "payload-error", None, "join", "malformed",
                                       "unknown-dev-addr", "replay", "replay"]
    assert batch.counters == one.counters
    for _, addr, _, _ in devs:
        assert batch.sessions.get_by_dev_addr(addr) == one.sessions.get_by_dev_addr(addr)
    assert batch.process_batch([], NOW) == []
    with pytest.raises(ValueError):
        batch.process_batch(ups, 12.0)  # relative time: a caller bug, as in process()
    one.sessions.close()
    batch.sessions.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 2, 3, 5, 65535, 65536, 65540, 90000]),
                          st.sampled_from(["ok"] * 6 + ["forged", "no-port", "unknown"])),
                max_size=12),
       st.integers(1, 12))
def test_process_batch_property(joined, tmp_path, specs, cut):
    """Any frames, split into release batches anywhere: same as one-by-one processing."""
    _, _, devs = joined
    ups = uplinks(devs, specs)
    for f in tmp_path.glob("p-*"):
        f.unlink()
    one, batch = processor(joined, tmp_path, "p-one.db"), processor(joined, tmp_path, "p-batch.db")
    try:
        expected = [comparable(one.process(u, NOW)) for u in ups]
        got = []
        for i in range(0, len(ups), cut):
            got += [comparable(r) for r in batch.process_batch(ups[i:i + cut], NOW)]
        assert got == expected
        assert batch.counters == one.counters
        for _, addr, _, _ in devs:
            assert batch.sessions.get_by_dev_addr(addr).fcnt_up == one.sessions.get_by_dev_addr(addr).fcnt_up
    finally:
        one.sessions.close()
        batch.sessions.close()


def test_cipher_caches_hold_two_session_keys_per_device(joined, monkeypatch):
    """Without this, a fleet above protocol.cipher's default bound rebuilds AES contexts per uplink."""
    from protocol import cipher

    monkeypatch.setattr(cipher, "CACHE_SIZE", 4)
    reg, _, _ = joined
    UplinkProcessor(reg, None)
    assert cipher.CACHE_SIZE >= 2 * len(reg)
    monkeypatch.setattr(cipher, "CACHE_SIZE", 10 ** 6)
    UplinkProcessor(reg, None)
    assert cipher.CACHE_SIZE == 10 ** 6  # never shrinks a larger setting


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 2, 3, 5, 65535, 65536, 65540, 90000]),
                          st.sampled_from(["ok"] * 6 + ["forged", "no-port", "unknown"])),
                max_size=12),
       st.integers(1, 12))
def test_prepare_batch_then_commit_is_process_batch_with_the_commit_last(joined, tmp_path, specs, cut):
    """Deciding against the counters in memory and committing after the records: same Results,
    counts and stored counters as process_batch; nothing is written before commit_counters."""
    _, _, devs = joined
    ups = uplinks(devs, specs)
    for f in tmp_path.glob("q-*"):
        f.unlink()
    ref, prep = processor(joined, tmp_path, "q-ref.db"), processor(joined, tmp_path, "q-prep.db")
    try:
        for i in range(0, len(ups), cut):
            part = ups[i:i + cut]
            expected = [comparable(r) for r in ref.process_batch(part, NOW)]
            seen = commits(prep.sessions)
            batch = prep.prepare_batch(part, NOW)
            assert [comparable(r) for r in batch.results] == expected
            assert seen == []  # decided, nothing stored yet
            assert batch.commit_counters() == []  # the only writer: no refusal
            assert len(seen) == (1 if any(r.accepted or r.reason == "payload-error"
                                          for r in batch.results) else 0)
            assert batch.commit_counters() == []  # committing twice stores nothing more
        assert prep.counters == ref.counters
        for _, addr, _, _ in devs:
            assert prep.sessions.get_by_dev_addr(addr).fcnt_up == ref.sessions.get_by_dev_addr(addr).fcnt_up
    finally:
        ref.sessions.close()
        prep.sessions.close()


def test_a_counter_refused_at_commit_is_reported_not_lost(joined, tmp_path):
    _, _, devs = joined
    p = processor(joined, tmp_path, "r.db")
    try:
        batch = p.prepare_batch(uplinks(devs, [(0, 40, "ok")]), NOW)
        assert batch.results[0].accepted
        p.sessions.accept_uplink(devs[0][1], 50)  # the store moved on meanwhile
        late = batch.commit_counters()
        assert late == [batch.results[0]]  # its record is the caller's: a duplicate, not a loss
    finally:
        p.sessions.close()

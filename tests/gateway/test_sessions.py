import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.lorawan.sessions import (DevNonceReplay, SessionError, SessionStore, UnknownSession,
                              dev_addr_prefix)

EUI = bytes.fromhex("70B3D57ED0001234")
EUI2 = bytes.fromhex("70B3D57ED0005678")
NWK = bytes(range(16))
APP = bytes(range(16, 32))


def keys(join_nonce, dev_addr):
    return NWK, APP


def test_pragmas_wal_full(tmp_path):
    p = tmp_path / "s.db"
    SessionStore(p).close()
    s = SessionStore(p)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()
    with pytest.raises(ValueError):
        SessionStore(tmp_path / "x.db", synchronous="OFF")


def test_save_and_lookup_and_reopen(tmp_path):
    p = tmp_path / "s.db"
    with SessionStore.for_net_id(p, 0x000013) as s:
        sess = s.save_join(EUI, 5, keys, 1000.0)
        assert 0x26000000 <= sess.dev_addr <= 0x27FFFFFF
        assert sess.fcnt_up is None and sess.fcnt_down == 0 and sess.join_nonce == 1
        assert s.get_by_dev_eui(EUI) == sess == s.get_by_dev_addr(sess.dev_addr)
        assert s.accept_uplink(sess.dev_addr, 7)
        assert s.next_fcnt_down(sess.dev_addr) == 0
        assert NWK.hex() not in repr(sess) and APP.hex() not in repr(sess)
        assert "nwk_s_key" not in repr(sess)
    with SessionStore.for_net_id(p, 0x000013) as s:  # gateway restart
        got = s.get_by_dev_eui(EUI)
        assert got.dev_addr == sess.dev_addr and got.nwk_s_key == NWK and got.app_s_key == APP
        assert got.fcnt_up == 7 and got.fcnt_down == 1 and got.join_time == 1000.0
        with pytest.raises(DevNonceReplay):  # nonce history survives too
            s.save_join(EUI, 5, keys, 1001.0)
        assert s.save_join(EUI, 6, keys, 1001.0).join_nonce == 2
    assert s.closed
    with pytest.raises(SessionError):
        s.get_by_dev_eui(EUI)


def test_dev_nonce_counter_mode(tmp_path):
    with SessionStore(tmp_path / "s.db") as s:
        s.save_join(EUI, 10, keys, 0)
        for bad in (10, 9, 0):
            assert s.dev_nonce_seen(EUI, bad)
            with pytest.raises(DevNonceReplay):
                s.save_join(EUI, bad, keys, 0)
        first = s.get_by_dev_eui(EUI)
        assert first.dev_nonce == 10 and first.join_nonce == 1  # replays changed nothing
        second = s.save_join(EUI, 11, keys, 0)
        assert second.join_nonce == 2
        assert s.get_by_dev_addr(first.dev_addr) is None or first.dev_addr == second.dev_addr
        s.save_join(EUI2, 0, keys, 0)  # nonces are per device


def test_dev_nonce_random_mode(tmp_path):
    with SessionStore(tmp_path / "s.db", dev_nonce_mode="random") as s:
        s.save_join(EUI, 500, keys, 0)
        s.save_join(EUI, 3, keys, 0)  # lower but unseen: fine for 1.0.2 random nonces
        for bad in (500, 3):
            with pytest.raises(DevNonceReplay):
                s.save_join(EUI, bad, keys, 0)
        # per-call override to 1.0.4 counter rule
        with pytest.raises(DevNonceReplay):
            s.save_join(EUI, 4, keys, 0, dev_nonce_mode="counter")
        assert s.save_join(EUI, 501, keys, 0, dev_nonce_mode="counter").join_nonce == 3


def test_dev_addr_unique_and_prefixed(tmp_path):
    lo, hi = dev_addr_prefix(0x13)
    assert (lo, hi) == (0x26000000, 0x27FFFFFF)
    with SessionStore(tmp_path / "s.db", nwk_id=0x13) as s:
        addrs = {s.save_join(i.to_bytes(8, "big"), 0, keys, 0).dev_addr for i in range(300)}
        assert len(addrs) == 300 and all(lo <= a <= hi for a in addrs)
    with pytest.raises(ValueError):
        dev_addr_prefix(128)


def test_dev_addr_collision_retries(tmp_path, monkeypatch):
    import gateway.lorawan.sessions as mod
    seq = iter([1, 1, 2])
    monkeypatch.setattr(mod.secrets, "randbelow", lambda n: next(seq))
    with SessionStore(tmp_path / "s.db") as s:
        assert s.save_join(EUI, 0, keys, 0).dev_addr == 1
        assert s.save_join(EUI2, 0, keys, 0).dev_addr == 2


def test_unknown_session(tmp_path):
    with SessionStore(tmp_path / "s.db") as s:
        with pytest.raises(UnknownSession):
            s.accept_uplink(0x1234, 1)
        with pytest.raises(UnknownSession):
            s.next_fcnt_down(0x1234)
        assert s.get_by_dev_addr(0x1234) is None and s.get_by_dev_eui(EUI) is None


def test_fcnt_up_only_forward(tmp_path):
    with SessionStore(tmp_path / "s.db") as s:
        a = s.save_join(EUI, 0, keys, 0).dev_addr
        assert s.accept_uplink(a, 0)  # first uplink may be 0
        assert not s.accept_uplink(a, 0)
        assert s.accept_uplink(a, 5)
        assert not s.accept_uplink(a, 4)
        assert not s.accept_uplink(a, 5)
        assert s.accept_uplink(a, 0xFFFFFFFF)
        assert s.get_by_dev_addr(a).fcnt_up == 0xFFFFFFFF
        with pytest.raises(ValueError):
            s.accept_uplink(a, 0x100000000)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=30))
def test_fcnt_up_monotonic_property(tmp_path, counters):
    p = tmp_path / "prop.db"
    if p.exists():
        p.unlink()
    with SessionStore(p) as s:
        a = s.save_join(EUI, 0, keys, 0).dev_addr
        last = None
        for c in counters:
            ok = s.accept_uplink(a, c)
            assert ok == (last is None or c > last)
            if ok:
                last = c
            assert s.get_by_dev_addr(a).fcnt_up == last


def test_fcnt_down_never_repeats_across_reopen(tmp_path):
    p = tmp_path / "s.db"
    seen = []
    with SessionStore(p) as s:
        a = s.save_join(EUI, 0, keys, 0).dev_addr
    for _ in range(5):
        s = SessionStore(p)
        seen += [s.next_fcnt_down(a) for _ in range(3)]
        s._conn.close()  # no orderly close(): like a crash; commits are already durable
        s._conn = None
    assert seen == list(range(15))


def test_fcnt_down_exhausted(tmp_path):
    with SessionStore(tmp_path / "s.db") as s:
        a = s.save_join(EUI, 0, keys, 0).dev_addr
        s._conn.execute("UPDATE sessions SET fcnt_down = 4294967295")
        assert s.next_fcnt_down(a) == 0xFFFFFFFF
        with pytest.raises(SessionError, match="rejoin"):
            s.next_fcnt_down(a)


def test_failed_key_derivation_writes_nothing(tmp_path):
    def boom(jn, da):
        raise RuntimeError("x")
    with SessionStore(tmp_path / "s.db") as s:
        with pytest.raises(RuntimeError):
            s.save_join(EUI, 1, boom, 0)
        assert s.get_by_dev_eui(EUI) is None and not s.dev_nonce_seen(EUI, 1)
        assert s.save_join(EUI, 1, keys, 0).join_nonce == 1


def test_refuses_foreign_files(tmp_path):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(SessionError):
        SessionStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SessionError):
        SessionStore(junk)
    with pytest.raises(SessionError):
        SessionStore(tmp_path)

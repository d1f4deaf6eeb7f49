"""SessionStore's in-memory session cache never disagrees with what is committed in the file."""

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.lorawan.sessions import DevNonceReplay, Session, SessionError, SessionStore, UnknownSession

EUIS = [bytes([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, i]) for i in range(3)]


def keys(join_nonce, dev_addr):
    return bytes([join_nonce & 0xFF]) * 16, dev_addr.to_bytes(4, "big") * 4


def on_disk(path, dev_addr):
    """The committed row, read through a separate connection (no cache involved)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT dev_eui, dev_addr, nwk_s_key, app_s_key, fcnt_up, fcnt_down, "
                           "join_time, join_nonce, dev_nonce FROM sessions WHERE dev_addr = ?",
                           (dev_addr,)).fetchone()
    finally:
        conn.close()
    return None if row is None else Session(*row)


ops = st.lists(st.one_of(
    st.tuples(st.just("join"), st.integers(0, 2), st.integers(0, 6)),
    st.tuples(st.just("up"), st.integers(0, 2), st.integers(0, 20)),
    st.tuples(st.just("ups"), st.integers(0, 2), st.lists(st.integers(0, 20), max_size=4)),
    st.tuples(st.just("down"), st.integers(0, 2), st.just(0)),
), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops, st.sampled_from([0, 1, 100]))
def test_cached_reads_equal_committed_state(tmp_path, program, max_cached):
    path = tmp_path / ("c%d.db" % max_cached)
    if path.exists():
        path.unlink()
    addrs = []  # every DevAddr ever handed out, including freed ones
    with SessionStore(path, synchronous="NORMAL", max_cached=max_cached) as s:
        for op, dev, arg in program:
            cur = s.get_by_dev_eui(EUIS[dev])
            try:
                if op == "join":
                    addrs.append(s.save_join(EUIS[dev], arg, keys, 1.0).dev_addr)
                elif cur is None:
                    continue
                elif op == "up":
                    s.accept_uplink(cur.dev_addr, arg)
                elif op == "ups":
                    s.accept_uplinks([(cur.dev_addr, f) for f in arg])
                else:
                    s.next_fcnt_down(cur.dev_addr)
            except DevNonceReplay:
                pass
            for a in addrs:
                assert s.get_by_dev_addr(a) == on_disk(path, a)


def test_rejoin_frees_cached_dev_addr_and_close_drops_cache(tmp_path):
    path = tmp_path / "s.db"
    s = SessionStore(path)
    old = s.save_join(EUIS[0], 1, keys, 1.0)
    assert s.get_by_dev_addr(old.dev_addr) == old
    assert s.accept_uplinks([(old.dev_addr, 4)]) == [True]
    assert s.get_by_dev_addr(old.dev_addr).fcnt_up == 4
    new = s.save_join(EUIS[0], 2, keys, 2.0)
    assert s.get_by_dev_addr(old.dev_addr) is None  # the old session is gone, not cached
    assert s.get_by_dev_addr(new.dev_addr) == new and new.fcnt_up is None
    with pytest.raises(UnknownSession):
        s.accept_uplink(old.dev_addr, 5)
    s.close()
    with pytest.raises(SessionError, match="closed"):
        s.get_by_dev_addr(new.dev_addr)


def test_failed_commit_leaves_cache_as_the_file(tmp_path):
    path = tmp_path / "s.db"
    with SessionStore(path) as s:
        a = s.save_join(EUIS[0], 1, keys, 1.0).dev_addr
        s._conn.execute("CREATE TRIGGER boom BEFORE UPDATE OF fcnt_up ON sessions "
                        "WHEN NEW.fcnt_up = 9 BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
        assert s.accept_uplink(a, 3)
        with pytest.raises(SessionError):
            s.accept_uplink(a, 9)
        assert s.get_by_dev_addr(a).fcnt_up == 3 == on_disk(path, a).fcnt_up


def test_sessions_are_loaded_at_open_when_they_fit(tmp_path):
    path = tmp_path / "s.db"
    with SessionStore(path) as s:
        made = [s.save_join(e, 1, keys, 1.0) for e in EUIS]
        s.accept_uplink(made[0].dev_addr, 7)
    with SessionStore(path) as s:
        assert sorted(s._cache) == sorted(m.dev_addr for m in made)
        assert s.get_by_dev_addr(made[0].dev_addr).fcnt_up == 7
    with SessionStore(path, max_cached=2) as s:  # too many to preload: filled on demand
        assert s._cache == {}
        assert s.get_by_dev_addr(made[1].dev_addr) == made[1] and len(s._cache) == 1


def test_new_files_get_small_pages_old_files_keep_theirs(tmp_path, monkeypatch):
    import gateway.lorawan.sessions as sessions_mod

    with SessionStore(tmp_path / "new.db") as s:
        assert s._conn.execute("PRAGMA page_size").fetchone()[0] == sessions_mod.PAGE_SIZE == 1024
    monkeypatch.setattr(sessions_mod, "PAGE_SIZE", 4096)
    with SessionStore(tmp_path / "old.db") as s:  # as files made before PAGE_SIZE existed
        a = s.save_join(EUIS[0], 1, keys, 1.0).dev_addr
    monkeypatch.setattr(sessions_mod, "PAGE_SIZE", 1024)
    with SessionStore(tmp_path / "old.db") as s:
        assert s._conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert s.accept_uplinks([(a, 3)]) == [True] and on_disk(tmp_path / "old.db", a).fcnt_up == 3

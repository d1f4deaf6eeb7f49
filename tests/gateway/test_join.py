import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.lorawan.join import REASONS, handle_join_request
from gateway.lorawan.registry import load_registry
from gateway.lorawan.sessions import SessionStore
from protocol.lorawan import frame, network_side
from protocol.lorawan.region import EU868, KR920
from protocol.lorawan.network_side import build_join_accept
from protocol.lorawan.session import build_data_frame, open_data_frame
from protocol.lorawan.join import build_join_request, derive_session_keys, open_join_accept

NET_ID = 0x000013
KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
KEY2 = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
POLE = bytes.fromhex("70B3D57ED0001234")
METER = bytes.fromhex("70B3D57ED0005678")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")


@pytest.fixture
def env(tmp_path):
    (tmp_path / "devices.toml").write_text(f'''
[[device]]
name = "pole-1"
site = "harbour"
kind = "pole"
dev_eui = "{POLE.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY.hex()}"

[[device]]
name = "meter-1"
site = "harbour"
kind = "meter"
dev_eui = "{METER.hex()}"
join_eui = "{JOIN_EUI.hex()}"
app_key = "{KEY2.hex()}"
dev_nonce = "random"
''')
    reg = load_registry(tmp_path / "devices.toml")
    db = tmp_path / "sessions.db"
    store = SessionStore.for_net_id(db, NET_ID)
    yield reg, store, db
    store.close()


def join(env, dev_eui=POLE, nonce=1, key=KEY, join_eui=JOIN_EUI, region=EU868, now=1700000000.0):
    reg, store, _ = env
    phy = build_join_request(join_eui, dev_eui, nonce, key)
    return handle_join_request(phy, reg, store, NET_ID, region, now)


def test_happy_path_end_to_end(env):
    reg, store, db = env
    r = join(env, nonce=7)
    assert r.accepted and r.reason is None and r.dev_eui == POLE and r.dev_nonce == 7
    assert (r.rx1_delay_us, r.rx2_delay_us) == (5_000_000, 6_000_000)
    # the device's view
    ja = open_join_accept(r.phy, KEY)
    assert ja.mic_ok
    assert ja.net_id == NET_ID and 0x26000000 <= ja.dev_addr <= 0x27FFFFFF
    assert ja.rx2_dr == EU868.rx2_dr and ja.rx1_dr_offset == 0 and ja.rx1_delay_s == 1
    dev_nwk, dev_app = derive_session_keys(KEY, ja.join_nonce, ja.net_id, 7)
    # stored session = device session (and it is already durable: check via a 2nd connection)
    other = SessionStore.for_net_id(db, NET_ID)
    s = other.get_by_dev_eui(POLE)
    other.close()
    assert s == r.session
    assert (s.dev_addr, s.nwk_s_key, s.app_s_key, s.join_nonce) == (ja.dev_addr, dev_nwk, dev_app, ja.join_nonce)
    assert s.join_time == 1700000000.0
    assert KEY.hex() not in repr(r).lower() and dev_nwk.hex() not in repr(r)
    # first data uplink with the device's keys is accepted by the network with the stored ones
    up = build_data_frame(frame.UNCONFIRMED_UP, ja.dev_addr, 0, 1, b"hi", dev_nwk, dev_app)
    sess = store.get_by_dev_addr(network_side.decode(up).dev_addr)
    o = open_data_frame(up, sess.nwk_s_key, sess.app_s_key, sess.fcnt_up)
    assert o.accept and o.payload == b"hi"
    assert store.accept_uplink(sess.dev_addr, o.fcnt)


def test_kr920_delays_and_options(env):
    reg, store, _ = env
    phy = build_join_request(JOIN_EUI, POLE, 1, KEY)
    r = handle_join_request(phy, reg, store, NET_ID, KR920, 0.0, rx1_dr_offset=2, rx2_dr=1, rx_delay=3)
    ja = open_join_accept(r.phy, KEY)
    assert (ja.rx1_dr_offset, ja.rx2_dr, ja.rx_delay) == (2, 1, 3)
    assert (r.rx1_delay_us, r.rx2_delay_us) == (network_side.JOIN_ACCEPT_DELAY1_US, network_side.JOIN_ACCEPT_DELAY2_US)
    with pytest.raises(ValueError):
        handle_join_request(phy, reg, store, NET_ID, KR920, 0.0, rx1_dr_offset=8)


def test_dev_nonce_replay_rejected(env):
    first = join(env, nonce=3)
    assert first.accepted
    again = join(env, nonce=3)
    assert not again.accepted and again.reason == "dev-nonce-replay" and again.phy is None
    assert join(env, nonce=2).reason == "dev-nonce-replay"  # 1.0.4: lower is a replay too
    assert env[1].get_by_dev_eui(POLE) == first.session  # session untouched
    nxt = join(env, nonce=4)
    assert nxt.accepted and nxt.session.join_nonce > first.session.join_nonce
    assert open_join_accept(nxt.phy, KEY).join_nonce == nxt.session.join_nonce


def test_random_nonce_device(env):
    assert join(env, METER, 900, KEY2).accepted
    assert join(env, METER, 5, KEY2).accepted  # 1.0.2 fallback: lower but unseen is fine
    assert join(env, METER, 900, KEY2).reason == "dev-nonce-replay"


def test_replay_survives_restart(env, tmp_path):
    reg, store, db = env
    assert join(env, nonce=10).accepted
    store.close()
    store2 = SessionStore.for_net_id(db, NET_ID)
    try:
        r = handle_join_request(build_join_request(JOIN_EUI, POLE, 10, KEY), reg, store2, NET_ID, EU868, 0)
        assert r.reason == "dev-nonce-replay"
        r = handle_join_request(build_join_request(JOIN_EUI, POLE, 11, KEY), reg, store2, NET_ID, EU868, 0)
        assert r.accepted and r.session.join_nonce == 2
    finally:
        store2.close()


def test_bad_mic_rejected_and_burns_nothing(env):
    r = join(env, nonce=1, key=KEY2)
    assert not r.accepted and r.reason == "bad-mic"
    phy = bytearray(build_join_request(JOIN_EUI, POLE, 1, KEY))
    phy[-1] ^= 1
    assert handle_join_request(bytes(phy), env[0], env[1], NET_ID, EU868, 0).reason == "bad-mic"
    assert env[1].get_by_dev_eui(POLE) is None
    assert join(env, nonce=1).accepted  # the forged nonce was not recorded


def test_unknown_device_rejected(env):
    r = join(env, dev_eui=bytes(8))
    assert not r.accepted and r.reason == "unknown-device" and r.dev_eui == bytes(8)


def test_join_eui_mismatch(env):
    r = join(env, join_eui=bytes(8))
    assert r.reason == "join-eui-mismatch"


def test_not_a_join_request(env):
    reg, store, _ = env
    up = build_data_frame(frame.UNCONFIRMED_UP, 1, 0, 1, b"x", KEY, KEY)
    acc = build_join_accept(KEY, 1, NET_ID, 1, 0, 0, 1)
    for phy in (b"", b"\x00", up, acc, b"\x00" * 22):
        r = handle_join_request(phy, reg, store, NET_ID, EU868, 0)
        assert not r.accepted and r.reason == "malformed"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40))
def test_garbage_never_raises(env, data):
    r = handle_join_request(data, env[0], env[1], NET_ID, EU868, 0)
    assert not r.accepted and r.reason in REASONS


def test_rejoin_gets_fresh_addr_and_old_addr_freed(env):
    a = join(env, nonce=1).session
    b = join(env, nonce=2).session
    store = env[1]
    assert store.get_by_dev_eui(POLE) == b
    if a.dev_addr != b.dev_addr:
        assert store.get_by_dev_addr(a.dev_addr) is None
    assert b.fcnt_up is None and b.fcnt_down == 0

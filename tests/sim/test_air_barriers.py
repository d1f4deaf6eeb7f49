"""Which uplinks hold the accelerated clock in barriers="expected" mode: every one the gateway
answers, or class-A downlinks such as DeviceTimeAns arrive TOO_LATE and a pole that lost its
wall clock in a power cut never gets it back."""

from hypothesis import given, strategies as st

from protocol.lorawan import frame
from protocol.lorawan.session import build_data_frame
from protocol.lorawan.join import build_join_request
from sim.air import expects_answer

K = bytes(range(16))


def data(mtype, fopts=b"", fport=10, payload=b"\x01\x02"):
    return build_data_frame(mtype, 0x26011234, 7, fport, payload, K, K, fopts=fopts)


def test_join_requests_and_confirmed_uplinks_expect_an_answer():
    assert expects_answer(build_join_request(b"\x01" * 8, b"\x02" * 8, 5, K))
    assert expects_answer(data(frame.CONFIRMED_UP))


def test_unconfirmed_uplinks_expect_one_only_when_they_ask_the_network():
    assert not expects_answer(data(frame.UNCONFIRMED_UP))
    assert expects_answer(data(frame.UNCONFIRMED_UP, [{"name": "DeviceTimeReq"}]))
    assert expects_answer(data(frame.UNCONFIRMED_UP, [{"name": "LinkCheckReq"}]))
    # answers to the network's own requests need no downlink
    assert not expects_answer(data(frame.UNCONFIRMED_UP, [{"name": "DutyCycleAns"}]))
    assert expects_answer(data(frame.UNCONFIRMED_UP,
                               [{"name": "DutyCycleAns"}, {"name": "DeviceTimeReq"}]))


def test_a_request_before_garbage_in_fopts_still_counts():
    assert expects_answer(data(frame.UNCONFIRMED_UP, bytes([0x0D, 0xFF])))
    assert not expects_answer(data(frame.UNCONFIRMED_UP, bytes([0xFF, 0x0D])))


@given(st.binary(max_size=64))
def test_any_bytes_give_a_bool(phy):
    assert expects_answer(phy) in (True, False)

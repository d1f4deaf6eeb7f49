"""Rebuilding the 32-bit FCnt from its 16 wire bits, and classifying the result."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.lorawan.fcnt import (
    GAP_TOO_LARGE,
    MAX_GAP,
    OK,
    OVERFLOW,
    REPLAY,
    check_fcnt,
    rebuild_fcnt,
)

counters = st.integers(0, 0xFFFFFFFF)
gaps = st.integers(1, 0xFFFF)


def test_fresh_session_takes_the_wire_value():
    assert rebuild_fcnt(0, None) == 0
    assert rebuild_fcnt(0xFFFF, None) == 0xFFFF
    assert check_fcnt(5, None) == OK


def test_examples():
    assert MAX_GAP == 16384
    assert rebuild_fcnt(3, 2) == 3
    assert rebuild_fcnt(0x0001, 0x1FFFF) == 0x20001  # the low 16 bits wrapped
    assert rebuild_fcnt(0x0000, 0x0FFFF) == 0x10000
    assert rebuild_fcnt(0x1234, 0x51234) == 0x51234  # the same frame again
    assert check_fcnt(0x51234, 0x51234) == REPLAY
    assert rebuild_fcnt(0x1230, 0x51234) == 0x51230  # slightly older: replay, not a 64k jump
    assert check_fcnt(0x51230, 0x51234) == REPLAY
    # A device rebooted and restarted at 0 after 70000 frames: reads as far behind.
    assert rebuild_fcnt(0, 70000) == 65536
    assert check_fcnt(65536, 70000) == REPLAY
    # 20000 frames lost: forward, too far
    assert rebuild_fcnt((100 + 20000) & 0xFFFF, 100) == 20100
    assert check_fcnt(20100, 100) == GAP_TOO_LARGE
    # Same far from the start: the nearer reading of a 20000 step is forward, not 45536 back
    assert rebuild_fcnt((1000000 + 20000) & 0xFFFF, 1000000) == 1020000
    # Near the start nothing is "behind", so a big distance reads forward
    assert rebuild_fcnt(0xF000, 5) == 0xF000
    assert check_fcnt(0xF000, 5) == GAP_TOO_LARGE
    # The 32-bit counter is worn out
    assert rebuild_fcnt(0, 0xFFFFFFFF) == 0x100000000
    assert check_fcnt(0x100000000, 0xFFFFFFFF) == OVERFLOW


@settings(max_examples=3000)
@given(counters, st.integers(1, MAX_GAP))
def test_any_true_counter_within_max_gap_is_rebuilt_exactly(last, step):
    true = last + step
    assume(true <= 0xFFFFFFFF)
    got = rebuild_fcnt(true & 0xFFFF, last)
    assert got == true
    assert check_fcnt(got, last) == OK


@settings(max_examples=2000)
@given(counters, gaps, st.data())
def test_exact_for_custom_max_gap(last, max_gap, data):
    step = data.draw(st.integers(1, max_gap))
    true = last + step
    assume(true <= 0xFFFFFFFF)
    assert rebuild_fcnt(true & 0xFFFF, last, max_gap) == true
    assert check_fcnt(true, last, max_gap) == OK


@settings(max_examples=2000)
@given(counters, st.integers(0, 0xFFFF - max(MAX_GAP, 0x7FFF) - 1))
def test_recent_old_frames_are_replays(last, back):
    true = last - back
    assume(true >= 0)
    got = rebuild_fcnt(true & 0xFFFF, last)
    assert got == true
    assert check_fcnt(got, last) == REPLAY


@settings(max_examples=1000)
@given(counters, st.integers(MAX_GAP + 1, 0x7FFF))
def test_big_forward_steps_read_forward_and_are_flagged(last, step):
    true = last + step
    assume(true <= 0xFFFFFFFF)
    got = rebuild_fcnt(true & 0xFFFF, last)
    assert got == true
    assert check_fcnt(got, last) == GAP_TOO_LARGE


@settings(max_examples=2000)
@given(counters, st.integers(0, 0xFFFF), gaps)
def test_result_matches_wire_bits_and_is_near_last(last, fcnt16, max_gap):
    got = rebuild_fcnt(fcnt16, last, max_gap)
    assert got & 0xFFFF == fcnt16
    assert got >= 0
    assert abs(got - last) < 0x10000
    status = check_fcnt(got, last, max_gap)
    assert status in (OK, REPLAY, GAP_TOO_LARGE, OVERFLOW)
    assert (status == OK) == (last < got <= last + max_gap and got <= 0xFFFFFFFF)


@pytest.mark.parametrize(
    "args, message",
    [
        ((-1, 0), "wire value"),
        ((0x10000, 0), "wire value"),
        ((0, -1), "last FCnt"),
        ((0, 1 << 32), "last FCnt"),
        ((0, 0, 0), "max_gap"),
        ((0, 0, 0x10000), "max_gap"),
        (("1", 0), "wire value"),
    ],
)
def test_argument_errors(args, message):
    with pytest.raises(ValueError, match=message):
        rebuild_fcnt(*args)

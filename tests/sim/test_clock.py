"""VirtualClock: pace, idle jumps, barriers (grace and release), tmst/UTC mapping."""

import asyncio

import pytest
from hypothesis import given, strategies as st

from sim.clock import VirtualClock, TMST_MOD


def test_paced_clock_runs_at_speed_times_real_time():
    c = VirtualClock(speed=1000.0, jump_idle=False)
    assert not c.step(10_000_000, real_s=100.0)  # anchors at real 100 s
    assert c.now_us == 0
    assert c.wait_s(10_000_000, 100.0) == pytest.approx(0.01)
    assert not c.step(10_000_000, 100.004)
    assert c.now_us == 4_000_000
    assert c.step(10_000_000, 100.02)
    assert c.now_us == 10_000_000  # never beyond the target


def test_idle_clock_jumps_to_the_target():
    c = VirtualClock(speed=1000.0)
    assert c.step(86_400_000_000, real_s=5.0)
    assert c.now_us == 86_400_000_000
    assert c.counters["jumps"] == 1


def test_barrier_holds_until_grace_then_expires():
    c = VirtualClock(speed=None, grace_s=0.35)
    c.hold(2_000_000, real_s=10.0)
    assert not c.step(5_000_000, 10.0)
    assert c.now_us == 2_000_000  # may reach the RX1 instant, not pass it
    assert c.wait_s(5_000_000, 10.1) == pytest.approx(0.25)
    assert not c.step(5_000_000, 10.3)
    assert c.now_us == 2_000_000
    assert c.step(5_000_000, 10.35)
    assert c.now_us == 5_000_000
    assert c.counters["expired"] == 1


def test_released_barrier_lets_time_pass_at_once():
    c = VirtualClock(speed=None, grace_s=60)
    c.hold(1_000_000, real_s=0.0)
    c.hold(7_000_000, real_s=0.0)
    assert not c.step(10_000_000, 0.0)
    assert c.release_at(1_000_000) == 1
    assert not c.step(10_000_000, 0.01)
    assert c.now_us == 7_000_000  # the second barrier still holds
    assert c.release_at(7_000_000) == 1
    assert c.step(10_000_000, 0.02)
    assert c.counters["released"] == 2


def test_pace_reanchors_after_a_barrier_no_catch_up_burst():
    c = VirtualClock(speed=1000.0, grace_s=1.0)
    c.hold(700_000_000, real_s=0.0)
    c.step(10**11, 0.0)
    c.step(10**11, 0.5)
    assert c.now_us == 500_000_000  # paced (1000x) while the barrier is ahead
    c.step(10**11, 0.9)
    assert c.now_us == 700_000_000  # held
    # the grace ends at 1.0 s: nothing real pending any more -> idle jump
    assert c.step(10**11, 1.0)


def test_pace_reanchors_when_held_and_released_while_other_barrier_pending():
    c = VirtualClock(speed=1000.0, grace_s=10.0)
    b1 = c.hold(1_000_000, real_s=0.0)
    c.hold(50_000_000, real_s=0.0)
    c.step(100_000_000, 0.0)
    c.step(100_000_000, 2.0)
    assert c.now_us == 1_000_000
    c.release(b1)
    c.step(100_000_000, 5.0)  # held for 3 s real: pace restarts from the release
    assert c.now_us == 1_000_000
    c.step(100_000_000, 5.01)
    assert c.now_us == 11_000_000


@given(st.integers(0, 1 << 40), st.integers(-(1 << 31) + 1, (1 << 31) - 1))
def test_unwrap_tmst_finds_the_nearest_instant(now, delta):
    c = VirtualClock()
    c.now_us = now
    t = now + delta
    if t < 0:
        return
    assert c.unwrap_tmst(t % TMST_MOD) == t
    assert c.tmst(t) == t % TMST_MOD


def test_utc_follows_the_epoch():
    c = VirtualClock(epoch_s=1767225600)
    assert c.utc_iso(0) == "2026-01-01T00:00:00.000000Z"
    assert c.utc_iso(86_400_000_123) == "2026-01-02T00:00:00.000123Z"


def test_advance_to_waits_for_release_and_poke_returns_early():
    async def main():
        c = VirtualClock(speed=None, grace_s=30.0)
        c.hold(1_000_000)
        task = asyncio.create_task(c.advance_to(3_000_000))
        await asyncio.sleep(0.02)
        assert not task.done() and c.now_us == 1_000_000
        c.release_at(1_000_000)  # pokes: advance_to returns at once, maybe early
        reached = await asyncio.wait_for(task, 5)
        assert reached <= 3_000_000
        assert await asyncio.wait_for(c.advance_to(3_000_000), 5) == 3_000_000

    asyncio.run(main())


def test_advance_to_passes_an_expired_barrier():
    async def main():
        c = VirtualClock(speed=None, grace_s=0.05)
        c.hold(1_000_000)
        assert await asyncio.wait_for(c.advance_to(2_000_000), 5) == 2_000_000
        assert c.counters["expired"] == 1

    asyncio.run(main())


def test_paced_advance_to_reaches_the_target_without_jumping():
    async def main():
        c = VirtualClock(speed=100_000.0, jump_idle=False)
        assert await asyncio.wait_for(c.advance_to(2_000_000), 5) == 2_000_000
        assert await asyncio.wait_for(c.advance_to(2_500_000), 5) == 2_500_000
        return c

    c = asyncio.run(main())
    assert c.counters["jumps"] == 0 and c.now_us == 2_500_000

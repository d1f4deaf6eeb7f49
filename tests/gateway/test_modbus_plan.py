"""gateway.modbus.plan: reads that cover a meter's points, merged only where it is cheaper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.modbus.plan import MeterPlan, PlanError, Read, max_gap_for, wire_cost_us
from protocol.modbus import registers as regmap
from protocol.modbus.master import transaction_time_us

NAMES = [r.name for r in regmap.INPUT_REGISTERS]


def _values(names):
    return {n: (-12.25 if regmap.entry(n).type == "f32" else (1 << (16 * regmap.entry(n).count)) - 3)
            for n in names}


@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=40), st.integers(2, 125),
       st.integers(0, 200))
def test_plan_covers_every_point_within_limits_and_never_splits_a_value(names, max_regs, gap):
    try:
        plan = MeterPlan(names, max_regs, gap)
    except PlanError:
        assert any(regmap.entry(n).count > max_regs for n in names)
        return
    for r in plan.reads:
        assert 1 <= r.count <= max_regs
        assert regmap.check_read(r.function, r.address, r.count) == 0  # the meter serves it
    values = _values(names)
    answers = [regmap.encode_block(r.function, r.address, r.count, values) for r in plan.reads]
    assert plan.decode(answers) == {n: values[n] for n in dict.fromkeys(names)}
    # no two reads could be one: each pair of neighbours is apart by more than the gap or
    # together would exceed max_regs / cross a block
    for a, b in zip(plan.reads, plan.reads[1:]):
        if a.function == b.function:
            merged = b.address + b.count - a.address
            assert (b.address - a.address - a.count > gap or merged > max_regs
                    or regmap.check_read(a.function, a.address, merged) != 0)


def test_a_failed_read_leaves_only_its_points_missing():
    plan = MeterPlan(["voltage_l1", "energy_import_wh", "serial"])
    assert [r.address for r in plan.reads] == [0x0000, 0x1000, 0x2002]
    values = _values(plan.names)
    answers = [regmap.encode_block(r.function, r.address, r.count, values) for r in plan.reads]
    answers[1] = None
    assert plan.decode(answers) == {"voltage_l1": -12.25, "serial": (1 << 32) - 3}
    with pytest.raises(PlanError):
        plan.decode([answers[0][:1], None, None])


@given(st.sampled_from([1200, 2400, 4800, 9600, 19200, 38400, 115200]),
       st.integers(0, 50), st.integers(0, 60))
def test_merging_over_a_gap_pays_exactly_when_the_gap_is_within_max_gap_for(baud, turn_ms, gap):
    turn_us = turn_ms * 1000
    # two 2-register reads `gap` registers apart: one read of 4 + gap, or two reads of 2
    merged = transaction_time_us(baud, 4 + gap, turn_us)
    split = 2 * transaction_time_us(baud, 2, turn_us)
    limit = max_gap_for(baud, turn_ms / 1000)
    if gap <= limit:
        assert merged <= split + 2  # (the timers are rounded up to whole microseconds)
    else:
        assert merged > split - 2


def test_gap_for_tcp_merges_up_to_the_read_limit_and_real_eastron_limit_is_kept():
    assert max_gap_for(None) == 125
    plan = MeterPlan(NAMES, max_regs=80, max_gap=max_gap_for(None))
    assert all(r.count <= 80 for r in plan.reads)
    assert wire_cost_us(plan.reads, 9600) < wire_cost_us(MeterPlan(NAMES, 80, 0).reads, 9600)
    assert Read(4, 0, 2) in MeterPlan(["voltage_l1"]).reads


@pytest.mark.parametrize("args", [([],), (["nope"],), (["voltage_l1"], 1), (["voltage_l1"], 126),
                                  (["voltage_l1"], 125, -1), (["energy_import_wh"], 2)])
def test_plan_errors(args):
    with pytest.raises(PlanError):
        MeterPlan(*args)

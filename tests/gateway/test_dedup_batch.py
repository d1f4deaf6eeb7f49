"""Deduplicator release cadence: next_deadline() lets groups leave together (one commit each time)."""

import pytest

from gateway.lorawan.dedup import Deduplicator, RadioMeta


def meta(fw):
    return RadioMeta(fw, -100.0, 5.0, 868100000, "SF7BW125", 1000)


def frame(i):
    return bytes([0x40, i, 0, 0, 0, 0, 1, 0, 1]) + b"\xaa\xbb\xcc\xdd"


def test_deadline_waits_for_the_cadence_after_a_release():
    d = Deduplicator(window_s=0.25, release_every_s=0.375)  # binary-exact times
    d.add(frame(1), meta("A"), 0.0)
    assert d.next_deadline() == 0.25  # no release yet: the window alone decides
    assert len(d.due(0.25)) == 1
    for i, t in enumerate((0.25, 0.28125, 0.3125, 0.5)):
        d.add(frame(2 + i), meta("A"), t)
    # the oldest is due at 0.5 by its window, but the last release was at 0.25
    assert d.next_deadline() == 0.625
    out = d.due(0.625)  # everything whose window closed by then leaves together
    assert [u.phy[1] for u in out] == [2, 3, 4]
    assert d.next_deadline() == 1.0  # the 4th is due at 0.75, the cadence allows 1.0
    assert [u.phy[1] for u in d.due(1.0)] == [5]
    assert d.next_deadline() is None


def test_cadence_off_and_due_ignores_it():
    d = Deduplicator(window_s=0.25, release_every_s=0)
    d.add(frame(1), meta("A"), 0.0)
    d.due(0.25)
    d.add(frame(2), meta("A"), 0.25)
    assert d.next_deadline() == 0.5
    d2 = Deduplicator(window_s=0.25, release_every_s=10.0)
    d2.add(frame(1), meta("A"), 0.0)
    d2.due(0.25)
    d2.add(frame(2), meta("A"), 0.25)
    assert d2.next_deadline() == 10.25
    assert len(d2.due(0.5)) == 1  # a caller that asks anyway still gets what is due
    with pytest.raises(ValueError):
        Deduplicator(release_every_s=-1)

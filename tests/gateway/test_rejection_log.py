"""Every rejected frame gets a log line with its reason, within a per-reason rate."""

import logging

from gateway.lorawan.rejection_log import RejectionLog


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_each_rejection_is_logged_with_its_reason_until_the_rate_then_summed_up(caplog):
    clock = Clock()
    rl = RejectionLog(logging.getLogger("t"), per_reason_per_s=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(5):
            rl.rejected("uplink", "replay", "DevAddr 26000001 FCnt %d" % i)
        rl.rejected("uplink", "bad-mic", "DevAddr 26000002 FCnt 9")  # its own budget
        clock.t += 1.0
        rl.rejected("uplink", "replay", "DevAddr 26000001 FCnt 7")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "uplink rejected (replay): DevAddr 26000001 FCnt 0",
        "uplink rejected (replay): DevAddr 26000001 FCnt 1",
        "uplink rejected (replay): DevAddr 26000001 FCnt 2",
        "uplink rejected (bad-mic): DevAddr 26000002 FCnt 9",
        "2 more uplink rejections (replay) in that second, not logged one by one",
        "uplink rejected (replay): DevAddr 26000001 FCnt 7",
    ]

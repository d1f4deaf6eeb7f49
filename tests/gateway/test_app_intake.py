"""Intake: accepted items go to the durable queue; when it refuses them they wait in order in a
bounded backlog; only a full backlog drops (counted, logged).  Real SQLite queue, tiny bound."""

import logging

from gateway.backhaul.intake import Intake
from gateway.backhaul.store import RECORD_OVERHEAD, RecordQueue


def item(i, size=100):
    return bytes([i % 256]) * size


def test_full_queue_holds_in_order_then_flushes(tmp_path, caplog):
    q = RecordQueue(tmp_path / "q.db", max_bytes=3 * (100 + RECORD_OVERHEAD))
    woke = []
    intake = Intake(q, backlog_max=3, on_queued=lambda: woke.append(1))
    try:
        for i in range(3):
            assert intake.put(item(i))
        assert len(q) == 3 and len(intake) == 0 and len(woke) == 3
        with caplog.at_level(logging.WARNING):
            for i in range(3, 6):
                assert intake.put(item(i))  # held, not lost
        assert len(intake) == 3 and intake.counters["held"] == 3 and intake.counters["queue_full"] >= 3
        assert "holding them in memory" in caplog.text
        with caplog.at_level(logging.ERROR):
            assert not intake.put(item(6))  # backlog full too: dropped, loudly
        assert intake.counters["dropped"] == 1 and "ACCEPTED DATA LOST" in caplog.text
        assert intake.retry() == 0  # still full
        # the publisher acks two: two held items move, in order, and new ones queue behind
        q.ack([rid for rid, _ in q.peek(2)])
        assert intake.retry() == 2 and len(intake) == 1
        q.ack([rid for rid, _ in q.peek(3)])
        assert intake.put(item(7)) and len(intake) == 0
        assert [p[0] for _, p in q.peek(10)] == [5, 7]
        assert intake.counters == {"queued": 7, "held": 3, "flushed": 3, "dropped": 1,
                                   "too_large": 0, "queue_full": intake.counters["queue_full"],
                                   "queue_error": 0}
    finally:
        q.close()


def test_item_that_can_never_fit_is_dropped_loudly_not_held(tmp_path, caplog):
    q = RecordQueue(tmp_path / "q.db", max_bytes=4096)
    intake = Intake(q, backlog_max=10)
    try:
        with caplog.at_level(logging.ERROR):
            assert not intake.put(b"x" * 5000)
        assert intake.counters["too_large"] == 1 and len(intake) == 0 and len(q) == 0
        assert "can never fit" in caplog.text
        assert intake.put(b"small") and len(q) == 1
    finally:
        q.close()


def test_closed_queue_is_an_error_that_holds(tmp_path):
    q = RecordQueue(tmp_path / "q.db")
    intake = Intake(q, backlog_max=10)
    q.close()
    assert intake.put(b"a") and intake.put(b"b")
    assert intake.counters["queue_error"] >= 1 and len(intake) == 2
    intake.queue = RecordQueue(tmp_path / "q.db")
    try:
        assert intake.retry() == 2
        assert [p for _, p in intake.queue.peek(5)] == [b"a", b"b"]
    finally:
        intake.queue.close()


def test_put_many_is_one_transaction_or_falls_back_to_one_by_one(tmp_path):
    q = RecordQueue(tmp_path / "q.db", max_bytes=3 * (100 + RECORD_OVERHEAD))
    intake = Intake(q, backlog_max=1)
    try:
        assert intake.put_many([item(0), item(1)]) == 2 and len(q) == 2
        # two more: the batch does not fit, one by one the first fits, the second is held
        assert intake.put_many([item(2), item(3), item(4)]) == 2
        assert len(q) == 3 and len(intake) == 1 and intake.counters["dropped"] == 1
        q.ack([rid for rid, _ in q.peek(3)])
        assert intake.put_many([item(5), item(6)]) == 2
        assert [p[0] for _, p in q.peek(10)] == [3, 5, 6]  # the held one first
    finally:
        q.close()

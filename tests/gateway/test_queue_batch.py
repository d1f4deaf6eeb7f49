"""RecordQueue.next_sequence reserves values in blocks: one commit per SEQUENCE_BLOCK values."""

from gateway.backhaul.store import SEQUENCE_BLOCK, RecordQueue


def commits(q):
    seen = []
    q._conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_one_commit_per_block_and_exact_after_clean_close(tmp_path):
    path = tmp_path / "q.db"
    with RecordQueue(path) as q:
        seen = commits(q)
        n = 2 * SEQUENCE_BLOCK + 3
        assert [q.next_sequence("mqtt") for _ in range(n)] == list(range(1, n + 1))
        assert len(seen) == 3
        assert [q.next_sequence("other") for _ in range(2)] == [1, 2]
    with RecordQueue(path) as q:  # unused reserved values were given back at close
        assert q.next_sequence("mqtt") == n + 1 and q.next_sequence("other") == 3


def test_reserved_values_are_durable_so_a_crash_only_skips(tmp_path):
    path = tmp_path / "q.db"
    q = RecordQueue(path)
    assert [q.next_sequence("mqtt") for _ in range(5)] == [1, 2, 3, 4, 5]
    q._seq_blocks.clear()  # as if the process died: the reservation was never given back
    q.close()
    with RecordQueue(path) as q:
        assert q.next_sequence("mqtt") == SEQUENCE_BLOCK + 1  # never 1..64 again


def test_peek_after_id_reads_only_what_follows(tmp_path):
    with RecordQueue(tmp_path / "q.db") as q:
        ids = q.put([b"\xa0"] * 5 + [b"\xa1\x00\x00"] * 3)
        assert q.peek(3, after_id=ids[1]) == [(i, b"\xa0") for i in ids[2:5]]
        assert [i for i, _ in q.peek(10, max_bytes=4, after_id=ids[4])] == ids[5:6]  # bytes bound too
        assert q.peek(10, after_id=ids[-1]) == []
        assert q.peek(2, after_id=None) == q.peek(2) == [(i, b"\xa0") for i in ids[:2]]
        q.ack(ids[:3])
        assert q.peek(1, after_id=ids[0]) == [(ids[3], b"\xa0")]  # acked ones are gone either way

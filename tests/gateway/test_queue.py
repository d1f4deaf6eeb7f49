"""Tests for gateway.backhaul.store.RecordQueue: real SQLite files, real SIGKILLed child processes."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.backhaul.store import (
    RECORD_OVERHEAD,
    QueueCorrupt,
    QueueError,
    QueueFull,
    Record,
    RecordQueue,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def qpath(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def all_records(q: RecordQueue) -> list[tuple[int, bytes]]:
    return q.peek(max_records=10**9)


# -- basics -----------------------------------------------------------------------------------


def test_pragmas_wal_and_synchronous_full(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        assert q._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert q._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError):
        RecordQueue(qpath, synchronous="OFF")


def test_fifo_order_and_metadata(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        ids1 = q.put([b"a", b"b"])
        rec = Record(b"c", kind="modbus", created=123.5)
        ids2 = q.put([rec, bytearray(b"d"), memoryview(b"e")])
        assert ids1 + ids2 == sorted(ids1 + ids2)
        assert all_records(q) == list(zip(ids1 + ids2, [b"a", b"b", b"c", b"d", b"e"]))
        sql = "SELECT kind, created FROM records WHERE id = ?"
        row = q._conn.execute(sql, (ids2[0],)).fetchone()
        assert row == ("modbus", 123.5)
        assert q.put([]) == []
        with pytest.raises(TypeError):
            q.put(["text"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            q.put([Record(b"x", kind="k" * 100)])


def test_peek_bounds(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        ids = q.put([bytes([i]) * 10 for i in range(10)])
        assert [i for i, _ in q.peek(3)] == ids[:3]
        assert q.peek(0) == []
        assert [i for i, _ in q.peek(100, max_bytes=35)] == ids[:3]
        assert [i for i, _ in q.peek(100, max_bytes=30)] == ids[:3]
        assert [i for i, _ in q.peek(2, max_bytes=1000)] == ids[:2]
        # An oversized first record is still returned (alone) so it cannot stall the queue.
        assert [i for i, _ in q.peek(100, max_bytes=5)] == ids[:1]
        assert len(q.peek(100)) == 10  # peek does not remove anything


def test_ack_exact_and_idempotent(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        ids = q.put([b"%d" % i for i in range(6)])
        assert q.ack([ids[1], ids[3], ids[3]]) == 2
        assert q.ack([ids[1], ids[3]]) == 0
        assert q.ack([]) == 0
        assert q.ack([10**9, -1]) == 0
        assert [i for i, _ in all_records(q)] == [ids[0], ids[2], ids[4], ids[5]]
        many = q.put([b"x"] * 1200)  # more ids than one DELETE chunk
        assert q.ack(many) == 1200
        assert q.stats().records == 4


def test_ids_monotonic_across_reopen_even_when_emptied(qpath: Path) -> None:
    q = RecordQueue(qpath)
    first = q.put([b"a", b"b"])
    q.ack(first)
    q.close()
    q = RecordQueue(qpath)
    second = q.put([b"c"])
    assert second[0] > max(first)
    q.close()
    with RecordQueue(qpath) as q:
        assert all_records(q) == [(second[0], b"c")]
        assert q.put([b"d"])[0] > second[0]


def test_stats(qpath: Path) -> None:
    with RecordQueue(qpath, max_bytes=10_000) as q:
        ids = q.put([b"12345", b"123"])
        s = q.stats()
        assert (s.records, s.payload_bytes, s.max_bytes) == (2, 8, 10_000)
        assert s.used_bytes == 8 + 2 * RECORD_OVERHEAD
        assert (s.oldest_id, s.newest_id) == (ids[0], ids[1])
        assert s.file_bytes > 0
        q.ack(ids)
        s = q.stats()
        assert (s.records, s.payload_bytes, s.used_bytes, s.oldest_id) == (0, 0, 0, None)


def test_next_sequence_persistent(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        assert [q.next_sequence("mqtt") for _ in range(3)] == [1, 2, 3]
        assert q.next_sequence("other") == 1
    with RecordQueue(qpath) as q:
        assert q.next_sequence("mqtt") == 4


def test_closed_queue_raises(qpath: Path) -> None:
    q = RecordQueue(qpath)
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(QueueError, match="closed"):
        q.put([b"x"])
    with pytest.raises(QueueError):
        q.peek(1)


def test_usable_from_asyncio_executor(qpath: Path) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with RecordQueue(qpath) as q:
            batches = await asyncio.gather(
                *(loop.run_in_executor(None, q.put, [b"%d" % i]) for i in range(20))
            )
            return sorted(i for b in batches for i in b)

    ids = asyncio.run(main())
    assert len(set(ids)) == 20


# -- bad files --------------------------------------------------------------------------------


def test_non_sqlite_file_gives_clear_error(qpath: Path) -> None:
    qpath.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(QueueCorrupt) as exc:
        RecordQueue(qpath)
    assert str(qpath) in str(exc.value)
    assert qpath.read_bytes().startswith(b"this is not a database")  # left untouched


def test_truncated_header_gives_clear_error(qpath: Path) -> None:
    with RecordQueue(qpath) as q:
        q.put([b"x" * 100] * 50)
    data = qpath.read_bytes()
    qpath.write_bytes(b"\0" * 100 + data[100:])  # header wiped
    with pytest.raises(QueueError) as exc:
        RecordQueue(qpath)
    assert str(qpath) in str(exc.value)


def test_foreign_sqlite_database_rejected(qpath: Path) -> None:
    conn = sqlite3.connect(qpath)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(QueueCorrupt, match="not a streetgrid queue") as exc:
        RecordQueue(qpath)
    assert str(qpath) in str(exc.value)


def test_directory_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match=str(tmp_path)):
        RecordQueue(tmp_path)


# -- full storage -----------------------------------------------------------------------------


def test_queue_full_at_max_bytes_no_eviction_and_recovery(qpath: Path) -> None:
    per = 60 + RECORD_OVERHEAD
    with RecordQueue(qpath, max_bytes=10 * per) as q:
        ids = q.put([bytes([i]) * 60 for i in range(8)])
        with pytest.raises(QueueFull) as exc:
            q.put([b"n" * 60] * 3)  # would need 11 slots: rejected as a whole
        assert exc.value.reason == "max_bytes"
        assert len(all_records(q)) == 8  # nothing partially stored
        ids += q.put([b"y" * 60] * 2)  # exactly fills
        with pytest.raises(QueueFull):
            q.put([b""])
        # nothing evicted
        assert [i for i, _ in all_records(q)] == ids
        assert all_records(q)[0] == (ids[0], b"\0" * 60)
        with pytest.raises(ValueError, match="never fit"):
            q.put([b"z" * 60] * 11)
        q.ack(ids[:3])
        new = q.put([b"z" * 60] * 3)
        assert new[0] > ids[-1]
        assert q.stats().used_bytes == 10 * per
    with RecordQueue(qpath, max_bytes=10 * per) as q:  # state (and limit) survive reopen
        with pytest.raises(QueueFull):
            q.put([b"w"])


def test_disk_full_via_max_page_count_then_recovery(qpath: Path) -> None:
    with RecordQueue(qpath, max_bytes=1 << 30) as q:
        conn = q._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 8}")
        accepted: list[tuple[int, bytes]] = []
        with pytest.raises(QueueFull) as exc:
            for i in range(10_000):
                batch = [b"%06d" % i + b"." * 300 for _ in range(3)]
                accepted += zip(q.put(batch), batch)
        assert exc.value.reason == "disk"
        assert "database or disk is full" in str(exc.value)
        assert str(qpath) in str(exc.value)
        assert len(accepted) > 10
        assert all_records(q) == accepted  # failed batch rolled back entirely, nothing lost
        with pytest.raises(QueueFull):  # still full: keeps failing cleanly, no corruption
            q.put([b"." * 300] * 3)
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        # Space frees (broker acked): puts work again, reusing freed pages.
        half = [i for i, _ in accepted[: len(accepted) // 2]]
        assert q.ack(half) == len(half)
        more = q.put([b"again" + b"." * 300] * 3)
        assert more[0] > accepted[-1][0]
        # Or the disk grows: lift the cap and keep going.
        conn.execute("PRAGMA max_page_count = 1073741823")
        for _ in range(20):
            q.put([b"." * 300] * 3)
        assert q.next_sequence("mqtt") == 1
    with RecordQueue(qpath) as q:
        assert q.stats().records == len(accepted) - len(half) + 3 + 60


# -- crash safety (real processes, SIGKILL) ---------------------------------------------------

_PUT_CHILD = """
import sys
sys.path.insert(0, {root!r})
from gateway.backhaul.store import RecordQueue
q = RecordQueue(sys.argv[1], max_bytes=1 << 30)
print("ready", flush=True)
i = int(sys.argv[2])
while True:
    n = i % 7 + 1
    ids = q.put([b"rec-%d-" % (i + k) + b"x" * 50 for k in range(n)])
    print(" ".join("%d:%d" % (rid, i + k) for k, rid in enumerate(ids)), flush=True)
    i += n
"""

_SEQ_CHILD = """
import sys
sys.path.insert(0, {root!r})
from gateway.backhaul.store import RecordQueue
q = RecordQueue(sys.argv[1])
print("ready", flush=True)
while True:
    print(q.next_sequence("mqtt"), flush=True)
"""


def _run_and_kill(script: str, args: list[str], out: Path, delay: float) -> list[str]:
    """Start a child writing to ``out``, SIGKILL it ``delay`` s after it is ready; return lines."""
    with open(out, "wb") as fh:
        child = subprocess.Popen(
            [sys.executable, "-c", script.format(root=str(REPO_ROOT)), *args],
            stdout=fh,
            stderr=subprocess.PIPE,
        )
    try:
        deadline = time.monotonic() + 10
        while b"ready\n" not in out.read_bytes():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "child did not start"
            time.sleep(0.01)
        time.sleep(delay)
        assert child.poll() is None, child.stderr.read().decode()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    text = out.read_text()
    complete = text[: text.rfind("\n") + 1]  # a half-written last line was never acknowledged
    lines = complete.splitlines()
    assert lines[0] == "ready"
    return lines[1:]


def test_put_survives_sigkill_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    qpath = tmp_path / "queue.db"
    rng = random.Random()
    promised: dict[int, bytes] = {}
    next_i = 0
    for round_no in range(3):
        lines = _run_and_kill(
            _PUT_CHILD,
            [str(qpath), str(next_i)],
            tmp_path / f"out{round_no}",
            rng.uniform(0.1, 0.4),
        )
        assert lines, "child acknowledged nothing before being killed"
        for line in lines:
            for pair in line.split():
                rid, i = map(int, pair.split(":"))
                assert rid not in promised
                promised[rid] = b"rec-%d-" % i + b"x" * 50
                next_i = i + 1
        next_i += 100  # the child may have committed records it never printed
        with RecordQueue(qpath, max_bytes=1 << 30) as q:  # quick_check runs on open
            stored = dict(all_records(q))
            assert q._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            missing = [rid for rid in promised if stored.get(rid) != promised[rid]]
            assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
            ids = sorted(stored)
            assert list(stored) == ids  # FIFO order == id order
            assert q.stats().records == len(stored)
            # Ack a random part of what we know is stored; acked data must stay gone.
            acked = rng.sample(sorted(promised), len(promised) // 2)
            q.ack(acked)
            for rid in acked:
                del promised[rid]
    with RecordQueue(qpath, max_bytes=1 << 30) as q:
        stored = dict(all_records(q))
        assert all(stored.get(rid) == payload for rid, payload in promised.items())


def test_next_sequence_survives_sigkill_and_never_repeats(tmp_path: Path) -> None:
    qpath = tmp_path / "queue.db"
    rng = random.Random()
    seen: list[int] = []
    for round_no in range(3):
        out = tmp_path / f"seq{round_no}"
        lines = _run_and_kill(_SEQ_CHILD, [str(qpath)], out, rng.uniform(0.05, 0.3))
        values = [int(v) for v in lines]
        assert values, "child produced no sequence numbers"
        assert values == sorted(set(values))
        if seen:
            assert values[0] > seen[-1]
        seen += values
    with RecordQueue(qpath) as q:
        assert q.next_sequence("mqtt") > seen[-1]


# -- model-based stateful test ----------------------------------------------------------------

MAX_BYTES = 1000


def _cost(payloads) -> int:
    return sum(len(p) + RECORD_OVERHEAD for p in payloads)


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sgq-")
        self.path = os.path.join(self.dir, "q.db")
        self.q = RecordQueue(self.path, max_bytes=MAX_BYTES)
        self.model: dict[int, bytes] = {}  # insertion order == FIFO order
        self.max_id = 0
        self.seq = 0

    @rule(payloads=st.lists(st.binary(max_size=150), max_size=8))
    def put(self, payloads: list[bytes]) -> None:
        need = _cost(payloads)
        if not payloads:
            assert self.q.put(payloads) == []
        elif need > MAX_BYTES:
            with pytest.raises(ValueError):
                self.q.put(payloads)
        elif _cost(self.model.values()) + need > MAX_BYTES:
            with pytest.raises(QueueFull):
                self.q.put(payloads)
        else:
            ids = self.q.put(payloads)
            assert len(ids) == len(payloads)
            assert ids == sorted(set(ids)) and ids[0] > self.max_id
            self.model.update(zip(ids, payloads))
            self.max_id = ids[-1]

    @rule(max_records=st.integers(0, 12), max_bytes=st.none() | st.integers(0, 400))
    def peek(self, max_records: int, max_bytes: int | None) -> None:
        expected: list[tuple[int, bytes]] = []
        total = 0
        for rid, payload in list(self.model.items())[:max_records]:
            if expected and max_bytes is not None and total + len(payload) > max_bytes:
                break
            expected.append((rid, payload))
            total += len(payload)
        assert self.q.peek(max_records, max_bytes) == expected

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        choice = st.integers(-2, self.max_id + 3)
        if self.model:
            choice = st.sampled_from(sorted(self.model)) | choice
        ids = data.draw(st.lists(choice, max_size=10))
        expected = len(set(ids) & self.model.keys())
        assert self.q.ack(ids) == expected
        for rid in ids:
            self.model.pop(rid, None)

    @rule()
    def reopen(self) -> None:
        self.q.close()
        self.q = RecordQueue(self.path, max_bytes=MAX_BYTES)

    @rule()
    def next_sequence(self) -> None:
        self.seq += 1
        assert self.q.next_sequence("mqtt") == self.seq

    @invariant()
    def stats_match_model(self) -> None:
        s = self.q.stats()
        assert s.records == len(self.model)
        assert s.payload_bytes == sum(map(len, self.model.values()))
        assert s.used_bytes == _cost(self.model.values()) <= MAX_BYTES

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)


QueueMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase

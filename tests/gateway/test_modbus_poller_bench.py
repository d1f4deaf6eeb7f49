"""bench/modbus_bus.py runs end to end (real poller process, real pymodbus, a pty bus and the
emulated meters) and reports sane rows. A smoke test: tiny duration, no assertion about speed."""

import json
import os
import subprocess
import sys

from protocol.modbus import master

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_modbus_bus_bench_measures_every_case_it_is_given():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "modbus_bus.py"), "--seconds", "0.4",
         "--warmup", "0.1", "--baud", "19200", "--regs", "2,40", "--meters", "2",
         "--json-only"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(r["baud"], r["regs"], r["meters"]) for r in rows] == [(19200, 2, 2), (19200, 40, 2)]
    for r in rows:
        # the limit is the reference formula for the line the meters were switched to (8N2)
        assert r["bits"] == 11
        assert r["limit_tx_s"] == 1e6 / master.transaction_time_us(19200, r["regs"], 5000, 11)
        assert r["tx"] >= 2 and r["tx_s"] > 0 and r["ratio"] == r["tx_s"] / r["limit_tx_s"]
        assert set(r["polls_by_meter"]) == {"1", "2"}  # both meters on the bus answered
        assert r["bad_polls"] == 0  # every poll decoded the points the bench asked for
        assert r["reply_ms"] > 0 and r["min_gap_ms"] >= r["t35_ms"] - 1e-6  # never before t3.5
        assert r["poller_cpu_ms_tx"] > 0

"""Modbus bus benchmark: the gateway's BusPoller against the wire's physical limit (issue #4).

Usage: python bench/modbus_bus.py [--seconds 5] [--warmup 1] [--baud 9600,19200] [--regs 2,40]
           [--meters 1,4] [--turnaround-ms 5] [--line 8N2] [--json] [--meter-cmd CMD]
       GATEWAY_ROOT=DIR python bench/modbus_bus.py ...   (the poller from another tree, e.g. an
           older commit exported with `git archive`, to compare before and after)

What runs (all real):
  * a bus: sim.rs485.PtyLink, pseudo-terminals joined like one RS-485 line (its relay thread
    lives in this process, which does nothing else while a case runs);
  * on its other end, one `python -m sim meter --address 1,..,M` process: M meters, each the
    meter firmware's Modbus slave behind the paced line model (bytes at the baud rate, frames
    ended by t3.5 of silence, the meter's turnaround), all on one line model (sim.rs485.Bus);
  * the poller under test in its own process (this file's --serve-poller): gateway.modbus.poller
    .BusPoller on real pymodbus and pyserial, polling back to back (poll_interval_s 0), each
    meter's plan exactly one read of N input registers (2: voltage_l1; 40: the 20 floats from
    0x0000), items to a sink that drops them (the bus is measured, not the durable queue).

The meters boot as provisioned (8N1); for `--line 8N2` (the default: 11-bit characters, what the
reference table assumes) the bench first switches them with a Modbus write of the parity
register, through a BusPoller, as an installer would.

Measured per case (baud x registers x meters): transactions/s = polls completed (each one valid
reply) in a window of `--seconds` that starts `--warmup` s after every meter answered, as
(n - 1) / (last - first) of their instants; the limit = 1 /
((13 + 2N) * tc + 2 * t3.5 + Tturn) with tc = bits / baud (protocol.modbus.master
.transaction_time_us; at 11 bits and 5 ms this is the 5 ms column of the table in
../shared/reference/modbus.md); ratio = measured / limit; goal (issue #4): >= 90 %.
Where the time goes, from the instants pymodbus wrote and read the port (the poller's _trace):
reply = request written -> last byte of its reply read, against its wire ideal (13 + 2N) * tc +
t3.5 + Tturn (the excess is the meters' process and the pty relay), and gap = that byte -> the
next request (the poller's share: the wire needs t3.5, never less; min gap shows it).
Also printed: the poller's CPU per transaction (its process, pymodbus and the store thread
included), the meters' and the pty relay's CPU, and the poller's error counters (any timeout or
CRC error in a clean run is a finding). It prints numbers; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if os.environ.get("GATEWAY_ROOT"):  # the poller under test may come from another tree
    sys.path.insert(0, os.environ["GATEWAY_ROOT"])

from protocol.modbus import registers as regmap  # noqa: E402
from protocol.modbus import rtu  # noqa: E402
from protocol.modbus import master  # noqa: E402

GOAL = 0.90
LINES = {f"8{p}{stop}": (p, stop) for _code, p, stop in regmap.PARITY_CODES}  # "8N2": ("N", 2)
PARITY_CODE = {(p, stop): code for code, p, stop in regmap.PARITY_CODES}  # the register's coding


def points_for(n_regs: int) -> tuple:
    """Register names whose plan is one read of exactly n_regs registers from 0x0000."""
    names = []
    for reg in regmap.INPUT_REGISTERS:
        if reg.address >= n_regs:
            break
        names.append(reg.name)
    if sum(regmap.entry(n).count for n in names) != n_regs:
        raise SystemExit(f"no contiguous float block of {n_regs} registers from 0x0000")
    return tuple(names)


def limit_tx_s(baud: int, n_regs: int, turnaround_ms: float, bits: int) -> float:
    return 1e6 / master.transaction_time_us(baud, n_regs, int(turnaround_ms * 1000), bits)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phases(trace) -> dict:
    """From the port's timestamps: mean time from a request to the last byte of its reply, and
    from that byte to the next request (the gap the poller left; the wire needs t3.5)."""
    reply, gap = [], []
    last_send = last_rx = None
    for t, sending in trace:
        if sending:
            if last_send is not None and last_rx is not None and last_rx > last_send:
                reply.append(last_rx - last_send)
                gap.append(t - last_rx)
            last_send = t
        else:
            last_rx = t
    if not gap:
        return {"reply_ms": 0.0, "gap_ms": 0.0, "min_gap_ms": 0.0}
    return {"reply_ms": 1e3 * sum(reply) / len(reply), "gap_ms": 1e3 * sum(gap) / len(gap),
            "min_gap_ms": 1e3 * min(gap)}


# ---- the poller process ------------------------------------------------------------------------

def serve_poller(spec: dict) -> dict:
    """Run one case in this process; returns its numbers (printed as JSON by --serve-poller)."""
    from gateway.modbus.poller import BusConfig, BusPoller, MeterConfig

    parity, stop = spec["parity"], spec["stopbits"]
    common = dict(port=spec["port"], baudrate=spec["baud"], parity=parity, stopbits=stop,
                  timeout_s=spec["timeout_s"], retries=1, poll_interval_s=0.0,
                  backoff_min_s=0.2, backoff_max_s=1.0, turnaround_s=spec["turnaround_ms"] / 1e3)

    async def setup_line() -> None:
        # switch the meters from what they booted with (8N1) to the bench's line
        p = BusPoller(BusConfig("bench-setup", (), **dict(common, parity="N", stopbits=1)),
                      lambda items: None)
        task = asyncio.create_task(p.run())
        try:
            for a in spec["addresses"]:
                await asyncio.wait_for(p.write(a, regmap.entry("parity").address,
                                               [PARITY_CODE[(parity, stop)]]), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def main() -> dict:
        if spec.get("setup_only"):
            await setup_line()
            return {}
        points = points_for(spec["regs"])
        meters = tuple(MeterConfig(a, points) for a in spec["addresses"])
        p = BusPoller(BusConfig("bench", meters, **common), lambda items: None)
        for m in p.meters:
            reads = [(r.function, r.address, r.count) for r in m.plan.reads]
            if reads != [(4, 0, spec["regs"])]:
                raise SystemExit(f"meter {m.cfg.address}: plan {reads}, not one read of "
                                 f"{spec['regs']} registers")
        polls = {"at": [], "bad": 0, "by_meter": {}}
        loop = asyncio.get_running_loop()
        trace = []  # (loop time, sending): what pymodbus wrote / read on the port, as it did

        def on_poll(address, values):
            polls["at"].append(loop.time())
            polls["by_meter"][address] = polls["by_meter"].get(address, 0) + 1
            if set(values) != set(points):
                polls["bad"] += 1

        def traced(sending, data, inner=p._trace):
            trace.append((loop.time(), sending))
            return inner(sending, data)

        p.on_poll = on_poll
        p._trace = traced  # the poller hands its _trace to pymodbus when it opens the port
        task = asyncio.create_task(p.run())
        try:
            deadline = loop.time() + 10
            while not all(m.stats.transactions for m in p.meters):
                if loop.time() > deadline or task.done():
                    raise SystemExit(f"not every meter answered: {p.stats()}")
                await asyncio.sleep(0.02)
            await asyncio.sleep(spec["warmup"])
            t0, c0, s0 = loop.time(), time.process_time(), p.stats()
            await asyncio.sleep(spec["seconds"])
            t1, c1, s1 = loop.time(), time.process_time(), p.stats()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        errors = {}
        for a, st in s1["meters"].items():
            for k in ("timeouts", "crc_errors", "garbled", "retries", "failed_polls"):
                errors[k] = errors.get(k, 0) + st[k] - s0["meters"][a][k]
        at = [t for t in polls["at"] if t0 <= t <= t1]  # each poll is one transaction here
        rate = (len(at) - 1) / (at[-1] - at[0]) if len(at) > 1 else 0.0
        return {"tx": len(at), "tx_s": rate, "elapsed_s": t1 - t0, "cpu_s": c1 - c0,
                "errors": errors, "bad_polls": polls["bad"], "polls_by_meter": polls["by_meter"],
                **phases([e for e in trace if t0 <= e[0] <= t1])}

    return asyncio.run(main())


# ---- the bus and the meters ------------------------------------------------------------------

class Bus:
    """A PtyLink pair: the master's end (`port`) and one `python -m sim meter` process serving
    meters 1..M on one line model (every meter hears every frame, as on a real pair)."""

    def __init__(self, baud: int, meters: int, turnaround_ms: int, meter_cmd=None) -> None:
        from sim.rs485 import PtyLink

        self.baud = baud
        self.meters = meters
        self.link = PtyLink(ends=2)
        self.proc = subprocess.Popen(
            (meter_cmd or [sys.executable, "-m", "sim"]) + ["meter", "--serial", self.link.paths[1], "--address",
             ",".join(str(a) for a in range(1, meters + 1)), "--baud", str(baud),
             "--turnaround-ms", str(turnaround_ms)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(meters):
                line = self.proc.stderr.readline()  # "" if it died
                if not line.startswith("meter "):
                    if self.proc.poll() is not None:
                        line += self.proc.stderr.read()
                    raise SystemExit(f"the emulated meters did not start:\n{line}")
        except BaseException:
            self.close()
            raise
        self.line_switched = False

    @property
    def port(self) -> str:
        return self.link.paths[0]

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def close(self) -> list[str]:
        """Stop the meters; their last stderr lines (their counters)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            err = self.proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        self.link.close()
        return [line for line in (err or "").splitlines() if " stopped: " in line]


def run_case(bus: Bus, regs: int, meters: int, args) -> dict:
    parity, stop = LINES[args.line]
    spec = {"port": bus.port, "baud": bus.baud, "parity": parity, "stopbits": stop,
            "addresses": list(range(1, meters + 1)), "regs": regs,
            "turnaround_ms": args.turnaround_ms, "timeout_s": args.timeout,
            "warmup": args.warmup, "seconds": args.seconds}
    if (parity, stop) != ("N", 1) and not bus.line_switched:  # every meter of the bus, once
        _run_poller(dict(spec, addresses=list(range(1, bus.meters + 1)), setup_only=True))
        bus.line_switched = True
    m0, l0 = bus.cpu_s(), time.process_time()
    out = _run_poller(spec)
    meter_cpu, link_cpu = bus.cpu_s() - m0, time.process_time() - l0
    bits = rtu.char_bits(parity, stop)
    limit = limit_tx_s(bus.baud, regs, args.turnaround_ms, bits)
    rate = out["tx_s"]
    tx = max(out["tx"], 1)
    tc_ms = 1e3 * bits / bus.baud
    t35_ms = rtu.t35_us(bus.baud, bits) / 1e3
    return {"baud": bus.baud, "regs": regs, "meters": meters, "line": args.line, "bits": bits,
            "turnaround_ms": args.turnaround_ms, "tx_s": rate, "limit_tx_s": limit,
            "ratio": rate / limit, "goal_met": rate / limit >= GOAL,
            "poller_cpu_ms_tx": 1e3 * out["cpu_s"] / tx,
            "meters_cpu_ms_tx": 1e3 * meter_cpu / tx, "link_cpu_ms_tx": 1e3 * link_cpu / tx,
            "cycle_ms": 1e3 / rate if rate else float("inf"), "limit_cycle_ms": 1e3 / limit,
            "ideal_reply_ms": (13 + 2 * regs) * tc_ms + t35_ms + args.turnaround_ms,
            "t35_ms": t35_ms, **out}


def _run_poller(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--serve-poller",
                           json.dumps(spec)], cwd=ROOT, capture_output=True, text=True,
                          timeout=spec["seconds"] + spec["warmup"] + 60)
    if proc.returncode != 0:
        raise SystemExit(f"the poller failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> list[dict]:
    rows = []
    for baud in args.baud:
        bus = Bus(baud, max(args.meters), args.turnaround_ms,
                  args.meter_cmd.split() if args.meter_cmd else None)
        try:
            for regs in args.regs:
                for meters in args.meters:
                    rows.append(run_case(bus, regs, meters, args))
                    if not args.json_only:
                        print_row(rows[-1], header=len(rows) == 1)
        finally:
            counters = bus.close()
        if args.verbose:
            for line in counters:
                print("   ", line)
    return rows


def print_row(r: dict, header: bool = False) -> None:
    if header:
        print("  baud regs meters    tx/s   limit  ratio goal  | ms: cycle  limit  reply (ideal)"
              "   gap (t3.5) min gap | CPU ms/tx: poller meters link | errors")
    errs = " ".join(f"{k}={v}" for k, v in r["errors"].items() if v) or "-"
    if r["bad_polls"]:
        errs += f" bad_polls={r['bad_polls']}"
    print(f"{r['baud']:6d} {r['regs']:4d} {r['meters']:6d} {r['tx_s']:7.2f} {r['limit_tx_s']:7.2f} "
          f"{100 * r['ratio']:5.1f}% {'met ' if r['goal_met'] else 'MISS'} |  "
          f"{r['cycle_ms']:7.2f} {r['limit_cycle_ms']:6.2f} {r['reply_ms']:6.2f} "
          f"({r['ideal_reply_ms']:6.2f}) {r['gap_ms']:5.2f} ({r['t35_ms']:4.2f}) {r['min_gap_ms']:5.2f}"
          f"   |           {r['poller_cpu_ms_tx']:6.3f} {r['meters_cpu_ms_tx']:6.3f} "
          f"{r['link_cpu_ms_tx']:5.3f} | {errs}", flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured time per case")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured time per case")
    ap.add_argument("--baud", type=_ints, default=[9600, 19200], help="comma-separated")
    ap.add_argument("--regs", type=_ints, default=[2, 40], help="registers per read")
    ap.add_argument("--meters", type=_ints, default=[1, 4], help="meter counts on the bus")
    ap.add_argument("--turnaround-ms", type=int, default=5, help="the meters' answer delay")
    ap.add_argument("--line", choices=sorted(LINES), default="8N2",
                    help="character format (8N2/8E1: 11 bits as the reference table)")
    ap.add_argument("--timeout", type=float, default=0.2, help="the poller's per-meter timeout")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--meter-cmd", metavar="CMD",
                    help="run the meters with CMD (e.g. a patched sim) instead of 'python -m sim'")
    ap.add_argument("--verbose", action="store_true", help="print the meters' counters")
    ap.add_argument("--serve-poller", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_poller:
        print(json.dumps(serve_poller(json.loads(args.serve_poller))))
        return
    rows = run(args)
    if args.json or args.json_only:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""Which Modbus reads poll one meter, and how their registers become named values (sans-I/O).

The merging itself is protocol.modbus.registers.read_plan (the register map's own rule: reads
start and end on register boundaries, stay inside one block, never split a float32 or u64).
This module adds the gateway's side: how many spare registers are worth reading to save a
transaction on a given line (`max_gap_for`), and a `MeterPlan` that keeps the reads and
decodes their answers.

Cost model (../shared/reference/modbus.md): a read of N registers occupies the bus for
(13 + 2N) character times + 2 x t3.5 + the slave's turnaround. Merging two reads separated by
g unwanted registers adds 2g characters and saves 13 characters + 2 x t3.5 + one turnaround
(master.transaction_time_us of 0 registers; t3.5 is fixed at 1750 us above 19200 baud), so it
pays while 2g x tc <= that.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.modbus import registers as regmap
from protocol.modbus.pdu import MAX_READ
from protocol.modbus.master import transaction_time_us

__all__ = ["Read", "MeterPlan", "PlanError", "max_gap_for", "wire_cost_us"]

EASTRON_MAX_REGS = 80  # Eastron's documents allow 40 floats per request


class PlanError(ValueError):
    """The wanted points cannot be planned (unknown name, limits out of range)."""


@dataclass(frozen=True, slots=True)
class Read:
    function: int  # 3 holding, 4 input
    address: int
    count: int


def max_gap_for(baud: int | None = None, turnaround_s: float = 0.0, bits: int = 11) -> int:
    """Unwanted registers worth reading to avoid one more transaction.

    Without a baud rate (Modbus TCP: the per-transaction cost is a network round trip, far
    above 2 bytes a register) the answer is MAX_READ: merge whenever the 125 limit allows.
    """
    if baud is None:
        return MAX_READ
    saved_us = transaction_time_us(baud, 0, int(turnaround_s * 1e6), bits)
    return max(0, int(saved_us * baud // (2 * bits * 1000000)))


def wire_cost_us(reads, baud: int, turnaround_s: float = 0.0) -> int:
    """Bus time of a plan (for comparing plans; the reference table's formula)."""
    return sum(transaction_time_us(baud, r.count, int(turnaround_s * 1e6)) for r in reads)


class MeterPlan:
    """The reads that cover `names` on one meter, and their decoding.

    `max_regs` caps one read (125 is the protocol's limit; pass 80 for a real Eastron meter).
    """

    def __init__(self, names, max_regs: int = MAX_READ, max_gap: int = 16) -> None:
        names = tuple(dict.fromkeys(names))
        if not names:
            raise PlanError("no registers wanted")
        if not 2 <= max_regs <= MAX_READ:
            raise PlanError(f"max_regs {max_regs} out of range 2..{MAX_READ}")
        if max_gap < 0:
            raise PlanError(f"max_gap {max_gap} is negative")
        try:
            self.entries = tuple(regmap.entry(n) for n in names)
            plan = regmap.read_plan(names, max_regs, max_gap)
        except regmap.RegisterError as exc:
            raise PlanError(str(exc)) from exc
        self.names = names
        self.reads = tuple(Read(f, a, c) for f, a, c in plan)

    def decode(self, answers) -> dict:
        """{name: value} of the wanted registers from `answers`, one register list per read
        (None for a read that failed: its registers are simply missing)."""
        got = {}
        for read, regs in zip(self.reads, answers):
            if regs is None:
                continue
            if len(regs) != read.count:
                raise PlanError(f"read at 0x{read.address:04X} wanted {read.count} registers, "
                                f"got {len(regs)}")
            got.update(regmap.decode_block(read.address, list(regs), read.function))
        return {n: got[n] for n in self.names if n in got}

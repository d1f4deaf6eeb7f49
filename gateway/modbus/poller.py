"""One scheduler per Modbus bus: polls its meters, queues writes behind polls, survives a
vanishing port, and hands each poll to the durable queue as one SenML item.

A bus (an RS-485 line behind a serial port, or a Modbus TCP endpoint) carries one transaction
at a time, so exactly one `BusPoller` owns it and runs every request of that bus in FIFO
order: a cycle's polls are queued meter by meter and a `write()` joins the same queue behind
them (so a relay command never races a poll on the wire).

Failure policy, per meter (`MeterStats` counts each kind):
- no answer within the timeout: `timeouts`; bytes that do not form a valid reply: `crc_errors`
  (RTU frame with a bad CRC) or `garbled`; both are retried `retries` times;
- a Modbus exception reply (illegal address, busy, ...): `exceptions[code]`, not retried (it is
  an answer), the other reads of the poll still go out;
- a meter that did not answer a whole poll is skipped for an exponential back-off
  (`backoff_min_s` doubling to `backoff_max_s`) and, while it is tried, its first silent read
  ends its poll: a dead meter costs (retries + 1) x its timeout per cycle it is tried, never
  more, and the other meters keep their turn.
pymodbus' own retries and its "close the port after N silent requests" rule are switched
off (retries=0, set_max_no_responses): both would let one dead meter stop the whole bus.

A port that vanishes (USB adapter unplugged) closes the client; the poller reopens it with
exponential back-off (`reopen_min_s` .. `reopen_max_s`) and goes on. Polls missed while the
bus is down are not charged to the meters (`bus.missed_polls` counts them).

RTU timing: the bus must have been quiet for t3.5 before a request goes out, so slaves that
frame by silence see separate frames; nothing else is waited for. "Quiet since" is when the
last byte was read from the port (pymodbus' trace_packet sees every chunk as it arrives) or
when our own last request left the wire, not when pymodbus handed back the reply (that is
later by its decoding, which then overlaps the silence), and the wait is a timerfd deadline
(gateway.modbus.deadline_sleep) because asyncio's own timers are whole milliseconds late. Together
they made the gap after a reply t3.5 + ~0.1 ms instead of t3.5 + 0.5-0.6 ms on the emulated
bus (bench/modbus_bus.py prints both and the rates against the wire limit).

Storing: items go to `sink(list_of_items)` (RecordQueue.put) from a separate task in a
thread, a batch per call, so the fsync never holds the bus. If the sink fails (QueueFull)
the items stay in memory, counted, and polling pauses once `max_pending` items wait: nothing
read is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from gateway.modbus.deadline_sleep import DeadlineSleep
from gateway.modbus.readings import meter_item, meter_urn
from gateway.modbus.plan import MeterPlan, max_gap_for
from protocol.modbus import rtu
from protocol.modbus.pdu import READ_INPUT

__all__ = ["BusConfig", "MeterConfig", "BusPoller", "MeterStats", "BusStats", "WriteError",
           "queue_sink"]

log = logging.getLogger("streetgrid.modbus")

_NO_DISCONNECT = 1 << 30


def queue_sink(queue):
    """The sink that stores polls in the gateway's durable RecordQueue (one put per batch)."""
    from gateway.backhaul.store import Record

    def put(items):
        queue.put([Record(bytes(i), "modbus") for i in items])

    return put


class WriteError(Exception):
    """A queued write failed: `code` is the Modbus exception code, or None for no answer."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MeterConfig:
    address: int  # 1..247
    points: tuple  # register names from protocol/modbus/registers.py
    urn: str | None = None  # SenML bn; default urn:dev:modbus:<bus>.<address>:
    timeout_s: float | None = None  # None: the bus's timeout
    max_regs: int = 125  # 80 for a real Eastron meter


@dataclass(frozen=True)
class BusConfig:
    name: str
    meters: tuple  # MeterConfig, ...
    kind: str = "rtu"  # "rtu" (serial) or "tcp"
    port: str = ""  # rtu: serial device path
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    host: str = "127.0.0.1"  # tcp
    tcp_port: int = 502
    timeout_s: float = 0.2
    retries: int = 1
    poll_interval_s: float = 1.0  # 0: poll back to back
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    reopen_min_s: float = 0.5
    reopen_max_s: float = 30.0
    turnaround_s: float = 0.005  # the meters' typical answer delay, for read merging
    max_pending: int = 10000  # polled items held while the sink refuses them
    sink_retry_s: float = 1.0  # wait before offering refused items again


@dataclass
class MeterStats:
    polls: int = 0  # polls that produced an item
    failed_polls: int = 0  # polls without any answer
    transactions: int = 0  # requests that got a valid reply (incl. exceptions)
    timeouts: int = 0
    crc_errors: int = 0
    garbled: int = 0
    retries: int = 0
    exceptions: dict = field(default_factory=dict)  # exception code -> count
    consecutive_failures: int = 0
    backoff_until: float = 0.0  # loop time

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["exceptions"] = dict(self.exceptions)
        del d["backoff_until"]
        return d


@dataclass
class BusStats:
    opens: int = 0
    open_failures: int = 0
    port_lost: int = 0
    missed_polls: int = 0
    cycles: int = 0
    stored_items: int = 0
    sink_errors: int = 0
    pending_items: int = 0


class _Meter:
    def __init__(self, bus: BusConfig, cfg: MeterConfig) -> None:
        if not 1 <= cfg.address <= rtu.MAX_ADDRESS:
            raise ValueError(f"bus {bus.name}: meter address {cfg.address} out of range 1..247")
        self.cfg = cfg
        gap = max_gap_for(bus.baudrate if bus.kind == "rtu" else None, bus.turnaround_s)
        self.plan = MeterPlan(cfg.points, cfg.max_regs, gap)
        self.bn = meter_urn(bus.name, cfg.address, cfg.urn)
        self.timeout = cfg.timeout_s if cfg.timeout_s is not None else bus.timeout_s
        self.stats = MeterStats()


class _NoAnswer(Exception):
    pass


class _BusDown(Exception):
    pass


class BusPoller:
    """Owns one bus. `await run()` until cancelled; `await write(...)`; `stats()`."""

    def __init__(self, cfg: BusConfig, sink, clock=time.time) -> None:
        if cfg.kind not in ("rtu", "tcp"):
            raise ValueError(f"bus {cfg.name}: kind must be 'rtu' or 'tcp', not {cfg.kind!r}")
        addrs = [m.address for m in cfg.meters]
        if len(set(addrs)) != len(addrs):
            raise ValueError(f"bus {cfg.name}: duplicate meter addresses {addrs}")
        self.cfg = cfg
        self.meters = [_Meter(cfg, m) for m in cfg.meters]
        self.bus = BusStats()
        self._sink = sink
        self._clock = clock
        self._client = None
        self._jobs: list = []  # FIFO of ("poll", meter) / ("write", args, future)
        self._wake = asyncio.Event()
        self._pending: list[bytes] = []
        self._storing = None  # (future, n): the first n pending items, in the sink's thread
        self._stored = asyncio.Event()
        self._has_pending = asyncio.Event()
        self._rx = b""
        self._rx_seen = False  # a byte arrived since the last request went out
        self._quiet_until = 0.0  # monotonic (loop) time before which nothing may be sent
        self._sleep = None  # DeadlineSleep, made by run() on its loop
        self._now = time.monotonic  # run() makes it the loop's clock
        bits = rtu.char_bits(cfg.parity, cfg.stopbits)
        self._t35 = rtu.t35_us(cfg.baudrate, bits) / 1e6 if cfg.kind == "rtu" else 0.0
        self._char_s = bits / cfg.baudrate if cfg.kind == "rtu" else 0.0
        self.on_poll = None  # test/bench hook: called with (address, values) after each poll

    # ------------------------------------------------------------------ public

    def stats(self) -> dict:
        self.bus.pending_items = len(self._pending)
        return {"bus": dict(self.bus.__dict__),
                "meters": {m.cfg.address: m.stats.as_dict() for m in self.meters}}

    async def write(self, address: int, register: int, values) -> None:
        """Write holding registers on one meter, queued behind the polls already waiting.

        Raises WriteError (exception code, or no answer after the retries)."""
        fut = asyncio.get_running_loop().create_future()
        self._jobs.append(("write", (address, register, list(values)), fut))
        self._wake.set()
        await fut

    async def run(self) -> None:
        store = asyncio.create_task(self._store_loop(), name=f"modbus-store-{self.cfg.name}")
        self._sleep = DeadlineSleep()
        self._now = asyncio.get_running_loop().time
        try:
            await self._bus_loop()
        finally:
            store.cancel()
            self._close()
            self._sleep.close()
            if self._storing is not None:
                # a batch the sink's thread was storing when we stopped: the thread goes on, so
                # its outcome decides, or the last attempt below would store the batch again
                fut, n = self._storing
                self._storing = None
                try:
                    await fut
                except Exception:  # noqa: BLE001 - not stored: it stays pending, tried below
                    pass
                else:
                    del self._pending[:n]
                    self.bus.stored_items += n
            if self._pending:  # a last attempt, so a clean shutdown keeps what was read
                try:
                    self._sink(list(self._pending))
                    self.bus.stored_items += len(self._pending)
                    self._pending.clear()
                except Exception:  # noqa: BLE001 - counted, reported by the caller's stats
                    self.bus.sink_errors += 1

    # ------------------------------------------------------------------ bus loop

    async def _bus_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_cycle = loop.time()
        delay = self.cfg.reopen_min_s
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # Python 3.11's wait_for (inside pymodbus) can swallow a cancellation that
                # lands as the reply arrives; do not poll on after being told to stop
                raise asyncio.CancelledError()
            if self._client is not None and not self._client.connected:
                self.bus.port_lost += 1  # closed under us (read error: the port vanished)
                log.warning("modbus bus %s: port lost, reopening", self.cfg.name)
                self._close()
            if self._client is None:
                if not await self._open():
                    self.bus.missed_polls += sum(1 for j in self._jobs if j[0] == "poll")
                    self._fail_writes("bus is down")
                    self._jobs = [j for j in self._jobs if j[0] != "poll"]
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.cfg.reopen_max_s)
                    continue
                delay = self.cfg.reopen_min_s
            if not self._jobs:
                now = loop.time()
                if now < next_cycle:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), next_cycle - now)
                    except asyncio.TimeoutError:
                        pass
                    continue
                if len(self._pending) >= self.cfg.max_pending:
                    await asyncio.sleep(self.cfg.poll_interval_s or 0.1)  # back-pressure
                    continue
                next_cycle = max(next_cycle + self.cfg.poll_interval_s, now) \
                    if self.cfg.poll_interval_s else now
                self.bus.cycles += 1
                for m in self.meters:
                    if m.stats.backoff_until <= now:
                        self._jobs.append(("poll", m))
                if not self._jobs:
                    # every meter backed off (or none configured): wait for the first to come
                    # back or for a write; with poll_interval_s 0 this loop must not spin
                    next_cycle = max(next_cycle, min(
                        (m.stats.backoff_until for m in self.meters), default=now + 1.0))
                continue
            job = self._jobs.pop(0)
            try:
                if job[0] == "poll":
                    await self._poll(job[1])
                else:
                    await self._write(*job[1:])
            except _BusDown:
                self.bus.port_lost += 1
                log.warning("modbus bus %s: port lost, reopening", self.cfg.name)
                if job[0] == "poll":
                    self.bus.missed_polls += 1
                elif not job[2].done():
                    job[2].set_exception(WriteError("bus went down during the write"))
                self._close()

    def _fail_writes(self, why: str) -> None:
        for j in self._jobs:
            if j[0] == "write" and not j[2].done():
                j[2].set_exception(WriteError(why))

    async def _open(self) -> bool:
        self._close()
        c = self.cfg
        common = dict(timeout=c.timeout_s, retries=0, reconnect_delay=0,
                      trace_packet=self._trace, name=f"modbus-{c.name}")
        if c.kind == "rtu":
            client = AsyncModbusSerialClient(c.port, framer=FramerType.RTU, baudrate=c.baudrate,
                                             bytesize=8, parity=c.parity, stopbits=c.stopbits,
                                             **common)
        else:
            client = AsyncModbusTcpClient(c.host, port=c.tcp_port, **common)
        client.set_max_no_responses(_NO_DISCONNECT)
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            log.debug("modbus bus %s: open failed: %s", c.name, exc)
            ok = False
        if not ok or not client.connected:
            client.close()
            self.bus.open_failures += 1
            return False
        self._client = client
        self.bus.opens += 1
        log.info("modbus bus %s: open", c.name)
        return True

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus calls this as a request goes out and as each received chunk arrives (with
        # everything received so far): the instants the bus was last busy
        now = self._now()
        if sending:
            self._rx = b""
            self._rx_seen = False
            self._quiet_until = now + len(data) * self._char_s + self._t35
        else:
            self._rx = bytes(data)
            self._rx_seen = True
            self._quiet_until = max(self._quiet_until, now + self._t35)
        return data

    # ------------------------------------------------------------------ transactions

    async def _transact(self, meter: _Meter, call, *args, **kw):
        """One request with the meter's timeout and retries: the reply PDU (may be an
        exception reply); _NoAnswer after the last retry; _BusDown if the port went away."""
        st = meter.stats
        loop = asyncio.get_running_loop()
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                st.retries += 1
            while self._quiet_until > loop.time():  # a byte read meanwhile moves it on
                await self._sleep.until(self._quiet_until)
            client = self._client
            if client is None or not client.connected:
                raise _BusDown()
            params = client.ctx.comm_params
            if params.timeout_connect != meter.timeout:
                params.timeout_connect = meter.timeout  # pymodbus' per-request timeout
            try:
                resp = await call(client, *args, device_id=meter.cfg.address, **kw)
            except ConnectionException as exc:
                raise _BusDown() from exc
            except ModbusException:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # pymodbus turns our cancellation into ModbusIOException: give it back
                    raise asyncio.CancelledError()
                if not client.connected:
                    raise _BusDown()
                self._count_silence(st)
                continue
            if not self._rx_seen:  # a reply pymodbus did not trace: its return is the last byte
                self._quiet_until = max(self._quiet_until, loop.time() + self._t35)
            st.transactions += 1
            return resp
        raise _NoAnswer()

    def _count_silence(self, st: MeterStats) -> None:
        rx = self._rx
        if not rx:
            st.timeouts += 1
            return
        if self.cfg.kind == "rtu":
            try:
                rtu.decode_frame(rx)
            except rtu.CrcError:
                st.crc_errors += 1
                return
            except rtu.FrameError:
                pass
        st.garbled += 1

    async def _poll(self, meter: _Meter) -> None:
        st = meter.stats
        t = self._clock()
        answers = []
        answered = False
        try:
            for read in meter.plan.reads:
                call = (_read_input if read.function == READ_INPUT else _read_holding)
                resp = await self._transact(meter, call, read.address, count=read.count)
                answered = True
                if resp.isError():
                    code = int(getattr(resp, "exception_code", 0))
                    st.exceptions[code] = st.exceptions.get(code, 0) + 1
                    answers.append(None)
                elif len(resp.registers) != read.count:
                    st.garbled += 1
                    answers.append(None)
                else:
                    answers.append(resp.registers)
        except _NoAnswer:
            pass
        answers += [None] * (len(meter.plan.reads) - len(answers))
        if not answered:
            st.failed_polls += 1
            st.consecutive_failures += 1
            backoff = min(self.cfg.backoff_max_s,
                          self.cfg.backoff_min_s * 2 ** (st.consecutive_failures - 1))
            st.backoff_until = asyncio.get_running_loop().time() + backoff
            return
        st.consecutive_failures = 0
        values = meter.plan.decode(answers)
        if self.on_poll is not None:
            self.on_poll(meter.cfg.address, values)
        item = meter_item(meter.bn, self.cfg.name, meter.cfg.address, t, values)
        if item is not None:
            st.polls += 1
            self._pending.append(item)
            self._has_pending.set()

    async def _write(self, args, fut) -> None:
        address, register, values = args
        meter = next((m for m in self.meters if m.cfg.address == address), None)
        if meter is None:
            meter = _Meter(self.cfg, MeterConfig(address, ("modbus_address",)))
        try:
            if len(values) == 1:
                resp = await self._transact(meter, _write_one, register, values[0])
            else:
                resp = await self._transact(meter, _write_many, register, values)
        except _NoAnswer:
            if not fut.done():
                fut.set_exception(WriteError(f"meter {address}: no answer to the write"))
            return
        if resp.isError():
            code = int(getattr(resp, "exception_code", 0))
            meter.stats.exceptions[code] = meter.stats.exceptions.get(code, 0) + 1
            if not fut.done():
                fut.set_exception(WriteError(f"meter {address}: exception {code}", code))
        elif not fut.done():
            fut.set_result(None)

    # ------------------------------------------------------------------ storing

    async def _store_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_pending.wait()
            self._has_pending.clear()
            batch = list(self._pending)
            if not batch:
                continue
            fut = loop.run_in_executor(None, self._sink, batch)
            self._storing = (fut, len(batch))
            try:
                # shielded: a cancel stops this loop, not the thread; run() then waits for it
                await asyncio.shield(fut)
            except Exception as exc:  # noqa: BLE001 - QueueFull and the like: keep, retry
                self._storing = None
                self.bus.sink_errors += 1
                log.warning("modbus bus %s: storing %d items failed: %s", self.cfg.name,
                            len(batch), exc)
                await asyncio.sleep(self.cfg.sink_retry_s)
                self._has_pending.set()
                continue
            self._storing = None
            del self._pending[: len(batch)]
            self.bus.stored_items += len(batch)


async def _read_input(client, address, *, count, device_id):
    return await client.read_input_registers(address, count=count, device_id=device_id)


async def _read_holding(client, address, *, count, device_id):
    return await client.read_holding_registers(address, count=count, device_id=device_id)


async def _write_one(client, address, value, *, device_id):
    return await client.write_register(address, value, device_id=device_id)


async def _write_many(client, address, values, *, device_id):
    return await client.write_registers(address, values, device_id=device_id)


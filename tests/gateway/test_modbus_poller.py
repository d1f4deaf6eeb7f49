"""gateway.modbus.poller against real pymodbus servers: Modbus TCP on 127.0.0.1 and RTU on
pseudo-terminals (pyserial on the gateway side, a pymodbus serial server on the meters' side).

No test asserts how fast anything is: dead meters and FIFO order are judged by what happened
on the bus, in order, and by counters."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.constants import ExcCodes

from gateway.backhaul.batch import decode_batch, encode_batch
from gateway.modbus.poller import BusConfig, BusPoller, MeterConfig, WriteError, queue_sink
from gateway.backhaul.store import RecordQueue
from protocol import cbor
from protocol.modbus import registers as regmap
from tests.gateway.modbus_servers import MapDevice, SerialLine, tcp_server

POINTS = ("voltage_l1", "current_l1", "power", "power_factor", "frequency",
          "energy_import_wh", "energy_export_wh")
CLOCK = 1795845600.0


def meter_values(i):
    return {"voltage_l1": 230.0 + i, "current_l1": 1.5 * i, "power": 345.0 * i,
            "power_factor": -0.5, "frequency": 50.0, "energy_import_wh": (1 << 40) + i,
            "energy_export_wh": i, "serial": 1000 + i}


class Log(MapDevice):
    """A MapDevice that also appends (address, what) to a bus-wide log, in wire order."""

    def __init__(self, address, log, values):
        super().__init__(values)
        self.address = address
        self.log = log

    def getValues(self, func_code, address, count=1):
        if func_code in (3, 4):
            self.log.append((self.address, "read"))
        return super().getValues(func_code, address, count)

    def setValues(self, func_code, address, values):
        self.log.append((self.address, ("write", address, tuple(values))))
        return super().setValues(func_code, address, values)


class NoExactEnergy(MapDevice):
    """A meter like a real SDM630: no u64 Wh block, so 0x1000 answers exception 02."""

    def getValues(self, func_code, address, count=1):
        if address >= 0x1000 and func_code == 4:
            self.reads += 1
            return ExcCodes.ILLEGAL_ADDRESS
        return super().getValues(func_code, address, count)


async def run_until(poller, done, limit_s=10.0):
    task = asyncio.create_task(poller.run())
    try:
        for _ in range(int(limit_s / 0.01)):
            if done():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"condition not reached: {poller.stats()}")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # a TimeoutError: it ignored the cancel
            await asyncio.wait_for(task, 5)


def fast(**kw):
    base = dict(timeout_s=0.1, retries=1, poll_interval_s=0.0, backoff_min_s=0.05,
                backoff_max_s=0.2, reopen_min_s=0.05, reopen_max_s=0.2)
    base.update(kw)
    return base


def records_of(items):
    """{bn: {(n, u): v}} of the last poll of each meter, via a real batch."""
    out = {}
    for rec in decode_batch(encode_batch("gw-1", 1, 1, items))["records"]:
        if -2 in rec:
            cur = out[rec[-2]] = {}
            assert rec[-3] == CLOCK
        cur[(rec[0], rec[1])] = rec[2]
    return out


# ------------------------------------------------------------------ Modbus TCP


def test_tcp_polls_reach_the_durable_queue_with_the_served_values(tmp_path):
    async def main():
        server, port = await tcp_server({1: MapDevice(meter_values(1)),
                                         2: MapDevice(meter_values(2))})
        q = RecordQueue(str(tmp_path / "queue.db"))
        cfg = BusConfig("tcp-a", (MeterConfig(1, POINTS), MeterConfig(2, POINTS, urn="urn:dev:os:m2")),
                        kind="tcp", tcp_port=port, **fast())
        p = BusPoller(cfg, queue_sink(q), clock=lambda: CLOCK)
        try:
            await run_until(p, lambda: p.bus.stored_items >= 6)
        finally:
            await server.shutdown()
        items = [payload for _id, payload in q.peek(1000)]
        q.close()
        return p, items

    p, items = asyncio.run(asyncio.wait_for(main(), 20))
    got = records_of(items)
    for address, bn in ((1, "urn:dev:modbus:tcp-a.1:"), (2, "urn:dev:os:m2:")):
        v = meter_values(address)
        assert got[bn] == {
            ("voltage/l1", "V"): v["voltage_l1"], ("current/l1", "A"): v["current_l1"],
            ("power", "W"): v["power"], ("power_factor", "/"): -0.5, ("frequency", "Hz"): 50.0,
            ("energy/import", "Wh"): v["energy_import_wh"], ("energy/export", "Wh"): address}
        st = p.stats()["meters"][address]
        assert st["timeouts"] == st["crc_errors"] == st["failed_polls"] == 0
        assert st["transactions"] == 2 * st["polls"] or st["transactions"] == 2 * st["polls"] + 1
    assert p.stats()["bus"]["sink_errors"] == 0


def test_exception_replies_are_counted_and_the_rest_of_the_poll_kept():
    async def main():
        server, port = await tcp_server({5: NoExactEnergy(meter_values(5))})
        seen = []
        cfg = BusConfig("tcp-b", (MeterConfig(5, POINTS),), kind="tcp", tcp_port=port, **fast())
        p = BusPoller(cfg, lambda items: None)
        p.on_poll = lambda a, values: seen.append(values)
        try:
            await run_until(p, lambda: len(seen) >= 3)
        finally:
            await server.shutdown()
        return p, seen

    p, seen = asyncio.run(asyncio.wait_for(main(), 20))
    st = p.stats()["meters"][5]
    assert st["exceptions"] == {2: st["polls"]} and st["polls"] >= 3
    assert st["failed_polls"] == 0 and st["retries"] == 0  # an exception is an answer
    assert seen[0] == {k: meter_values(5)[k] for k in POINTS if not k.endswith("_wh")}


def test_writes_queue_behind_polls_in_fifo_order_and_bad_writes_fail():
    async def main():
        log = []
        devs = {a: Log(a, log, meter_values(a)) for a in (1, 2, 3)}
        server, port = await tcp_server(devs)
        cfg = BusConfig("tcp-c", tuple(MeterConfig(a, ("voltage_l1",)) for a in (1, 2, 3)),
                        kind="tcp", tcp_port=port, **fast(poll_interval_s=0.05))
        p = BusPoller(cfg, lambda items: None)
        results = []

        async def relay_off():
            mark = len(log)
            await p.write(2, regmap.RELAY_ARM_ADDRESS, [regmap.RELAY_ARM_MAGIC])
            await p.write(2, regmap.RELAY_ADDRESS, [regmap.RELAY_OPEN])
            try:
                await p.write(2, regmap.RELAY_ADDRESS, [7])
            except WriteError as exc:
                results.append(exc.code)
            results.append(mark)

        def on_poll(address, values):
            if address == 1 and not results and not hasattr(p, "_t"):
                p._t = asyncio.get_running_loop().create_task(relay_off())

        p.on_poll = on_poll
        try:
            await run_until(p, lambda: len(results) == 2)
        finally:
            await server.shutdown()
        return log, results, devs

    log, (code, mark), devs = asyncio.run(asyncio.wait_for(main(), 20))
    assert code == regmap.ILLEGAL_VALUE
    # issued while meter 1's poll finished: meters 2 and 3 of that cycle were queued first
    assert log[mark:mark + 3] == [(2, "read"), (3, "read"),
                                  (2, ("write", regmap.RELAY_ARM_ADDRESS, (regmap.RELAY_ARM_MAGIC,)))]
    assert devs[2].values["relay"] == regmap.RELAY_OPEN
    assert devs[2].writes == [(regmap.RELAY_ARM_ADDRESS, [regmap.RELAY_ARM_MAGIC]),
                              (regmap.RELAY_ADDRESS, [regmap.RELAY_OPEN])]


# ------------------------------------------------------------------ RTU on pseudo-terminals


def rtu_bus(line, addresses, **kw):
    return BusConfig("rs485-1", tuple(MeterConfig(a, POINTS) for a in addresses), kind="rtu",
                     port=line.port, baudrate=19200, **fast(**kw))


def test_rtu_dead_meter_costs_only_its_timeout_and_others_keep_their_turn(tmp_path):
    async def main():
        log = []
        line = SerialLine(str(tmp_path))
        await line.serve({a: Log(a, log, meter_values(a)) for a in (1, 2)}, baudrate=19200)
        # meter 9 is on the bus config but nobody answers it; back-off kept short so it is
        # tried often. The timeout has margin (a reply takes ~15 ms at 19200 baud) so a live
        # meter is never late on a loaded CI machine: the test is about turns, not speed.
        p = BusPoller(rtu_bus(line, (1, 9, 2), timeout_s=0.3, backoff_min_s=0.01,
                              backoff_max_s=0.01),
                      lambda items: None)
        polled = []
        p.on_poll = lambda a, values: polled.append(a)
        try:
            await run_until(p, lambda: p.meters[1].stats.failed_polls >= 4 and len(polled) >= 20)
        finally:
            await line.close()
        return p, polled, log

    p, polled, log = asyncio.run(asyncio.wait_for(main(), 40))
    dead = p.stats()["meters"][9]
    assert dead["polls"] == 0 and dead["failed_polls"] >= 4
    # each try of the dead meter: one silent read (its first) with its retry, then given up
    assert dead["timeouts"] == 2 * dead["failed_polls"]
    assert dead["retries"] == dead["failed_polls"]
    # the healthy meters were polled in every cycle, each poll whole
    assert polled[:20] == [1, 2] * 10
    for a in (1, 2):
        st = p.stats()["meters"][a]
        assert st["timeouts"] == st["failed_polls"] == 0
        assert abs(st["polls"] - p.bus.cycles) <= 1
    n = len(p.meters[0].plan.reads)
    assert 0 <= log.count((1, "read")) - n * p.meters[0].stats.polls < n  # + a poll cut short


def test_rtu_crc_errors_are_counted_and_retried(tmp_path):
    async def main():
        line = SerialLine(str(tmp_path))
        await line.serve({1: MapDevice(meter_values(1))}, baudrate=19200)
        seen = []
        p = BusPoller(rtu_bus(line, (1,), retries=3), lambda items: None)
        p.on_poll = lambda a, values: seen.append(values)
        line.corrupt(3)  # three replies in a row: all within one read's retries
        try:
            await run_until(p, lambda: len(seen) >= 5)
        finally:
            await line.close()
        return p, seen

    p, seen = asyncio.run(asyncio.wait_for(main(), 20))
    st = p.stats()["meters"][1]
    # each corrupted reply is one failed attempt, retried; most show as a bad CRC (a flipped
    # byte count leaves a short frame: pymodbus waits for the rest, a timeout with bytes)
    assert st["crc_errors"] >= 1 and st["crc_errors"] + st["garbled"] + st["timeouts"] == 3
    assert st["retries"] == 3 and st["failed_polls"] == 0
    assert all(v == {k: meter_values(1)[k] for k in POINTS} for v in seen)  # nothing corrupt kept


def test_rtu_port_that_vanishes_and_comes_back_is_reopened(tmp_path):
    async def main():
        line = SerialLine(str(tmp_path))
        await line.serve({1: MapDevice(meter_values(1)), 2: MapDevice(meter_values(2))},
                         baudrate=19200)
        p = BusPoller(rtu_bus(line, (1, 2), poll_interval_s=0.02), lambda items: None)
        polled = []
        p.on_poll = lambda a, values: polled.append(a)
        task = asyncio.create_task(p.run())
        try:
            while len(polled) < 6:
                await asyncio.sleep(0.01)
            line.unplug()
            while p.bus.open_failures < 2:  # it keeps trying while the adapter is gone
                await asyncio.sleep(0.01)
            before = len(polled)
            line.plug()
            while len(polled) < before + 6:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            await line.close()
        return p, before

    p, before = asyncio.run(asyncio.wait_for(main(), 20))
    bus = p.stats()["bus"]
    assert bus["port_lost"] == 1 and bus["opens"] == 2 and bus["open_failures"] >= 2
    for a in (1, 2):  # at most the one request in flight when the port vanished is charged
        assert p.stats()["meters"][a]["failed_polls"] <= 1


def test_items_a_full_queue_refuses_are_kept_and_polling_pauses_at_max_pending():
    from gateway.backhaul.store import QueueFull

    async def main():
        server, port = await tcp_server({1: MapDevice(meter_values(1))})
        stored, state = [], {"full": True}

        def sink(items):
            if state["full"]:
                raise QueueFull("full", reason="max_bytes")
            stored.extend(items)

        cfg = BusConfig("tcp-d", (MeterConfig(1, ("voltage_l1",)),), kind="tcp", tcp_port=port,
                        **fast(max_pending=5, sink_retry_s=0.02))
        p = BusPoller(cfg, sink)
        task = asyncio.create_task(p.run())
        try:
            while p.bus.sink_errors < 5:
                await asyncio.sleep(0.01)
            held = p.meters[0].stats.polls
            state["full"] = False
            while len(stored) < held + 3:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            await server.shutdown()
        return p, held, stored

    p, held, stored = asyncio.run(asyncio.wait_for(main(), 20))
    assert held == 5  # polling paused at max_pending while nothing could be stored
    assert p.bus.sink_errors >= 5
    assert len(stored) == p.meters[0].stats.polls  # every poll stored once, none lost


def test_a_bus_whose_meters_are_all_backed_off_waits_instead_of_spinning():
    """poll_interval_s 0 with every meter in back-off (or no meter at all): the bus loop used to
    spin without awaiting, so nothing else on the event loop ran again (a write never
    completed). A SIGALRM turns such a hang into a failure instead of a stuck suite."""
    import signal

    def hung(signum, frame):
        raise AssertionError("the event loop was blocked: the bus loop spins")

    async def main():
        server, port = await tcp_server({1: MapDevice(meter_values(1))})
        # meter 9 never answers: after its first poll it is backed off for 0.5 s
        cfg = BusConfig("tcp-e", (MeterConfig(9, ("voltage_l1",)),), kind="tcp", tcp_port=port,
                        **fast(backoff_min_s=0.5, backoff_max_s=0.5, timeout_s=0.05, retries=0))
        idle = BusPoller(BusConfig("tcp-f", (), kind="tcp", tcp_port=port, **fast()),
                         lambda items: None)
        p = BusPoller(cfg, lambda items: None)
        tasks = [asyncio.create_task(p.run()), asyncio.create_task(idle.run())]
        try:
            while p.meters[0].stats.failed_polls < 1:
                await asyncio.sleep(0.01)
            ticks = 0
            for _ in range(10):  # 0.1 s inside the back-off: the loop must keep running us
                await asyncio.sleep(0.01)
                ticks += 1
            await idle.write(1, regmap.RELAY_ARM_ADDRESS, [regmap.RELAY_ARM_MAGIC])
            await idle.write(1, regmap.RELAY_ARM_ADDRESS, [regmap.RELAY_ARM_MAGIC])
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.shutdown()
        return p, idle, ticks

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 10, 1)  # again each second: both pollers may spin
    try:
        p, idle, ticks = asyncio.run(main())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert ticks == 10
    assert p.meters[0].stats.timeouts == p.meters[0].stats.failed_polls >= 1
    assert p.bus.cycles <= 3  # one poll per back-off period, not a busy loop of empty cycles
    assert idle.bus.cycles <= 3


def test_a_batch_being_stored_when_the_poller_stops_is_stored_once():
    """The sink runs in a thread: stopping the poller in the middle of a store must wait for
    that store, not store its batch a second time in the last attempt at shutdown."""
    import threading

    async def main():
        server, port = await tcp_server({1: MapDevice(meter_values(1))})
        stored = []
        entered, release = threading.Event(), threading.Event()

        def sink(items):
            entered.set()
            release.wait(5)  # the first store is slow: the poller is stopped meanwhile
            stored.extend(items)

        cfg = BusConfig("tcp-d", (MeterConfig(1, ("voltage_l1",)),), kind="tcp", tcp_port=port,
                        **fast())
        p = BusPoller(cfg, sink)
        task = asyncio.create_task(p.run())
        try:
            while not entered.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.sleep(0.05)  # the poller is stopping; the sink's thread still stores
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        finally:
            release.set()
            await server.shutdown()
        return p, stored

    p, stored = asyncio.run(asyncio.wait_for(main(), 20))
    polls = p.meters[0].stats.polls
    assert polls >= 1
    assert len(stored) == polls and len(set(stored)) == polls  # each poll stored once
    assert p.bus.stored_items == polls and p.stats()["bus"]["pending_items"] == 0
